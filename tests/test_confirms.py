"""Publisher confirms against the real RabbitMQ (actors/confirms.py): a
batch counts once every message of it is acked; a message RabbitMQ refuses
fails its batch, and the relay then keeps the outbox rows instead of
deleting them as sent. (AMQP transactions, used before, reported such
messages committed on a quorum queue changing leader: see
tests/test_cluster.py and docs/scaling.md.)"""

import time

import pika
import pytest

import settings
from actors.confirms import ConfirmedChannel, NotConfirmed
from actors.publishing import BrokerUnavailable, Publisher
from actors.relay import Relay
from db import Outbox
from harness import delete_queues, queue_depth

PERSISTENT = pika.BasicProperties(delivery_mode=2)


@pytest.fixture
def connection():
    connection = pika.BlockingConnection(pika.URLParameters(settings.RABBITMQ_URL))
    yield connection
    if connection.is_open:
        connection.close()


def test_a_batch_counts_once_every_message_is_confirmed(connection):
    queue = f"{settings.QUEUE_NAME}_confirmed"
    connection.channel().queue_declare(queue, durable=True)
    try:
        channel = ConfirmedChannel(connection.channel(), timeout=5)
        for batch in (range(3), range(3, 1003)):  # the second batch crosses many confirms, some "multiple"
            for n in batch:
                channel.publish(queue, str(n).encode(), PERSISTENT)
            channel.wait()
            assert not channel.unsettled
        assert queue_depth(queue) == 1003
        check = connection.channel()
        assert [int(check.basic_get(queue, auto_ack=True)[2]) for _ in range(5)] == [0, 1, 2, 3, 4]
    finally:
        delete_queues(queue)


def test_a_message_rabbitmq_refuses_fails_its_batch(connection):
    """A full queue that rejects publishes nacks them: the batch raises,
    naming how many were refused."""
    queue = f"{settings.QUEUE_NAME}_refusing"
    connection.channel().queue_declare(
        queue, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    try:
        channel = ConfirmedChannel(connection.channel(), timeout=5)
        for n in range(3):
            channel.publish(queue, str(n).encode(), PERSISTENT)
        with pytest.raises(NotConfirmed, match="refused 2 messages"):
            channel.wait()
        assert queue_depth(queue) == 1
    finally:
        delete_queues(queue)


def test_the_relay_keeps_the_rows_of_a_refused_batch_and_sends_them_later(db, connection, monkeypatch):
    """A queue that refuses every message (a classic one at its max-length
    with reject-publish: a quorum queue enforces the limit only roughly)
    nacks the batch, on the relay's retry too: the rows stay in the outbox
    until RabbitMQ takes them."""
    queue = f"{settings.QUEUE_NAME}_refusing_relay"
    refusing = {"x-max-length": 0, "x-overflow": "reject-publish"}
    connection.channel().queue_declare(queue, durable=True, arguments=refusing)
    # The queue is the test's own, declared above: not as QUEUE_TYPE says.
    monkeypatch.setattr(Publisher, "_declare", lambda self, broker, name: None)
    for n in range(5):
        Outbox.add(queue, "add_followers", {"job_id": n, "unit": 0})
    publisher = Publisher(url=settings.RABBITMQ_URL, timeout=5, batch_size=100)
    relay = Relay(publisher=publisher, batch_size=100, sweep_interval=60)
    try:
        with pytest.raises(BrokerUnavailable, match="refused 5 messages"):
            relay.drain()
        assert Outbox.backlog()[0] == 5 and queue_depth(queue) == 0
        channel = connection.channel()
        channel.queue_delete(queue)
        channel.queue_declare(queue, durable=True)  # room again
        assert relay.drain() == 5
        assert Outbox.backlog()[0] == 0 and queue_depth(queue) == 5
    finally:
        publisher.close()
        delete_queues(queue)


def test_a_channel_the_broker_closes_fails_its_batch_at_once(connection):
    """RabbitMQ closes a channel on a message it cannot take (here an
    expiration that is not a number): the batch fails then, not after the
    whole timeout."""
    queue = f"{settings.QUEUE_NAME}_closing"
    connection.channel().queue_declare(queue, durable=True)
    try:
        channel = ConfirmedChannel(connection.channel(), timeout=30)
        channel.publish(queue, b"x", pika.BasicProperties(delivery_mode=2, expiration="not a number"))
        started = time.monotonic()
        with pytest.raises(NotConfirmed, match="closed the channel"):
            channel.wait()
        assert time.monotonic() - started < 10
    finally:
        delete_queues(queue)
