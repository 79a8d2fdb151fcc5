"""gunicorn's settings, read by ``gunicorn api:app`` from this folder.

Each worker is gunicorn's gevent worker: a greenlet per connection, every
wait on a socket (PostgreSQL's commit, RabbitMQ's confirm, the client)
handing the core to another request. Against its threaded worker (gthread,
8 threads) it answered ~1.25x the requests/s at two thirds of the p99 at 16
clients (docs/benchmark.md): the threads' hand-offs and GIL switches were
most of a request's cost. It still holds a connection slot per client until
its request is read whole: behind nginx (deploy/nginx.conf.template), which
hands over only complete requests."""

import logging
import os
import shutil

import settings

bind = settings.API_BIND
workers = settings.API_WORKERS
worker_class = "web.gevent_worker.GeventWorker"  # gunicorn's, closing idle connections at once on SIGTERM
worker_connections = settings.API_WORKER_CONNECTIONS
# No preload: each worker imports the app itself, so no database or broker
# connection is ever shared across a fork, and the app's locks and
# thread-locals (peewee's connection state) are made after the gevent worker
# has patched threading: one per greenlet, not one for all.
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


def post_fork(server, worker):
    """psycopg2 waits for PostgreSQL through gevent (psycogreen): without it,
    every query would stop the whole process until its answer. Set before
    the app is imported, so before any connection is opened; not for
    another worker class chosen on the command line (the bench compares
    them: docs/benchmark.md)."""
    from gunicorn.workers.ggevent import GeventWorker
    from psycogreen.gevent import patch_psycopg

    if isinstance(worker, GeventWorker):
        patch_psycopg()


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
