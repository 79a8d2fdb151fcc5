"""gunicorn's gevent worker, stopping as promptly as its threaded one.

On SIGTERM gunicorn's gevent worker stops accepting, then waits up to
``graceful_timeout`` (30 s) for every connection to end. A connection kept
alive by its client (nginx's upstream keep-alive, an idle
``requests.Session``) ends only when its ``keepalive`` runs out (75 s): every
stop took the whole 30 s, and then also killed whatever request was still
running. gunicorn's threaded worker closes idle connections at once; this
one does too, and still answers every request in flight, closing its
connection after the answer (tests/test_api_stop.py).
"""

import gevent
from gunicorn.workers.ggevent import GeventWorker as GunicornGeventWorker


class GeventWorker(GunicornGeventWorker):
    """``worker_class`` in gunicorn.conf.py."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A connection's greenlet -> the keep-alive timeout it waits under,
        # while it waits for its next request (and only then).
        self.waiting_for_request = {}

    def timeout_ctx(self):
        # gunicorn reads each request under this (its own: a silent Timeout of keepalive seconds).
        return WaitingForRequest(self)

    def handle_exit(self, sig, frame):
        super().handle_exit(sig, frame)  # stop accepting
        # Out of the signal handler, as gunicorn's own handle_quit does.
        gevent.spawn(self.close_idle_connections)

    def close_idle_connections(self):
        """End every wait for a next request now, as if its keepalive ran
        out: gunicorn then closes the connection, writing nothing."""
        for greenlet, timeout in list(self.waiting_for_request.items()):
            greenlet.kill(timeout, block=False)


class WaitingForRequest:
    """The keep-alive timeout around the read of a request, recording its
    greenlet as waiting meanwhile. Once the worker is stopping it waits for
    nothing: a request already received is still read and answered."""

    def __init__(self, worker):
        self.worker = worker
        self.timeout = gevent.Timeout(worker.cfg.keepalive if worker.alive else 0, False)
        self.greenlet = gevent.getcurrent()

    def __enter__(self):
        if self.worker.alive:
            self.worker.waiting_for_request[self.greenlet] = self.timeout
        return self.timeout.__enter__()

    def __exit__(self, kind, value, traceback):
        self.worker.waiting_for_request.pop(self.greenlet, None)
        return self.timeout.__exit__(kind, value, traceback)
