"""Baseline (e): pika publishes persistent messages to a durable queue and
waits for RabbitMQ's confirm after each one (what Dramatiq's
``confirm_delivery=True`` does). The API is measured against it: a request
is accepted only once its message is stored, so it cannot go faster than
storing one message, unless it is smarter."""

import time

import pika

import settings
from actors.connection import node_urls
from harness import delete_queues


def run(queue_name, count):
    """Publish ``count`` small messages; returns the seconds it took."""
    connection = pika.BlockingConnection(pika.URLParameters(node_urls(settings.RABBITMQ_URL)[0]))
    try:
        channel = connection.channel()
        channel.queue_declare(queue=queue_name, durable=True)
        channel.confirm_delivery()
        body = b'{"userId": 1, "followersLogin": "fan", "count": 10}'
        started = time.perf_counter()
        for _ in range(count):
            channel.basic_publish("", queue_name, body, pika.BasicProperties(delivery_mode=2), mandatory=True)
        elapsed = time.perf_counter() - started
    finally:
        connection.close()
    delete_queues(queue_name)
    return elapsed
