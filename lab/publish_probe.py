"""python -m lab publish-probe: what RabbitMQ says of a publish through a
quorum queue's leader failover, in an AMQP transaction and with publisher
confirms, against what the queue holds afterwards.

On the lab's own three-node cluster (lab/rabbit_nodes.py): a quorum queue
led by the first node, that node stopped and started again (as `lab
cluster` does first), then, for each mode, messages published through the
queue's leader until it is SIGKILLed and, from then on, through the first
node, for a few seconds; the killed node is started again, and the queue
counted with no consumer. A message RabbitMQ said it took (commit-ok, or an
ack) must be in the queue; one it refused (a nack, a broken transaction)
is the publisher's to send again.

Found while chasing lost jobs in `lab cluster` (docs/scaling.md): with
transactions, every message committed after the kill was missing.
"""

import time

import pika
from pika.exceptions import AMQPError

from actors.confirms import ConfirmedChannel

from .rabbit_nodes import LabCluster

PERSISTENT = pika.BasicProperties(delivery_mode=2)
AFTER_KILL_S = 6


class Transactional:
    name = "AMQP transaction"

    def __init__(self, connection):
        self.channel = connection.channel()
        self.channel.tx_select()

    def send(self, queue, body):
        self.channel.basic_publish("", queue, body, PERSISTENT)
        self.channel.tx_commit()


class Confirmed:
    name = "publisher confirms"

    def __init__(self, connection):
        self.channel = ConfirmedChannel(connection.channel(), timeout=5)

    def send(self, queue, body):
        self.channel.publish(queue, body, PERSISTENT)
        self.channel.wait()


def _probe(cluster, mode, log):
    """Returns (taken, refused, held): messages RabbitMQ said it took, that
    it refused, and that the queue holds."""
    queue = f"probe_{mode.__name__.lower()}"
    first = cluster.nodes[0]
    with pika.BlockingConnection(pika.URLParameters(first.url)) as connection:
        connection.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    leader = cluster.queue_home(queue)
    if leader is first:  # the first node must be a follower: it is where publishing goes on
        first.stop()
        first.start()
        first.wait_up()
        leader = cluster.queue_home(queue)
    taken, refused, number = 0, 0, 0

    def publish(node, seconds):
        nonlocal taken, refused, number
        until = time.monotonic() + seconds
        publisher = None
        while time.monotonic() < until:
            try:
                if publisher is None:
                    publisher = mode(pika.BlockingConnection(pika.URLParameters(node.url)))
                publisher.send(queue, str(number).encode())
                taken += 1
            except AMQPError:
                refused += 1
                publisher = None  # a broken channel: a new connection, as a relay would
                time.sleep(0.05)
            number += 1
            time.sleep(0.02)

    log(f"{mode.name}: publishing through {leader.name}, which leads {queue}")
    publish(leader, 2)
    leader.kill()
    log(f"{mode.name}: {leader.name} SIGKILLed; publishing through {first.name} for {AFTER_KILL_S} s")
    publish(first, AFTER_KILL_S)
    leader.start()
    leader.wait_up()
    time.sleep(2)
    with pika.BlockingConnection(pika.URLParameters(first.url)) as connection:
        held = connection.channel().queue_declare(queue, passive=True).method.message_count
    return taken, refused, held


def run_probe(log=print):
    """Returns (report lines, passed): passed when confirms lost nothing."""
    cluster = LabCluster(log=log)
    rows = []
    try:
        cluster.start()
        for mode in (Transactional, Confirmed):
            rows.append((mode.name, *_probe(cluster, mode, log)))
    finally:
        cluster.destroy()
    lines = ["", f"{'mode':<20}{'taken (ok/ack)':>16}{'refused':>9}{'in the queue':>14}{'lost':>6}"]
    for name, taken, refused, held in rows:
        lines.append(f"{name:<20}{taken:>16}{refused:>9}{held:>14}{max(0, taken - held):>6}")
    confirmed = rows[-1]
    return lines, confirmed[3] >= confirmed[1]
