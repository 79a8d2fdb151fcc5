"""Publishing many messages fast, with RabbitMQ's word that they are stored.

Dramatiq's ``confirm_delivery`` waits for a confirm after every message, which
caps a publisher near 800 messages/s. Here messages go out in batches of
``PUBLISH_BATCH_SIZE`` on a channel in confirm mode (``actors.confirms``):
a batch counts once RabbitMQ has acked every message of it (persistent
messages in durable queues), so the guarantee is the same and the cost is
about one round trip a batch. (AMQP transactions cost the same, but lost
messages on a quorum queue changing leader: see actors/confirms.py.)
"""

import logging
import threading

import dramatiq
import pika
from dramatiq.errors import ConnectionClosed
from pika.exceptions import AMQPError

import settings

from .confirms import ConfirmedChannel
from .connection import connect

logger = logging.getLogger(f"followers.{__name__}")


class BrokerUnavailable(Exception):
    pass


def _batches(items, size):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Publisher:
    """A channel in confirm mode, opened on first use and re-opened once if
    it broke, used by one thread (or greenlet) at a time: pika connections
    are not thread-safe. One connection per publisher, however many threads
    use it: the API's gevent worker runs a greenlet per client connection,
    and a connection of its own to each would be opened and never closed.
    A process's relay and its /health each have one (actors.publisher,
    api.HealthResource), so a slow broker holding up the one never holds up
    the other.

    Parameters:
      url(str): The RabbitMQ URL.
      timeout(float): Seconds to wait for the broker before giving up.
      batch_size(int): Messages published, then confirmed, at once.
    """

    def __init__(self, *, url, timeout, batch_size):
        self.parameters = pika.URLParameters(url)
        self.parameters.connection_attempts = 1
        self.parameters.socket_timeout = timeout
        self.parameters.blocked_connection_timeout = timeout
        self.parameters.stack_timeout = timeout
        self.batch_size = batch_size
        self.connection = self.channel = None
        self._lock = threading.RLock()  # re-entered by _call's close()

    def _channel(self):
        if self.channel is None or not self.channel.channel.is_open:
            self.close()
            # Whichever node of RABBITMQ_URL answers, another one first after a failure.
            self.connection = connect(settings.RABBITMQ_URL, timeout=self.parameters.socket_timeout)
            self.channel = ConfirmedChannel(self.connection.channel(), timeout=self.parameters.socket_timeout)
        return self.channel

    def close(self):
        with self._lock:
            connection, self.connection, self.channel = self.connection, None, None
            if connection is not None and connection.is_open:
                try:
                    connection.close()
                except AMQPError:
                    pass

    def ping(self):
        """Raise BrokerUnavailable unless RabbitMQ answers."""
        self._call(lambda channel: channel.channel.connection.process_data_events(0))

    def publish(self, messages):
        """Publish Dramatiq messages (any iterable) durably, batch by batch.
        A batch that fails is sent again once on a new connection; a batch
        sent twice is harmless, since every unit of work is idempotent."""
        broker = dramatiq.get_broker()
        declared = set()
        count = 0
        for batch in _batches(messages, self.batch_size):
            for queue_name in {message.queue_name for message in batch} - declared:
                self._declare(broker, queue_name)
                declared.add(queue_name)
            # B023: the lambda runs inside _call, before the loop moves on.
            self._call(lambda channel: self._send(broker, channel, batch))  # noqa: B023
            count += len(batch)
        return count

    def _declare(self, broker, queue_name):
        # Dramatiq declares the queue with its dead-letter arguments; a
        # message published before its queue exists would vanish.
        try:
            broker.declare_queue(queue_name, ensure=True)
        except ConnectionClosed as error:
            raise BrokerUnavailable(f"RabbitMQ is unreachable: {error}") from None

    def _send(self, broker, channel, batch):
        properties = pika.BasicProperties(delivery_mode=2)
        for message in batch:
            broker.emit_before("enqueue", message, None)
            channel.publish(message.queue_name, message.encode(), properties)
        channel.wait()  # raises NotConfirmed (an AMQPError): sent again below, or left in the outbox
        for message in batch:
            broker.emit_after("enqueue", message, None)

    def _call(self, action):
        with self._lock:
            for attempt in (1, 2):
                try:
                    return action(self._channel())
                except (AMQPError, OSError) as error:
                    self.close()
                    if attempt == 2:
                        raise BrokerUnavailable(f"RabbitMQ is unreachable: {error!r}") from None
                    logger.warning("RabbitMQ connection failed (%r); reconnecting once", error)


publisher = Publisher(
    url=settings.RABBITMQ_URL,
    timeout=settings.BROKER_TIMEOUT_S,
    batch_size=settings.PUBLISH_BATCH_SIZE,
)
