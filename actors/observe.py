"""Seeing what the workers do: a log line per processed message."""

import json
import logging
import os
import sys
import threading
import time

from dramatiq.middleware import Middleware

from .messages import attempt_of, failure_reason, unit_of

logger = logging.getLogger("followers.units")


def outcome_of(message, exception):
    if message.failed:
        return "dead-lettered"
    if exception is not None:
        return "retrying"
    return "done"


class UnitLog(Middleware):
    """Middleware that writes one line per processed message: job, unit,
    attempt, duration, outcome.

    The line is whole when it is made (Dramatiq's layout, or one JSON object
    for log shippers), so it is written straight to ``stream`` rather than
    through a LogRecord: that asks logging for nothing it would only throw
    away (the caller's file and function, a stack walk per line, and the
    process name), without changing how any other logger of the process
    works. The ``followers.units`` logger still decides whether lines are
    written (``LOG_LEVEL`` above ``INFO`` turns them off).

    The lines honour the ``followers.units`` logger's level (LOG_LEVEL) but
    are written to stderr (where Dramatiq collects a worker's output) whole,
    by this middleware itself: through ``logging`` a line cost 24 us, most of
    this middleware's cost and 5% of a worker's CPU at one follower per
    message (a LogRecord, handler locks, a datetime formatted with strftime
    every time).

    Parameters:
      json_lines(bool): One JSON object per line instead of key=value text.
      stream(file): Where the lines go (default: stderr at boot).
    """

    def __init__(self, *, json_lines=False, stream=None):
        self.json_lines = json_lines
        self.stream = stream
        self.local = threading.local()
        self.write_lock = threading.Lock()
        self.pid = os.getpid()
        self._second = (None, "", "")  # (a second, its local time as text, its UTC offset)

    def after_process_boot(self, broker):
        self.pid = os.getpid()
        if self.stream is None:
            self.stream = sys.stderr

    def before_process_message(self, broker, message):
        self.local.started = time.monotonic()
        self.local.attempt = attempt_of(message)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if not logger.isEnabledFor(logging.INFO):  # LOG_LEVEL above INFO: skip the work
            return
        started = getattr(self.local, "started", None) or time.monotonic()
        job_id, unit = unit_of(message)
        record = {
            "message": message.message_id,
            "actor": message.actor_name,
            "job": job_id,
            "unit": unit,
            # Taken at the start: Retries has counted this failure by now.
            "attempt": getattr(self.local, "attempt", None) or attempt_of(message),
            "ms": round((time.monotonic() - started) * 1000, 1),
            "outcome": outcome_of(message, exception),
        }
        if exception is not None:
            record["error"] = failure_reason(message)
        stamp, milliseconds, offset = self._local_time()
        if self.json_lines:
            line = json.dumps({"time": f"{stamp.replace(' ', 'T')}.{milliseconds:03d}{offset}", "pid": self.pid,
                               **record})
        else:
            # Dramatiq's own line layout, so the worker log reads as one.
            fields = " ".join(f"{key}={value}" for key, value in record.items())
            line = (f"[{stamp},{milliseconds:03d}] [PID {self.pid}] [{threading.current_thread().name}] "
                    f"[followers.units] [INFO] {fields}")
        with self.write_lock:  # a line is never cut by another thread's
            self.stream.write(line + "\n")
            self.stream.flush()

    def after_skip_message(self, broker, message):
        self.after_process_message(broker, message, exception=getattr(message, "_exception", None))

    def _local_time(self):
        """(local time to the second as text, milliseconds, UTC offset as
        +HH:MM), the text made once a second."""
        now = time.time()
        second = int(now)
        cached, text, offset = self._second
        if cached != second:
            local = time.localtime(second)
            text = time.strftime("%Y-%m-%d %H:%M:%S", local)
            zone = time.strftime("%z", local)
            offset = f"{zone[:3]}:{zone[3:]}"
            self._second = (second, text, offset)
        return text, int((now - second) * 1000), offset
