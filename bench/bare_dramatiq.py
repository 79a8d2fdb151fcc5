"""Baseline (f): bare Dramatiq, one follower a message, written the obvious
way, with none of the service's guarantees.

``RabbitmqBroker`` with its defaults (Dramatiq's default middleware, no
publisher confirms), an actor that creates the follower and subscribes it
(a transaction per message, ``baseline_db.insert_follower``, as the pika
baseline does), run as ``dramatiq bench.bare_dramatiq:worker --processes 2
--threads 8`` on the baselines' database (DATABASE_URL, QUEUE_NAME in its
environment). The bench sends the messages with ``actor.send`` and times
from the first send until every follower is committed. What a user would
pick instead of the service: the service's unit path is measured against it.
"""

import os
import threading
import time

import dramatiq
import psycopg2
from dramatiq.brokers.rabbitmq import RabbitmqBroker

import settings
from db.database import connect_params
from harness import BIN, Process, consumer_count, delete_queues, wait_for

from .baseline_db import insert_follower

PROCESSES = 2
THREADS = 8

_local = threading.local()


def add_follower(author_id, login, password_hash, age):
    """The actor: one follower, one transaction, on this thread's connection."""
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = psycopg2.connect(**connect_params())
    with conn, conn.cursor() as cursor:
        insert_follower(cursor, author_id, login, password_hash, age)


def declare(broker, queue_name):
    return dramatiq.actor(add_follower, broker=broker, queue_name=queue_name)


def worker():
    """Called by ``dramatiq bench.bare_dramatiq:worker`` in each process."""
    broker = RabbitmqBroker(url=settings.RABBITMQ_URL)
    dramatiq.set_broker(broker)
    declare(broker, settings.QUEUE_NAME)


def start_workers(queue_name, database_url, log_path):
    delete_queues(queue_name)
    env = {**os.environ, "DATABASE_URL": database_url, "QUEUE_NAME": queue_name, "PYTHONUNBUFFERED": "1"}
    argv = [str(BIN / "dramatiq"), "bench.bare_dramatiq:worker", "--processes", str(PROCESSES),
            "--threads", str(THREADS)]  # fmt: skip
    workers = Process("bare-dramatiq", argv, env=env, log_path=log_path).start()

    def ready():
        if not workers.alive:
            raise RuntimeError(f"bare dramatiq exited:\n{workers.log_tail()}")
        return consumer_count(queue_name) >= PROCESSES

    try:
        wait_for(ready, timeout=60, what=f"{PROCESSES} bare dramatiq processes on {queue_name} (log: {log_path})")
    except BaseException:
        workers.stop()
        raise
    return workers


def run(conn, queue_name, author_id, followers_login, count, password_hash):
    """Send ``count`` 1-follower messages to the running workers and wait
    until they are all committed; returns the seconds it took."""
    broker = RabbitmqBroker(url=settings.RABBITMQ_URL)
    actor = declare(broker, queue_name)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:

            def subscriptions():
                cursor.execute("SELECT count(*) FROM subscriptions WHERE author_id = %s", (author_id,))
                return cursor.fetchone()[0]

            expected = subscriptions() + count
            started = time.perf_counter()
            for i in range(count):
                actor.send(author_id, f"{followers_login}_#{i}", password_hash, i)
            # Polled as often as the service's job is (bench.service.POLL_S).
            wait_for(
                lambda: subscriptions() >= expected,
                timeout=300,
                interval=0.05,
                what=f"bare dramatiq to commit {count} followers",
            )
            return time.perf_counter() - started
    finally:
        conn.autocommit = False
        broker.close()
