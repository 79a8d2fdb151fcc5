"""The queues as QUEUE_TYPE declares them, on the machine's RabbitMQ: the
broker subclass and the private Dramatiq methods it overrides, the broker's
delivery limit, a queue of the other type refused at start-up naming the
command, and the migration that moves every message."""

import inspect
import os
import subprocess
import sys

import pika
import pytest
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker

import settings
from actors import topology
from actors.broker import QueueArgumentsBroker
from harness import ROOT, Stack, delete_queues, wait_for

MIGRATE = "python -m actors.topology migrate"
PREFIX = settings.STACK_PREFIX


def channel():
    return pika.BlockingConnection(pika.URLParameters(settings.RABBITMQ_URL)).channel()


def declared_as(name, queue_type):
    """Does ``name`` exist declared as ``queue_type`` (with our arguments)?"""
    arguments = topology.arguments(name, queue_type=queue_type, max_deliveries=settings.MAX_DELIVERIES)
    try:
        channel().queue_declare(queue=name, durable=True, passive=False, arguments=arguments)
        return True
    except pika.exceptions.ChannelClosedByBroker as error:
        assert error.reply_code == 406, error
        return False


def exists(name):
    try:
        channel().queue_declare(queue=name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False


def topology_command(command, queue_name, queue_type):
    env = {**os.environ, "QUEUE_NAME": queue_name, "QUEUE_TYPE": queue_type}
    return subprocess.run([sys.executable, "-m", "actors.topology", command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def forget(queue_name):
    delete_queues(queue_name)
    ch = channel()
    for name in topology.queue_names(queue_name):
        ch.queue_delete(queue=f"{name}.migrating")


@pytest.fixture
def quorum(monkeypatch):
    monkeypatch.setattr(settings, "QUEUE_TYPE", "quorum")


# --- Dramatiq's private API, reached in actors/broker.py only -------------------


def test_the_private_dramatiq_methods_actors_broker_overrides_are_still_there():
    why = "Dramatiq changed a private API that actors/broker.py overrides: adapt that file"
    ensure = inspect.getsource(RabbitmqBroker._ensure_queue)
    for method in ("_declare_queue", "_declare_dq_queue", "_declare_xq_queue"):
        assert callable(getattr(RabbitmqBroker, method, None)), why
        assert f"self.{method}(canonical_queue_name)" in ensure, why
        assert list(inspect.signature(getattr(RabbitmqBroker, method)).parameters) == ["self", "queue_name"], why
    assert "def declare_queue(self, queue_name: str, *, ensure: bool = False)" in inspect.getsource(
        RabbitmqBroker.declare_queue), why


def test_classic_queues_get_exactly_dramatiqs_own_arguments():
    """An existing classic deployment that sets QUEUE_TYPE=classic sees no change."""
    dramatiq_broker = RabbitmqBroker(url=settings.RABBITMQ_URL)
    for name in ("q", "q.DQ"):
        assert topology.arguments(name, queue_type="classic", max_deliveries=3) == \
            dramatiq_broker._build_queue_arguments("q")
    assert topology.arguments("q.XQ", queue_type="classic", max_deliveries=3) == {
        "x-message-ttl": 86400000 * 7}


def test_quorum_arguments():
    work = topology.arguments("q", queue_type="quorum", max_deliveries=3)
    assert work == {
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q.XQ", "x-queue-type": "quorum",
        "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish", "x-delivery-limit": 4}
    delay = topology.arguments("q.DQ", queue_type="quorum", max_deliveries=3)
    assert "x-delivery-limit" not in delay and delay["x-queue-type"] == "quorum"
    assert topology.arguments("q.XQ", queue_type="quorum", max_deliveries=3)["x-queue-type"] == "quorum"
    assert "x-delivery-limit" not in topology.arguments("q", queue_type="quorum", max_deliveries=0)


def test_the_broker_declares_quorum_queues_whose_delivery_limit_is_the_backstop(quorum):
    queue = f"{PREFIX}test_quorum_limit"
    forget(queue)
    broker = QueueArgumentsBroker(url=settings.RABBITMQ_URL)
    try:
        broker.declare_queue(queue, ensure=True)
        for name in topology.queue_names(queue):
            assert declared_as(name, "quorum") and not declared_as(name, "classic"), name
        message = Message(queue_name=queue, actor_name="a", args=(), kwargs={}, options={})
        ch = channel()
        ch.basic_publish("", queue, message.encode(), pika.BasicProperties(delivery_mode=2))
        counts = []
        # Never acked: each consumer that closes hands it back, until the
        # broker's limit (MAX_DELIVERIES + 1 redeliveries) dead-letters it.
        for _ in range(settings.MAX_DELIVERIES + 3):
            consumer = channel()
            consumer.basic_qos(prefetch_count=1)
            method, properties, _ = next(consumer.consume(queue, inactivity_timeout=1))
            consumer.connection.close()
            if method is None:
                break
            counts.append((properties.headers or {}).get("x-delivery-count"))
        assert counts == [None, *range(1, settings.MAX_DELIVERIES + 2)]
        dead = wait_for(lambda: channel().queue_declare(f"{queue}.XQ", passive=True).method.message_count,
                        timeout=5, what="the dead letter")
        assert dead == 1
    finally:
        broker.close()
        forget(queue)


# --- A queue of the other type: a start-up error naming the command --------------


def test_a_queue_of_the_other_type_stops_the_worker_and_the_api_at_start_naming_the_command():
    with Stack("topology_mismatch", env={"QUEUE_TYPE": "quorum"}, processes=1, threads=1) as stack:
        stack.reset()
        done = topology_command("declare", stack.queue_name, "classic")
        assert done.returncode == 0, done.stderr
        refused = topology_command("declare", stack.queue_name, "quorum")
        assert refused.returncode == 1 and MIGRATE in refused.stderr and "x-" in refused.stderr

        stack.start_workers()
        wait_for(lambda: not stack.workers.alive, timeout=60, what="dramatiq to exit over the queue type")
        assert stack.workers.popen.returncode != 0
        assert MIGRATE in stack.workers.log_path.read_text()

        with pytest.raises(RuntimeError, match="gunicorn exited") as failed:
            stack.start_api()
        assert MIGRATE in str(failed.value) or MIGRATE in stack.api.log_path.read_text()
        assert declared_as(stack.queue_name, "classic")  # refused, not changed


# --- Migration -------------------------------------------------------------------


def _publish(queue, bodies, headers=False):
    ch = channel()
    ch.tx_select()
    for number, body in enumerate(bodies):
        ch.basic_publish("", queue, body, pika.BasicProperties(
            delivery_mode=2, headers={"n": number} if headers else None, message_id=body.decode()))
    ch.tx_commit()


def _drain(queue):
    ch, messages = channel(), []
    while True:
        method, properties, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return messages
        headers = {k: v for k, v in (properties.headers or {}).items() if k != "x-delivery-count"}  # the new queue's
        messages.append((body, headers, properties.delivery_mode, properties.message_id))


def test_migrate_moves_every_message_of_a_classic_queue_into_the_quorum_one():
    queue = f"{PREFIX}test_migrate"
    forget(queue)
    assert topology_command("declare", queue, "classic").returncode == 0
    work = [f"w{i}".encode() for i in range(1234)]
    _publish(queue, work, headers=True)
    _publish(f"{queue}.DQ", [b"d0", b"d1", b"d2"])
    _publish(f"{queue}.XQ", [f"x{i}".encode() for i in range(5)])

    # A consumer on the queue: refused, nothing touched.
    consumer = channel()
    consumer.basic_consume(queue, lambda *a: None)
    refused = topology_command("migrate", queue, "quorum")
    assert refused.returncode == 1 and "stop the workers first" in refused.stderr
    consumer.connection.close()
    assert declared_as(queue, "classic")

    migrated = topology_command("migrate", queue, "quorum")
    assert migrated.returncode == 0, migrated.stderr
    assert "1242 messages moved" in migrated.stdout
    for name in topology.queue_names(queue):
        assert declared_as(name, "quorum") and not declared_as(name, "classic"), name
        assert not exists(f"{name}.migrating")
    moved = _drain(queue)
    assert sorted(body for body, *_ in moved) == sorted(work)
    assert all(headers == {"n": int(body[1:])} and mode == 2 and mid == body.decode()
               for body, headers, mode, mid in moved)
    assert sorted(body for body, *_ in _drain(f"{queue}.DQ")) == [b"d0", b"d1", b"d2"]
    assert len(_drain(f"{queue}.XQ")) == 5
    forget(queue)


def test_a_migration_that_stopped_half_way_picks_up_its_holding_queue():
    queue = f"{PREFIX}test_migrate_resume"
    forget(queue)
    # As a migration killed after deleting the old queue leaves it:
    # the messages in the holding queue, no work queue.
    ch = channel()
    ch.queue_declare(f"{queue}.migrating", durable=True, arguments={"x-queue-type": "quorum"})
    _publish(f"{queue}.migrating", [b"a", b"b", b"c"])
    migrated = topology_command("migrate", queue, "quorum")
    assert migrated.returncode == 0, migrated.stderr
    assert sorted(body for body, *_ in _drain(queue)) == [b"a", b"b", b"c"]
    assert not exists(f"{queue}.migrating")
    forget(queue)
