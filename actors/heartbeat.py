"""The workers' heartbeat: each worker process says it is alive, how busy it
is and how many units it has done, in PostgreSQL, where the API and the
console read it (``GET /api/v1/workers``)."""

import logging
import os
import socket
import threading

from dramatiq.middleware import Middleware
from peewee import PeeweeException

from db import WorkerProcess, database

from .messages import unit_of

logger = logging.getLogger("followers.worker")

#: Rows of processes silent this long are deleted when a process boots.
FORGET_AFTER_S = 24 * 3600


class Heartbeat(Middleware):
    """Writes one row per worker process (host, pid, threads, threads busy,
    units done) when it boots, then every ``interval`` seconds from a thread
    of its own, and a last one marked stopped on a graceful shutdown. A
    process that dies (SIGKILL, the hard time limit, OOM) simply falls
    silent: readers call it gone after 3 intervals. One short UPDATE per
    process per interval: nothing on the path of a message but two counters.

    Parameters:
      interval(int): Seconds between heartbeats; 0 turns them off.
    """

    def __init__(self, *, interval):
        self.interval = interval
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()  # the last, stopped, beat is never overwritten
        self.local = threading.local()
        self.busy = 0
        self.units_done = 0
        self.process_id = None
        self.threads = 0
        self.stopping = threading.Event()

    def after_worker_boot(self, broker, worker):
        if not self.interval:
            return
        self.threads = worker.worker_threads
        threading.Thread(target=self._beat_forever, name="heartbeat", daemon=True).start()

    def before_worker_shutdown(self, broker, worker):
        if not self.interval:
            return
        self.stopping.set()
        self._beat(stopped=True)

    # Counted per thread, so a message skipped before this hook ran (another
    # middleware refused it) cannot make the count go wrong.
    def before_process_message(self, broker, message):
        self.local.counted = True
        with self.lock:
            self.busy += 1

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if not getattr(self.local, "counted", False):
            return
        self.local.counted = False
        with self.lock:
            self.busy -= 1
            if exception is None and not message.failed and unit_of(message)[0] is not None:
                self.units_done += 1

    def after_skip_message(self, broker, message):
        self.after_process_message(broker, message, exception=getattr(message, "_exception", None))

    def _beat_forever(self):
        try:
            with database.connection_context():
                WorkerProcess.forget_silent(FORGET_AFTER_S)
        except PeeweeException as error:
            logger.warning("heartbeat: could not forget old worker rows: %r", error)
        self._beat()
        while not self.stopping.wait(self.interval):
            self._beat()

    def _beat(self, *, stopped=False):
        with self.write_lock:
            if self.stopping.is_set() and not stopped:
                return
            self._write(stopped)

    def _write(self, stopped):
        with self.lock:
            busy, units_done = self.busy, self.units_done
        try:
            with database.connection_context():
                if self.process_id is None or not WorkerProcess.beat(
                    self.process_id, busy=busy, units_done=units_done, stopped=stopped
                ):
                    self.process_id = WorkerProcess.start(
                        host=socket.gethostname(), pid=os.getpid(), threads=self.threads, interval_s=self.interval
                    )
                    WorkerProcess.beat(self.process_id, busy=busy, units_done=units_done, stopped=stopped)
        except PeeweeException as error:  # PostgreSQL down: the next beat tries again
            logger.warning("heartbeat: could not write: %r", error)
