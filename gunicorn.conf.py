"""gunicorn's settings, read by ``gunicorn api:app`` from this folder.

gunicorn's threaded workers give a thread to a connection until its request
is read whole: they must sit behind a buffering proxy, nginx
(deploy/nginx.conf.template), which hands over only complete requests."""

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
# The synchronous path may add 100,000 followers in one request (nginx's
# proxy_read_timeout is a little longer).
timeout = 120
# On SIGTERM: stop accepting, answer the requests in flight for up to this
# long, then exit (nginx's worker_shutdown_timeout is the same).
graceful_timeout = 30
# Idle connections from nginx stay open longer than nginx keeps them (60 s,
# keepalive_timeout of its upstream block): nginx always closes first, so it
# never sends a request on a connection gunicorn is closing.
keepalive = 75
# X-Forwarded-For and X-Forwarded-Proto are believed from these peers only:
# nginx on this host by default, the compose network in docker-compose.yml.
forwarded_allow_ips = settings.FORWARDED_ALLOW_IPS
# When the access log is on (--access-logfile -, or GUNICORN_CMD_ARGS), %(h)s
# is the real client (see post_worker_init).
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
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
    """At each worker's start: a queue declared otherwise than QUEUE_TYPE
    says (actors.topology) stops the API, naming the migration command (the
    worker fails to boot, and gunicorn exits; RabbitMQ down does not stop
    it). And, behind nginx, every request comes from nginx's address:
    REMOTE_ADDR becomes the client's, from X-Forwarded-For, when the peer is
    in forwarded_allow_ips (and that header is dropped from any other peer)."""
    import actors.topology
    from web.forwarded import ForwardedClient

    actors.topology.check_at_start(settings.QUEUE_NAME)
    worker.wsgi = ForwardedClient(worker.wsgi, trusted=worker.cfg.forwarded_allow_ips)
