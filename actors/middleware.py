"""Worker middleware of our own, each a small class as Dramatiq's are.

They close the gaps of Dramatiq on RabbitMQ that the lab shows: a message
that kills its worker is redelivered forever (Dramatiq counts retries inside
the message, which a crash never updates), and TimeLimit cannot interrupt a
thread blocked in a sleep, a socket or a C call.
"""

import logging
import os
import sys
import threading
import time

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage
from peewee import PeeweeException

from db import DeadLetter, DeliveryAttempt, JobUnit, database

logger = logging.getLogger("followers.worker")


class DeliveryLimitExceeded(Exception):
    pass


def failure_reason(message):
    exception = getattr(message, "_exception", None)
    if exception is None:
        return "failed"
    if isinstance(exception, (SkipMessage, DeliveryLimitExceeded)):
        return str(exception)  # dead_letter_now's reason, already a sentence
    return f"{type(exception).__name__}: {exception}"


def attempt_of(message):
    """Which attempt this is: Dramatiq's retries plus crash redeliveries."""
    return message.options.get("retries", 0) + getattr(message, "deliveries", 1)


def unit_of(message):
    """(job_id, chunk) of a unit-of-work message, or (None, None)."""
    kwargs = message.kwargs if isinstance(message.kwargs, dict) else {}
    job_id, chunk = kwargs.get("job_id"), kwargs.get("chunk")
    if type(job_id) is int and type(chunk) is int:
        return job_id, chunk
    return None, None


def dead_letter_now(message, exception):
    """Send a message to the dead-letter queue without running it."""
    message.stuff_exception(exception)
    message.fail()
    raise SkipMessage(str(exception))


class DeadLetters(Middleware):
    """Says why a message went to the dead-letter queue (``<queue>.XQ``):
    logs the reason, records it in ``dead_letters`` and, for a unit of work,
    marks the unit failed with it, so that ``GET /api/v1/jobs/{id}`` shows it.

    Also dead-letters a message for an actor this worker does not have:
    Dramatiq would otherwise fail inside its own middleware and ack it,
    losing it without a trace.
    """

    def before_process_message(self, broker, message):
        try:
            broker.get_actor(message.actor_name)
        except dramatiq.errors.ActorNotFound as error:
            dead_letter_now(message, error)

    def after_nack(self, broker, message):
        reason = failure_reason(message)
        logger.warning("dead-lettered message %s (%s): %s", message.message_id, message.actor_name, reason)
        job_id, chunk = unit_of(message)
        try:
            with database.connection_context():
                DeadLetter.record(
                    message.message_id, message.queue_name, message.actor_name, reason, attempt_of(message)
                )
                if job_id is not None:
                    JobUnit.mark_failed(job_id, chunk, reason)
        except PeeweeException as error:
            # Unknown job (foreign key) or database down: the log line stands.
            logger.warning("could not record dead letter %s: %r", message.message_id, error)


class _Gate:
    """Many shared holders or one exclusive holder, exclusive first in line
    (so a waiting suspect is not starved by a stream of shared holders)."""

    def __init__(self):
        self.condition = threading.Condition()
        self.shared = 0
        self.exclusive = False
        self.exclusive_waiting = 0

    def acquire_shared(self):
        with self.condition:
            while self.exclusive or self.exclusive_waiting:
                self.condition.wait()
            self.shared += 1

    def acquire_exclusive(self):
        with self.condition:
            self.exclusive_waiting += 1
            while self.exclusive or self.shared:
                self.condition.wait()
            self.exclusive_waiting -= 1
            self.exclusive = True

    def release(self, exclusive):
        with self.condition:
            if exclusive:
                self.exclusive = False
            else:
                self.shared -= 1
            self.condition.notify_all()


