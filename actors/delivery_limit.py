"""Containing a message that kills its worker: its starts are counted where
a crash cannot lose the count, and past a limit it is dead-lettered.

Dramatiq counts retries inside the message, which a crash never updates, so
on RabbitMQ a message that kills its worker is otherwise redelivered forever.
"""

import logging
import threading

import dramatiq
import pika.exceptions
from dramatiq.middleware import Middleware

from db import DeliveryAttempt, database

from .messages import DeliveryLimitExceeded, dead_letter_now

logger = logging.getLogger("followers.worker")


class DramatiqInternalsChanged(RuntimeError):
    pass


def consumer_connections(worker):
    """The pika connections of a Dramatiq worker's consumers.

    Dramatiq has no public way to reach them, so this is the one place that
    reaches into its internals (checked against Dramatiq 2.2): the worker's
    ``consumers`` (queue name -> ConsumerThread), each thread's ``consumer``
    (None until it connects), and that consumer's ``connection``. When one
    is missing it raises DramatiqInternalsChanged rather than return nothing,
    which would make the ack flush silently do nothing;
    tests/test_delivery_limit.py fails on such an upgrade.
    """

    def changed(what):
        return DramatiqInternalsChanged(
            f"Dramatiq {dramatiq.__version__}: {what}; DeliveryLimit cannot flush acks before a "
            "suspect runs (adapt consumer_connections in actors/delivery_limit.py)"
        )

    consumers = getattr(worker, "consumers", None)
    if not isinstance(consumers, dict):
        raise changed(f"{type(worker).__name__} has no dict 'consumers'")
    connections = []
    for thread in list(consumers.values()):
        if not hasattr(thread, "consumer"):
            raise changed(f"{type(thread).__name__} has no 'consumer'")
        if thread.consumer is None:
            continue  # not connected yet, or reconnecting: nothing of ours in flight on it
        connection = getattr(thread.consumer, "connection", None)
        if not callable(getattr(connection, "add_callback_threadsafe", None)):
            raise changed(f"{type(thread.consumer).__name__} has no pika 'connection'")
        connections.append(connection)
    return connections


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
    """Middleware that dead-letters a message once it has started
    ``max_deliveries`` times without finishing, whatever killed its workers
    (``os._exit``, SIGKILL, the OOM killer, the hard time limit).

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
        consumer_connections(worker)  # raises now, at boot, if Dramatiq's internals moved

    def before_process_message(self, broker, message):
        if not self.max_deliveries:
            return
        self._release()  # a hold whose ack never came (a failed ack) must not linger
        suspect = getattr(message, "redelivered", False)
        if suspect:
            self.gate.acquire_exclusive()
            self.local.held = "exclusive"
            try:
                self._flush_acks()
            except DramatiqInternalsChanged:
                # Loud, but the suspect is still counted below, so a killer is
                # still contained: only a cleaner count for its neighbours is lost.
                logger.critical("could not flush acks before suspect %s", message.message_id, exc_info=True)
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
        for connection in consumer_connections(self.worker):
            flushed = threading.Event()
            try:
                connection.add_callback_threadsafe(flushed.set)
            except pika.exceptions.AMQPError:  # a closed connection has nothing left to send
                continue
            flushed.wait(timeout)
