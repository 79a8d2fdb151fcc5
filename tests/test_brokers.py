"""Several RabbitMQ nodes in RABBITMQ_URL: our own connections go to a node
that answers, another one first after a failure; and DeliveryLimit counts
starts, not deliveries, whatever the queue type."""

import socket

import pika
import pytest
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.middleware import SkipMessage

import settings
from actors import connection
from actors.delivery_limit import DeliveryLimit
from actors.publishing import BrokerUnavailable, Publisher
from db import DeliveryAttempt
from harness import delete_queues, free_port, queue_depth


def closed_url():
    return f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"


class Refused(pika.exceptions.AMQPConnectionError):
    pass


@pytest.fixture
def tried(monkeypatch):
    """Which nodes connect() tries, in order; the ports in ``dead`` refuse."""
    record = {"nodes": [], "dead": set()}

    def fake_connection(parameters):
        record["nodes"].append(parameters.port)
        if parameters.port in record["dead"]:
            raise Refused(f"port {parameters.port} refused")
        return f"connected to {parameters.port}"

    monkeypatch.setattr(connection.pika, "BlockingConnection", fake_connection)
    return record


def test_node_urls_split_on_semicolons_and_refuse_none():
    assert connection.node_urls(" amqp://a:1/%2F ;amqp://b:2/%2F; ") == ["amqp://a:1/%2F", "amqp://b:2/%2F"]
    with pytest.raises(ValueError):
        connection.node_urls(" ; ")


def test_connect_takes_the_first_node_that_answers_and_starts_with_another_next_time(tried):
    setting = "amqp://h:5001/%2F;amqp://h:5002/%2F;amqp://h:5003/%2F"
    tried["dead"] = {5001}
    assert connection.connect(setting) == "connected to 5002"
    assert tried["nodes"] == [5001, 5002]
    tried["nodes"].clear()
    # The next connection (one is only re-opened after a failure) starts elsewhere.
    assert connection.connect(setting) == "connected to 5002"
    assert tried["nodes"] == [5002]
    tried["nodes"].clear()
    assert connection.connect(setting) == "connected to 5003"
    assert connection.connect(setting) == "connected to 5002"  # 5001 is still dead: skipped


def test_connect_names_every_node_when_none_answers(tried):
    setting = "amqp://h:5011/%2F;amqp://h:5012/%2F"
    tried["dead"] = {5011, 5012}
    with pytest.raises(pika.exceptions.AMQPConnectionError, match="5011.*5012|5012.*5011"):
        connection.connect(setting)


def test_the_publisher_and_the_harness_reach_the_node_that_answers(monkeypatch):
    setting = f"{closed_url()};{settings.RABBITMQ_URL};{closed_url()}"
    monkeypatch.setattr(settings, "RABBITMQ_URL", setting)
    queue = f"{settings.STACK_PREFIX}test_several_nodes"
    delete_queues(queue, url=setting)
    publisher = Publisher(url=setting, timeout=2, batch_size=10)
    try:
        for _ in range(4):  # whichever node each new connection starts with
            publisher.ping()
            publisher.close()
        messages = [Message(queue_name=queue, actor_name="a", args=(), kwargs={}, options={}) for _ in range(25)]
        assert publisher.publish(messages) == 25
        assert queue_depth(queue, url=setting) == 25
    finally:
        publisher.close()
        delete_queues(queue, url=setting)


def test_a_node_that_takes_the_connection_and_never_answers_is_passed_over(monkeypatch):
    """A hung RabbitMQ (or another server on its port) accepts TCP and says
    nothing: pika gives up on the handshake after the timeout with an error
    that is no AMQPError. Alone, it makes the publisher's BrokerUnavailable
    (/health: degraded); beside a live node, the live node is used."""
    live_url = settings.RABBITMQ_URL
    silent = socket.socket()  # the kernel accepts; nobody ever answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    silent_url = f"amqp://guest:guest@127.0.0.1:{silent.getsockname()[1]}/%2F"
    try:
        monkeypatch.setattr(settings, "RABBITMQ_URL", silent_url)
        publisher = Publisher(url=silent_url, timeout=1, batch_size=10)
        with pytest.raises(BrokerUnavailable, match="no RabbitMQ node answered"):
            publisher.ping()
        both = f"{silent_url};{live_url}"
        monkeypatch.setattr(settings, "RABBITMQ_URL", both)
        publisher = Publisher(url=both, timeout=1, batch_size=10)
        for _ in range(2):  # whichever node each new connection starts with
            publisher.ping()
            publisher.close()
    finally:
        silent.close()


# --- DeliveryLimit counts starts, on either queue type ----------------------------


def suspect():
    message = MessageProxy(Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))
    message.redelivered = True
    return message


def test_the_starts_of_a_redelivered_message_are_counted_in_postgresql(db):
    limit = DeliveryLimit(max_deliveries=3)
    message = suspect()
    for _ in range(2):
        limit.before_process_message(None, message)
        limit.after_ack(None, message)
    assert DeliveryAttempt.get_by_id(message.message_id).starts == 3
    with pytest.raises(SkipMessage, match="started 3 times without finishing"):
        limit.before_process_message(None, message)
    limit.after_nack(None, message)
    assert message.failed