class DeliveryLimit(Middleware):
    """Dead-letters a message once it has started ``max_deliveries`` times
    without finishing, whatever killed its workers (``os._exit``, SIGKILL, the
    OOM killer, the hard time limit).

    Only RabbitMQ's ``redelivered`` flag costs a write: a first delivery is
    free. A redelivered message is a suspect: it was in flight when a worker
    died, perhaps because of it, perhaps beside the culprit. So a suspect
    runs alone in its process, once the acks of the messages before it have
    gone out: if the process dies again, the count lands on the culprit only,
    and an innocent neighbour, run alone, simply finishes. (A message merely
    prefetched by a dying worker counts one start too many at most.)

    Quorum queues count deliveries themselves (``x-delivery-count``), but a
    delivery is not a start: a message prefetched by a process that died,
    or held by a consumer whose node went down, comes back counted without
    having run. Taken as the count, it dead-lettered innocent neighbours of
    a poison message in the lab (each returned with the culprit three times,
    "delivered 3 times without finishing"). So the starts are counted here
    on either queue type; the broker's own ``x-delivery-limit``, one above
    (actors/topology), is a backstop for a delivery this never saw.

    Parameters:
      max_deliveries(int): Starts allowed; 0 turns counting off.
    """

    def __init__(self, *, max_deliveries):
        self.max_deliveries = max_deliveries
        self.gate = _Gate()
        self.local = threading.local()
        self.worker = None

    def after_worker_boot(self, broker, worker):
        self.worker = worker

    def before_process_message(self, broker, message):
        if not self.max_deliveries:
            return
        self._release()  # a hold whose ack never came (a failed ack) must not linger
        suspect = getattr(message, "redelivered", False)
        if suspect:
            self.gate.acquire_exclusive()
            self.local.held = "exclusive"
            self._flush_acks()
            # Counted once it runs: a suspect that died waiting here did not start.
            with database.connection_context():
                starts, last_error = DeliveryAttempt.count_redelivery(message.message_id)
            message.deliveries = starts
            if starts > self.max_deliveries:
                cause = last_error or "its worker died while running it"
                dead_letter_now(
                    message,
                    DeliveryLimitExceeded(f"started {starts - 1} times without finishing; last: {cause}"),
                )
        else:
            self.gate.acquire_shared()
            self.local.held = "shared"

    # Held until the message's ack (or nack) is handed to the connection, so
    # that _flush_acks, queued after it, waits for it.
    def after_ack(self, broker, message):
        self._release()

    after_nack = after_ack

    def _release(self):
        held = getattr(self.local, "held", None)
        if held is not None:
            self.local.held = None
            self.gate.release(held == "exclusive")

    def _flush_acks(self, timeout=2.0):
        """Wait until every ack already handed to a consumer's connection is
        sent: pika runs thread-safe callbacks in order, so a callback queued
        now runs after them (Dramatiq's consumer close() relies on the same)."""
        for thread in list(getattr(self.worker, "consumers", {}).values()):
            connection = getattr(getattr(thread, "consumer", None), "connection", None)
            if connection is None:
                continue
            flushed = threading.Event()
            try:
                connection.add_callback_threadsafe(flushed.set)
            except Exception:  # a closed connection has nothing left to send
                continue
            flushed.wait(timeout)


class HardTimeLimit(Middleware):
    """Kills the worker process when a message runs past ``time_limit``.

    Dramatiq's TimeLimit raises an exception in the worker thread, which a
    thread blocked in ``time.sleep``, a socket or libpq never sees. The only
    way to get such a slot back is to end the process: RabbitMQ then
    redelivers its messages (units are idempotent), the supervisor (compose's
    restart policy, the lab's runner) starts a new one, and DeliveryLimit
    counts the start, so a message that always hangs is dead-lettered.

    Parameters:
      time_limit(int): Milliseconds; 0 turns the watchdog off.
      interval(int): Milliseconds between checks.
    """

    def __init__(self, *, time_limit, interval=500):
        self.time_limit = time_limit / 1000
        self.interval = interval / 1000
        self.running = {}  # thread id -> (message, monotonic start)
        self.lock = threading.Lock()

    def after_process_boot(self, broker):
        if self.time_limit:
            threading.Thread(target=self._watch, name="hard-time-limit", daemon=True).start()

    def before_process_message(self, broker, message):
        with self.lock:
            self.running[threading.get_ident()] = (message, time.monotonic())

    def after_process_message(self, broker, message, *, result=None, exception=None):
        with self.lock:
            self.running.pop(threading.get_ident(), None)

    after_skip_message = after_process_message

    def _watch(self):
        while True:
            time.sleep(self.interval)
            now = time.monotonic()
            with self.lock:
                overdue = [(m, now - t) for m, t in self.running.values() if now - t > self.time_limit]
            if overdue:
                self._kill(overdue)

    def _kill(self, overdue):
        for message, elapsed in overdue:
            reason = f"killed by the hard time limit ({self.time_limit:g} s) after {elapsed:.1f} s"
            logger.critical("message %s (%s): %s; exiting", message.message_id, message.actor_name, reason)
            try:
                with database.connection_context():
                    DeliveryAttempt.note_kill(message.message_id, reason)
            except PeeweeException as error:
                logger.error("could not record the kill of %s: %r", message.message_id, error)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(75)  # the dramatiq main process stops its other workers and exits
