"""RabbitMQ as the harness sees it: queue depths and consumers, deleting a
stack's queues, and publishing raw bytes as a broken producer would.

Each function takes the RabbitMQ URL setting to use (``url``, default
settings.RABBITMQ_URL); with several nodes (``;``) it uses the first one
that answers, so a cluster with a node down still answers.
"""

import pika

import settings


def _connection(url=None):
    error = None
    for node in (url or settings.RABBITMQ_URL).split(";"):
        if node.strip():
            try:
                return pika.BlockingConnection(pika.URLParameters(node.strip()))
            except pika.exceptions.AMQPConnectionError as failed:
                error = failed
    raise error


def queue_state(queue_name, *, url=None):
    """(ready messages, consumers) of a queue, or (0, 0) if it does not exist."""
    connection = _connection(url)
    try:
        result = connection.channel().queue_declare(queue=queue_name, passive=True)
        return result.method.message_count, result.method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:
        return 0, 0
    finally:
        if connection.is_open:
            connection.close()


def queue_depth(queue_name, *, url=None):
    return queue_state(queue_name, url=url)[0]


def consumer_count(queue_name, *, url=None):
    return queue_state(queue_name, url=url)[1]


def delete_queues(queue_name, *, url=None):
    """Delete a queue with its delay (.DQ) and dead-letter (.XQ) queues."""
    connection = _connection(url)
    try:
        for name in (queue_name, f"{queue_name}.DQ", f"{queue_name}.XQ"):
            connection.channel().queue_delete(queue=name)
    finally:
        connection.close()


def purge_queue(queue_name, *, url=None):
    """Empty a queue, keeping it (a publisher that declared it once does not
    declare it again)."""
    connection = _connection(url)
    try:
        connection.channel().queue_purge(queue=queue_name)
    except pika.exceptions.ChannelClosedByBroker:
        pass  # no such queue: nothing to empty
    finally:
        if connection.is_open:
            connection.close()


def publish_raw(queue_name, body, *, headers=None, url=None):
    """Publish bytes straight to a queue, as a broken or hostile producer would."""
    connection = _connection(url)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            exchange="",
            routing_key=queue_name,
            body=body,
            properties=pika.BasicProperties(delivery_mode=2, headers=headers),
        )
    finally:
        connection.close()
