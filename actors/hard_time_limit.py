"""Getting back a worker slot that a message holds too long, whatever it is
blocked in."""

import logging
import os
import sys
import threading
import time

from dramatiq.middleware import Middleware
from peewee import PeeweeException

from db import DeliveryAttempt, database

logger = logging.getLogger("followers.worker")


class HardTimeLimit(Middleware):
    """Middleware that kills the worker process when a message runs past
    ``time_limit``.

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
