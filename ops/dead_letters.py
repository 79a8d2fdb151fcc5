"""Dead letters: the messages in ``<queue>.XQ``, and replaying or purging them.

The message stays in RabbitMQ (``<queue>.XQ``); why it died is in PostgreSQL
(``dead_letters``, written by the workers). Replaying a message writes it to
the outbox, with fresh attempts, for a relay to publish back to its work
queue; units are idempotent, so replaying one that did get done is harmless. ``replay`` and ``purge`` are
the one place this is done: ``python -m ops dlq``, the API and the console
all call them.

AMQP has no way to read a queue without taking its messages: a walk takes
each message unacked and puts back (by closing its connection) those it did
not act on. Two walks at once would each see only part of the queue and
report the rest missing, so every walk holds a PostgreSQL advisory lock of
its queue: the API's workers, the console and the CLI take turns.
"""

import contextlib
import json
import time
from dataclasses import dataclass, field

import pika

import settings
from actors import BrokerUnavailable, relay
from actors.connection import connect
from actors.messages import split_job_of, unit_of_kwargs
from db import DeadLetter, DeliveryAttempt, Job, JobUnit, Outbox, User, database
from followers import NotFound

#: pg_advisory_lock(LOCK_CLASS, hashtext(queue)); class 1 is the users' ordering lock.
LOCK_CLASS = 2
#: How long a walk waits for another one to finish before it gives up.
LOCK_WAIT_S = 10


class DeadLetterQueueBusy(Exception):
    """Another walk of the same dead-letter queue held it too long."""


def _decode(body):
    try:
        message = json.loads(body)
        return message if isinstance(message, dict) else None
    except (UnicodeDecodeError, ValueError):
        return None


def _death_reason(properties):
    deaths = (properties.headers or {}).get("x-death") or []
    reason = deaths[0].get("reason") if deaths else None
    return reason.decode() if isinstance(reason, bytes) else reason


class DeadLetterQueue:
    """One walk of the dead-letter queue: every message is fetched unacked,
    and each is either acted on (acked) or put back when the walk ends."""

    def __init__(self, queue_name=None):
        self.queue_name = queue_name or settings.QUEUE_NAME
        self.dead_name = f"{self.queue_name}.XQ"
        self.connection = connect(settings.RABBITMQ_URL)  # whichever node of a cluster answers
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def close(self):
        if self.connection.is_open:
            self.connection.close()  # whatever was not acked goes back, in order

    def messages(self):
        try:
            self.channel.queue_declare(queue=self.dead_name, passive=True)
        except pika.exceptions.ChannelClosedByBroker:  # no such queue: nothing dead-lettered yet
            self.channel = self.connection.channel()
            self.channel.confirm_delivery()
            return
        while True:
            method, properties, body = self.channel.basic_get(self.dead_name, auto_ack=False)
            if method is None:
                return
            yield Letter(self, method.delivery_tag, properties, body)


class Letter:
    """One dead letter taken from the queue during a walk."""

    def __init__(self, queue, tag, properties, body):
        self.queue = queue
        self.tag = tag
        self.properties = properties
        self.body = body
        self.message = _decode(body)
        self.message_id = (self.message or {}).get("message_id") or f"(undecodable, {len(body)} bytes)"

    def record(self):
        if self.message is None:
            return None
        with database.connection_context():
            return DeadLetter.get_or_none(DeadLetter.message_id == self.message_id)

    def reason(self):
        """(why it died, attempts or None)."""
        record = self.record()
        if record is not None:
            return record.reason, record.attempts
        if self.message is None:
            return "not a Dramatiq message (bad JSON or encoding); see the worker log", None
        return f"rejected by the broker or a worker ({_death_reason(self.properties) or 'no reason kept'})", None

    def summary(self):
        reason, attempts = self.reason()
        if self.message is None:
            what = repr(self.body[:60])
        else:
            what = f"{self.message.get('actor_name')}({json.dumps(self.message.get('kwargs'))[:80]})"
        return f"{self.message_id}  attempts={attempts or '?'}  {what}\n    reason: {reason}"

    def replay(self):
        """Send the message again, through the outbox: its outbox row, its
        fresh attempts and the forgetting of why it died commit together,
        and only then is it taken off the dead-letter queue. A crash after
        the commit leaves it here too: replayed twice, which a unit of work
        absorbs (it is applied once)."""
        if self.message is None:
            raise ValueError(f"{self.message_id} is not a Dramatiq message and cannot be replayed; purge it")
        kwargs, args = self.message.get("kwargs"), self.message.get("args")
        actor_name, message_id = self.message.get("actor_name"), self.message.get("message_id")
        if args or not isinstance(kwargs, dict) or not isinstance(actor_name, str) or not isinstance(message_id, str):
            raise ValueError(f"{self.message_id} does not name an actor and its keyword arguments, "
                             "as every message of this service does; purge it")
        with database.connection_context(), database.atomic():
            # Fresh attempts: the delivery limit counts from zero again.
            DeliveryAttempt.delete().where(DeliveryAttempt.message_id == message_id).execute()
            DeadLetter.delete().where(DeadLetter.message_id == message_id).execute()
            # Its job changed now: python -m ops jobs prune leaves it alone
            # until the unit has long had its chance to run.
            JobUnit.touch(*unit_of_kwargs(kwargs))
            # A split job's split_job: the job is queued again, not failed.
            if (split_job := split_job_of(actor_name, kwargs)) is not None:
                Job.split_replayed(split_job)
            # Back to the work queue, to run now (a retry that died waiting in
            # the delay queue too: its backoff is over).
            Outbox.add(self.queue.queue_name, actor_name, kwargs, message_id=message_id)
        self.queue.channel.basic_ack(self.tag)
        relay.wake()

    def purge(self):
        """Forget the message (``forget``), then drop it: a crash between the
        two leaves it here, and purging it again finishes the purge."""
        if self.message is not None:
            forget(self.message_id, self.queue.queue_name, unit=unit_of_kwargs(self.message.get("kwargs")))
        self.queue.channel.basic_ack(self.tag)


