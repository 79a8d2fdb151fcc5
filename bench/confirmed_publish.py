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


def run(queue_name, seconds):
    """Publish small messages for ``seconds`` (as long as the API's load
    runs: a burst of a second is faster than the same publisher a few
    seconds on, as a queue fills); returns messages/s."""
    connection = pika.BlockingConnection(pika.URLParameters(node_urls(settings.RABBITMQ_URL)[0]))
    try:
        channel = connection.channel()
        channel.queue_declare(queue=queue_name, durable=True)
        channel.confirm_delivery()
        body = b'{"userId": 1, "followersLogin": "fan", "count": 10}'
        properties = pika.BasicProperties(delivery_mode=2)
        started = time.perf_counter()
        deadline, count = started + seconds, 0
        while time.perf_counter() < deadline:
            channel.basic_publish("", queue_name, body, properties, mandatory=True)
            count += 1
        elapsed = time.perf_counter() - started
    finally:
        connection.close()
    delete_queues(queue_name)
    return count / elapsed
