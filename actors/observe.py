"""Seeing what the workers do: a log line per processed message."""

import datetime
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

    Parameters:
      json_lines(bool): One JSON object per line instead of key=value text.
      stream(file): Where the lines go; by default the process's stderr,
        where Dramatiq collects the output of its worker processes.
    """

    def __init__(self, *, json_lines=False, stream=None):
        self.json_lines = json_lines
        self.stream = stream
        self.local = threading.local()
        self.lock = threading.Lock()  # one line at a time, never two interleaved

    def _write(self, line):
        stream = self.stream or sys.stderr  # read late: Dramatiq swaps stderr for a pipe in its workers
        with self.lock:
            stream.write(line + "\n")
            stream.flush()

    def before_process_message(self, broker, message):
        self.local.started = time.monotonic()
        self.local.attempt = attempt_of(message)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if not logger.isEnabledFor(logging.INFO):  # LOG_LEVEL above INFO: skip the work
            return
        started = getattr(self.local, "started", None) or time.monotonic()
        job_id, chunk = unit_of(message)
        record = {
            "message": message.message_id,
            "actor": message.actor_name,
            "job": job_id,
            "unit": chunk,
            # Taken at the start: Retries has counted this failure by now.
            "attempt": getattr(self.local, "attempt", None) or attempt_of(message),
            "ms": round((time.monotonic() - started) * 1000, 1),
            "outcome": outcome_of(message, exception),
        }
        if exception is not None:
            record["error"] = failure_reason(message)
        now = datetime.datetime.now(datetime.UTC).astimezone()  # local time, as Dramatiq's lines
        if self.json_lines:
            self._write(json.dumps({"time": now.isoformat(timespec="milliseconds"), "pid": os.getpid(), **record}))
        else:
            # Dramatiq's own line layout, so the worker log reads as one.
            fields = " ".join(f"{key}={value}" for key, value in record.items())
            self._write(
                f"[{now:%Y-%m-%d %H:%M:%S},{now.microsecond // 1000:03d}] [PID {os.getpid()}] "
                f"[{threading.current_thread().name}] [followers.units] [INFO] {fields}"
            )

    def after_skip_message(self, broker, message):
        self.after_process_message(broker, message, exception=getattr(message, "_exception", None))
