"""Shared pieces of the edge tests: a private nginx from the repo's template
in front of a stack's gunicorn, and HTTP clients that each speak from their
own address of 127.0.0.0/8 (nginx's limits are per client address)."""

import socket

import requests
from requests.adapters import HTTPAdapter

from deploy import nginx
from harness import ROOT, Process, free_port, wait_for


class Edge:
    """nginx in the foreground, a child of the test, on a free port of
    127.0.0.1; its files (configuration, pid, temporary bodies, access log)
    in artifacts/nginx/<stack>/. Never /etc/nginx, never port 80."""

    def __init__(self, stack):
        self.stack = stack
        self.port = free_port()
        self.run_dir = ROOT / "artifacts" / "nginx" / stack.name
        self.process = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self):
        return self.run_dir / "nginx.log"

    @property
    def access_log(self):
        return self.run_dir / "access.log"

    def start(self):
        assert nginx.find(), "nginx is not installed: apt-get install nginx (./run tests installs it)"
        for old in (self.error_log, self.access_log):
            old.unlink(missing_ok=True)
        argv = nginx.prepare(self.run_dir, listen=f"127.0.0.1:{self.port}", upstream=f"127.0.0.1:{self.stack.port}",
                             worker_processes=1)
        self.process = Process("nginx", argv, env=None, log_path=self.error_log).start()
        wait_for(self._answers, timeout=10, what=f"nginx on {self.url} (log: {self.error_log})")
        return self

    def _answers(self):
        if not self.process.alive:
            raise RuntimeError(f"nginx exited:\n{self.process.log_tail()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.process:
            self.process.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class _FromAddress(HTTPAdapter):
    def __init__(self, address, **kwargs):
        self.address = address
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def client(address):
    """A requests session whose connections come from ``address``."""
    session = requests.Session()
    session.mount("http://", _FromAddress(address))
    return session


def connect_from(address, port, timeout=10):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(address, 0))
