"""DeliveryLimit's parts: the gate that runs suspect (redelivered) messages
alone, and its one reach into Dramatiq's internals, against a real worker
consuming from the real RabbitMQ, so that a Dramatiq upgrade that moves
them fails here rather than turning the ack flush into a silent no-op."""

import threading
import time
from types import SimpleNamespace

import pika
import pytest
from dramatiq import Worker
from dramatiq.brokers.rabbitmq import RabbitmqBroker

import settings
from actors.delivery_limit import DeliveryLimit, DramatiqInternalsChanged, _Gate, consumer_connections
from harness import delete_queues, wait_for


def test_a_suspect_waits_for_running_messages_and_runs_alone():
    gate, log = _Gate(), []
    gate.acquire_shared()  # a message already running

    def suspect():
        gate.acquire_exclusive()
        log.append("suspect starts")
        time.sleep(0.05)
        log.append("suspect ends")
        gate.release(True)

    def newcomer():
        gate.acquire_shared()
        log.append("newcomer runs")
        gate.release(False)

    waiting = threading.Thread(target=suspect)
    waiting.start()
    time.sleep(0.05)
    late = threading.Thread(target=newcomer)  # arrives while the suspect waits: goes after it
    late.start()
    time.sleep(0.05)
    assert log == []
    log.append("running message ends")
    gate.release(False)
    waiting.join(2)
    late.join(2)
    assert log == ["running message ends", "suspect starts", "suspect ends", "newcomer runs"]


def test_the_flush_reaches_the_pika_connection_of_a_real_workers_consumer():
    queue = f"{settings.STACK_PREFIX}test_delivery_limit"
    limit = DeliveryLimit(max_deliveries=3)
    broker = RabbitmqBroker(url=settings.RABBITMQ_URL, middleware=[limit])
    broker.declare_queue(queue)
    worker = Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        assert limit.worker is worker  # after_worker_boot ran, and consumer_connections did not raise there
        # One consumer for the queue, one for its delay queue (.DQ), each connected in its own time.
        wait_for(lambda: len(consumer_connections(worker)) == 2, timeout=10, what="the consumers' connections")
        connections = consumer_connections(worker)
        assert all(isinstance(connection, pika.BlockingConnection) for connection in connections)
        ran = threading.Event()
        connections[0].add_callback_threadsafe(ran.set)
        assert ran.wait(5), "pika never ran a callback queued on the consumer's connection"
        limit._flush_acks(timeout=5)
    finally:
        worker.stop()
        broker.close()
        delete_queues(queue)


@pytest.mark.parametrize(
    "worker, missing",
    [
        (object(), "no dict 'consumers'"),
        (SimpleNamespace(consumers={"q": object()}), "no 'consumer'"),
        (SimpleNamespace(consumers={"q": SimpleNamespace(consumer=object())}), "no pika 'connection'"),
    ],
)
def test_internals_that_moved_raise_a_clear_error(worker, missing):
    with pytest.raises(DramatiqInternalsChanged, match=missing) as error:
        consumer_connections(worker)
    assert "actors/delivery_limit.py" in str(error.value)


def test_a_consumer_not_connected_yet_has_nothing_to_flush():
    assert consumer_connections(SimpleNamespace(consumers={"q": SimpleNamespace(consumer=None)})) == []
