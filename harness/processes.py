"""Child processes for the harness: start one in its own process group with
its output in a log file, wait for a condition, stop it for real."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, *, timeout, what, interval=0.2, progress=None):
    """Poll ``predicate`` until it returns a true value, which is returned.
    ``progress`` (optional) is called with the seconds waited so far."""
    started = time.monotonic()
    last_report = started
    while True:
        value = predicate()
        if value:
            return value
        now = time.monotonic()
        if now - started > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        if progress and now - last_report >= 1:
            progress(now - started)
            last_report = now
        time.sleep(interval)


class Process:
    """One child process in its own process group, its output in a log file."""

    def __init__(self, name, argv, *, env, log_path):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = Path(log_path)
        self.popen = None

    def start(self):
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    @property
    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def children(self):
        """PIDs of the direct children (dramatiq's worker processes)."""
        try:
            text = Path(f"/proc/{self.popen.pid}/task/{self.popen.pid}/children").read_text()
        except (OSError, AttributeError):
            return []
        return [int(pid) for pid in text.split()]

    def stop(self, timeout=15):
        """SIGTERM the group, SIGKILL it after ``timeout`` seconds."""
        if self.popen is None:
            return
        if self.alive:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Kill whatever is left in the group, even if the leader is gone.
        self._signal_group(signal.SIGKILL)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def _signal_group(self, signum):
        try:
            os.killpg(self.popen.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def log_tail(self, lines=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
