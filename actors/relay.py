"""The outbox relay: publishes the rows of ``db.outbox`` to RabbitMQ.

Every API and worker process runs one, in a thread of its own. A process
that has just committed outbox rows wakes its relay, so the common case
never waits for a sweep; a sweep every ``sweep_interval`` picks up what
another process left behind when it died, or what waited out a RabbitMQ
outage. Relays of many processes and hosts share the work: each claims rows
that no other holds (``FOR UPDATE SKIP LOCKED``), publishes them with
publisher confirms (``actors.confirms``: RabbitMQ acks once it holds them)
and only then commits the deletion. Killed at any point, a relay loses
nothing: its claimed rows come back when its database transaction does not
commit, and are sent again (a duplicate that idempotent units absorb).
"""

import logging
import os
import threading
import time

from dramatiq import Message
from dramatiq.middleware import Middleware
from peewee import PeeweeException

import settings
from db import Outbox, database

from .publishing import BrokerUnavailable, publisher

logger = logging.getLogger(f"followers.{__name__}")


def message_of(row):
    """The Dramatiq message an outbox row stands for."""
    _id, message_id, queue_name, actor_name, kwargs, created_at = row
    return Message(
        queue_name=queue_name,
        actor_name=actor_name,
        args=(),
        kwargs=kwargs,
        options={},
        message_id=str(message_id),
        message_timestamp=int(created_at.timestamp() * 1000),
    )


class Relay:
    """A thread that publishes the outbox, started in the process that first
    wakes it (never across a fork).

    Parameters:
      publisher(Publisher): Publishes messages with the broker's confirmation.
      batch_size(int): Rows claimed, published and deleted per transaction.
      sweep_interval(float): Seconds between looks at the outbox when
        nothing woke the relay.
      linger(float): Seconds at least from one batch's start to the next
        one's, once a batch has carried more than one row (rows come faster
        than batches go), so that rows committed meanwhile share a batch. A
        relay whose last batch had one row, or none, starts at once.
      pending_ttl(float): Seconds ``pending()`` keeps a count it read.
    """

    def __init__(self, *, publisher, batch_size, sweep_interval, linger=0.0, pending_ttl=1.0):
        self.publisher = publisher
        self.batch_size = batch_size
        self.sweep_interval = sweep_interval
        self.linger = linger
        self.pending_ttl = pending_ttl
        self.broker_error = None  # why the last publish failed; None once one succeeds
        self._woken = threading.Event()
        self._start_lock = threading.Lock()
        self._thread = None
        self._pid = None
        self._pending = (0, float("-inf"))  # (rows, monotonic time counted)
        self._batch_started = float("-inf")  # monotonic time of the last batch's start
        self._batch_rows = 0  # rows of the last batch

    @property
    def running(self):
        """Whether this process has started the relay's thread."""
        return self._pid == os.getpid() and self._thread is not None and self._thread.is_alive()

    def wake(self):
        """Publish what this process has just committed, now."""
        self.start()
        self._woken.set()

    def start(self):
        if self.running:
            return
        with self._start_lock:
            if self.running:
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
            self._thread.start()

    def _run(self):
        while True:
            self._woken.wait(self.sweep_interval)
            if self._batch_rows > 1:  # busy: let the next few milliseconds' rows join the batch
                time.sleep(max(0.0, self._batch_started + self.linger - time.monotonic()))
            self._woken.clear()
            try:
                self.drain()
            except BrokerUnavailable as error:
                self._broker_down(error)
            except PeeweeException as error:
                logger.warning("outbox relay: PostgreSQL failed (%r); trying again in %g s", error, self.sweep_interval)
            except Exception:  # the relay must outlive any surprise
                logger.exception("outbox relay: unexpected error; trying again in %g s", self.sweep_interval)

    def drain(self):
        """Publish batches until the outbox is empty; returns rows sent."""
        sent = 0
        while True:
            count = self.relay_batch()
            sent += count
            if count < self.batch_size:
                return sent

    def relay_batch(self):
        """Claim, publish and delete one batch of rows; returns its size."""
        self._batch_started = time.monotonic()
        with database.connection_context():
            with database.atomic():
                rows = Outbox.claim(self.batch_size)
                if rows:
                    # Raises BrokerUnavailable, which rolls the claim back.
                    self.publisher.publish(message_of(row) for row in rows)
        self._batch_rows = len(rows)
        if rows:
            if self.broker_error is not None:
                logger.warning("outbox relay: RabbitMQ is back; the backlog is going out")
            self.broker_error = None
        return len(rows)

    def _broker_down(self, error):
        if self.broker_error is None:
            logger.warning("outbox relay: %s; messages wait in the outbox until it is back", error)
        self.broker_error = str(error)

    def pending(self, *, at_most):
        """Unsent rows (at most ``at_most`` counted), read at most once per
        ``pending_ttl`` seconds per process: the API's backpressure check
        must not cost a query per request."""
        count, counted_at = self._pending
        if time.monotonic() - counted_at > self.pending_ttl:
            count = Outbox.pending(at_most=at_most)
            self._pending = (count, time.monotonic())
        return count


class OutboxRelay(Middleware):
    """Middleware that starts the relay in every worker process, so that the
    outbox is swept even where no request comes in.

    Parameters:
      relay(Relay): The process's relay.
    """

    def __init__(self, *, relay):
        self.relay = relay

    def after_process_boot(self, broker):
        self.relay.start()


relay = Relay(
    publisher=publisher,
    batch_size=settings.PUBLISH_BATCH_SIZE,
    sweep_interval=settings.OUTBOX_SWEEP_MS / 1000,
    linger=settings.OUTBOX_LINGER_MS / 1000,
)