#: What a purged unit's job shows when no worker could say why it died.
UNRECORDED = "dead-lettered with no reason recorded (PostgreSQL did not answer then?); purged"


def forget(message_id, queue_name, *, unit=(None, None)):
    """Forget a purged dead letter's record. A unit of an ordered job that
    held its chain will never run to send what follows it: the same
    transaction sends that (``JobUnit.pass_turn_of_purged``), so that
    neither the rest of the job nor the user's next jobs wait for good.

    ``unit`` is the (job, unit) the message itself names, used when there
    is no record: a worker that could not reach PostgreSQL when the
    message died recorded neither it nor the unit's failure. The unit is
    then marked failed here (a reason it has already is kept), so that its
    job shows it and the chain it holds can be passed on.

    ``Letter.purge`` drops the message only after this commits. A crash in
    between leaves the message without its record, and purging it again
    sends the successor again: that successor finds itself done, or runs
    once (an ordered unit is applied once, under its user's lock).
    Returns whether it sent a message."""
    sent = False
    with database.connection_context(), database.atomic():
        record = DeadLetter.forget(message_id)
        job_id, unit_number = (record.job_id, record.unit) if record is not None else unit
        job = None if job_id is None else Job.get_or_none(Job.id == job_id)
        if job is not None and record is None:
            JobUnit.mark_failed(job.id, unit_number, UNRECORDED, replace_error=False)
        if job is not None and job.ordered:
            User.lock_for_ordering(job.user_id)
            sent = JobUnit.pass_turn_of_purged(job.id, unit_number, job.user_id, queue=queue_name)
    if sent:
        relay.wake()
    return sent


@contextlib.contextmanager
def walk(queue_name=None):
    """A DeadLetterQueue walk, alone on its queue (see the module's doc).
    Raises DeadLetterQueueBusy if another walk holds it for LOCK_WAIT_S."""
    queue_name = queue_name or settings.QUEUE_NAME
    with database.connection_context():
        deadline = time.monotonic() + LOCK_WAIT_S
        while not database.execute_sql(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LOCK_CLASS, queue_name)
        ).fetchone()[0]:
            if time.monotonic() > deadline:
                raise DeadLetterQueueBusy(
                    f"another walk of {queue_name}.XQ has held it for {LOCK_WAIT_S} s; try again"
                )
            time.sleep(0.05)
        try:
            queue = DeadLetterQueue(queue_name)
            try:
                yield queue
            finally:
                queue.close()
        finally:
            database.execute_sql("SELECT pg_advisory_unlock(%s, hashtext(%s))", (LOCK_CLASS, queue_name))


@dataclass
class Outcome:
    """What a replay or a purge did: the message ids it acted on, and those
    it could not act on with why."""

    done: list = field(default_factory=list)
    failed: list = field(default_factory=list)  # (message id, why)
    queue: str = ""


def _act(action, message_ids, queue_name):
    wanted = None if message_ids is None else set(message_ids)
    outcome = Outcome()
    with walk(queue_name) as queue:
        outcome.queue = queue.dead_name
        for letter in queue.messages():
            if wanted is not None and letter.message_id not in wanted:
                continue
            try:
                getattr(letter, action)()
                outcome.done.append(letter.message_id)
            except ValueError as error:
                outcome.failed.append((letter.message_id, str(error)))
            if wanted is not None and len(outcome.done) + len(outcome.failed) == len(wanted):
                break  # found them all: the rest stays where it is, unread
    return outcome


def replay(message_ids=None, *, queue_name=None):
    """Publish dead letters (all of them with ``message_ids=None``) back to
    their work queue with fresh attempts, and forget why they died."""
    return _act("replay", message_ids, queue_name)


def purge(message_ids=None, *, queue_name=None):
    """Drop dead letters (all of them with ``message_ids=None``) and their
    recorded reasons."""
    return _act("purge", message_ids, queue_name)


def _recorded(message_id):
    with database.connection_context():
        record = DeadLetter.get_or_none(DeadLetter.message_id == message_id)
    if record is None:
        raise NotFound(f"no dead letter {message_id} is recorded")
    return record


def _one(action, message_id):
    try:
        return action([message_id])
    except (pika.exceptions.AMQPError, OSError) as error:
        raise BrokerUnavailable(f"RabbitMQ is unreachable: {error!r}") from None


def replay_one(message_id):
    """Replay one recorded dead letter of this service's queue (the API's
    and the console's replay). Raises NotFound if it is not recorded or no
    longer in the dead-letter queue, BrokerUnavailable, DeadLetterQueueBusy."""
    _recorded(message_id)
    outcome = _one(replay, message_id)
    if not outcome.done:
        raise NotFound(f"dead letter {message_id} is recorded but no longer in {outcome.queue} "
                       "(expired, or purged from RabbitMQ directly); purge it")


def purge_one(message_id):
    """Drop one recorded dead letter from the dead-letter queue and forget it
    (forgotten even when RabbitMQ no longer holds it). Raises NotFound if
    it is not recorded, BrokerUnavailable, DeadLetterQueueBusy."""
    _recorded(message_id)
    _one(purge, message_id)
    forget(message_id, settings.QUEUE_NAME)
