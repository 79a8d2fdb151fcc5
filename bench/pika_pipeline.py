"""Baseline (d): a minimal pika + psycopg2 pipeline, one follower a message.

The publisher sends persistent messages to a durable queue (no confirms: the
fastest a bare publisher goes); 2 consumer processes (``python -m
bench.pika_pipeline QUEUE DATABASE_URL``), prefetch 30, each message in its
own transaction, then acked. Timed from the first publish until every
follower is committed. No idempotency key: this is what the service's
exactly-once units are measured against.
"""

import json
import subprocess
import sys
import time

import pika
import psycopg2

import settings
from actors.connection import node_urls
from db.database import connect_params
from harness import ROOT, consumer_count, delete_queues, wait_for

from .baseline_db import insert_follower

PREFETCH = 30
PROCESSES = 2


def consume(queue_name, database_url):
    conn = psycopg2.connect(**connect_params(database_url))
    connection = pika.BlockingConnection(pika.URLParameters(node_urls(settings.RABBITMQ_URL)[0]))
    channel = connection.channel()
    channel.queue_declare(queue=queue_name, durable=True)
    channel.basic_qos(prefetch_count=PREFETCH)

    def on_message(channel, method, properties, body):
        follower = json.loads(body)
        with conn, conn.cursor() as cursor:
            insert_follower(cursor, follower["author"], follower["login"], follower["password"], follower["age"])
        channel.basic_ack(method.delivery_tag)

    channel.basic_consume(queue=queue_name, on_message_callback=on_message)
    channel.start_consuming()


def start_consumers(queue_name, database_url, log_path):
    delete_queues(queue_name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        consumers = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.pika_pipeline", queue_name, database_url],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            for _ in range(PROCESSES)
        ]

    def ready():
        dead = [c for c in consumers if c.poll() is not None]
        if dead:
            raise RuntimeError(f"a pika consumer exited with code {dead[0].returncode}; see {log_path}")
        return consumer_count(queue_name) >= PROCESSES

    wait_for(ready, timeout=30, what=f"{PROCESSES} pika consumers on {queue_name} (log: {log_path})")
    return consumers


def stop_consumers(consumers):
    for consumer in consumers:
        consumer.terminate()
    for consumer in consumers:
        try:
            consumer.wait(5)
        except subprocess.TimeoutExpired:
            consumer.kill()
            consumer.wait()


def run(conn, queue_name, author_id, followers_login, count, password_hash):
    """Publish ``count`` 1-follower messages to the running consumers and wait
    until they are all committed; returns the seconds it took."""
    conn.autocommit = True
    with conn.cursor() as cursor:

        def subscriptions():
            cursor.execute("SELECT count(*) FROM subscriptions WHERE author_id = %s", (author_id,))
            return cursor.fetchone()[0]

        expected = subscriptions() + count
        connection = pika.BlockingConnection(pika.URLParameters(node_urls(settings.RABBITMQ_URL)[0]))
        try:
            channel = connection.channel()
            started = time.perf_counter()
            for i in range(count):
                body = json.dumps(
                    {"login": f"{followers_login}_#{i}", "password": password_hash, "age": i, "author": author_id}
                )
                channel.basic_publish("", queue_name, body, pika.BasicProperties(delivery_mode=2))
        finally:
            connection.close()
        # Polled as often as the service's job is (bench.service.POLL_S).
        wait_for(
            lambda: subscriptions() >= expected,
            timeout=300,
            interval=0.05,
            what=f"the pika consumers to commit {count} followers",
        )
        elapsed = time.perf_counter() - started
    conn.autocommit = False
    return elapsed


if __name__ == "__main__":
    consume(*sys.argv[1:])
