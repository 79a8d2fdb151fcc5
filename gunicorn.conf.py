"""gunicorn's settings, read by ``gunicorn api:app`` from this folder."""

import logging
import os
import shutil

import settings

bind = settings.API_BIND
workers = settings.API_WORKERS
threads = settings.API_THREADS  # more than 1: gunicorn's gthread worker
# No preload: each worker imports the app itself, so no database or broker
# connection is ever shared across a fork.
preload_app = False
# The synchronous path may add 100,000 followers in one request.
timeout = 120
# gunicorn's control socket has one default path per user: several
# instances (tests, lab, benchmark) running at once would fight over it.
control_socket_disable = True


def on_starting(server):
    """Our own loggers (``followers.*``) follow LOG_LEVEL, set here in the
    master and inherited by every worker it forks (the workers' equivalent
    is actors.LogLevel); importing the app sets no level.

    Prometheus multiprocess mode: every worker keeps its metrics in files
    of one folder, emptied here, before any worker starts. prometheus_client
    reads PROMETHEUS_MULTIPROC_DIR when a worker first imports it, so it is
    set here, in the master, and inherited by every worker it forks."""
    shutil.rmtree(settings.API_METRICS_DIR, ignore_errors=True)
    os.makedirs(settings.API_METRICS_DIR)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = settings.API_METRICS_DIR
    logging.getLogger("followers").setLevel(settings.LOG_LEVEL)


def child_exit(server, worker):
    """A worker is gone: drop its live gauges (its counters still count)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, settings.API_METRICS_DIR)


def post_worker_init(worker):
    """A queue declared otherwise than QUEUE_TYPE says (actors.topology)
    stops the API at start-up, naming the migration command: the worker
    fails to boot, and gunicorn exits. RabbitMQ down does not stop it."""
    import actors.topology

    actors.topology.check_at_start(settings.QUEUE_NAME)
