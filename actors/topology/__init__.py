"""The service's queues, and the command that declares or migrates them
(as ``python -m db`` does the schema):

  python -m actors.topology declare   the work queue, its .DQ and .XQ, as QUEUE_TYPE says
                                      (exit 1, naming migrate, if one is declared otherwise)
  python -m actors.topology migrate   re-declare the queues declared otherwise (another type,
                                      other arguments), moving every message over: none is lost

With ``QUEUE_TYPE=quorum`` the three queues are quorum queues: replicated on
every node of the cluster (Raft), so a node lost loses no message and stops
no consumer for longer than an election. The work queue also gets a
delivery limit counted by the broker, one above ``MAX_DELIVERIES`` (our own
DeliveryLimit dead-letters first, with its reason; the broker's limit is the
backstop for a delivery our middleware never saw), and dead letters that
move at least once (``dead-letter-strategy: at-least-once`` with
``overflow: reject-publish``, RabbitMQ 3.10+): RabbitMQ keeps a dead letter
in the work queue until ``.XQ`` confirms it. The delay queue gets no
delivery limit: every delayed retry sits unacked in a consumer until its
time, so each worker restart counts as a delivery there.

RabbitMQ cannot change a queue's type or arguments in place: a queue
declared otherwise makes every declaration fail (406 PRECONDITION_FAILED),
which the processes turn into ``QueueMismatch``, naming ``migrate``.
"""

import logging

from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL
from dramatiq.common import dq_name, q_name, xq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Middleware
from pika.exceptions import AMQPChannelError, AMQPConnectionError, ChannelClosedByBroker

import settings

from ..connection import connect

logger = logging.getLogger(f"followers.{__name__}")

MIGRATE = "python -m actors.topology migrate"


class QueueMismatch(ConnectionClosed):
    """A queue exists declared otherwise (type or arguments) than this
    configuration declares it. A ``ConnectionClosed`` for Dramatiq and the
    publisher, which then refuse to use the broker, saying why: the worker
    exits at start-up, the API answers 503 until the queues are migrated."""


def queue_names(queue_name):
    """The work queue, its delay queue and its dead-letter queue."""
    return [queue_name, dq_name(queue_name), xq_name(queue_name)]


def arguments(name, *, queue_type, max_deliveries):
    """The ``x-`` arguments of the queue ``name`` (work, .DQ or .XQ)."""
    canonical = q_name(name)
    if name == xq_name(canonical):
        # Dramatiq's: dead letters expire head-first after a fixed time.
        declared = {"x-message-ttl": DEAD_MESSAGE_TTL}
    else:
        declared = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": xq_name(canonical)}
    if queue_type == "quorum":
        declared["x-queue-type"] = "quorum"
        if name != xq_name(canonical):
            declared["x-dead-letter-strategy"] = "at-least-once"
            declared["x-overflow"] = "reject-publish"  # at-least-once needs it
        if name == canonical and max_deliveries:
            declared["x-delivery-limit"] = max_deliveries + 1
    return declared


def configured_arguments(name):
    return arguments(name, queue_type=settings.QUEUE_TYPE, max_deliveries=settings.MAX_DELIVERIES)


def mismatch(name, error):
    return QueueMismatch(
        f"queue {name!r} exists declared otherwise than QUEUE_TYPE={settings.QUEUE_TYPE} "
        f"(MAX_DELIVERIES={settings.MAX_DELIVERIES}) declares it; RabbitMQ says: {error.reply_text}. "
        f"Run `{MIGRATE}` (with the API and the workers stopped) to re-declare it and move its messages."
    )


def is_mismatch(error):
    return isinstance(error, ChannelClosedByBroker) and error.reply_code == 406


def declare(connection, names):
    """Declare each queue as configured, on a channel of ``connection``;
    raises QueueMismatch for the first declared otherwise."""
    for name in names:
        channel = connection.channel()
        try:
            channel.queue_declare(queue=name, durable=True, arguments=configured_arguments(name))
        except ChannelClosedByBroker as error:
            if is_mismatch(error):
                raise mismatch(name, error) from None
            raise
        channel.close()


def check_at_start(queue_name):
    """For a process starting: declare its queues, raise QueueMismatch if
    one is declared otherwise. RabbitMQ unreachable is only a warning:
    the process starts anyway and connects once a node answers."""
    try:
        connection = connect(settings.RABBITMQ_URL, timeout=settings.BROKER_TIMEOUT_S)
    except AMQPConnectionError as error:
        logger.warning("could not check the queues at start-up: %s", error)
        return
    try:
        declare(connection, queue_names(queue_name))
    except (AMQPConnectionError, AMQPChannelError) as error:
        logger.warning("could not check the queues at start-up: %r", error)
    finally:
        if connection.is_open:
            connection.close()


class QueueCheck(Middleware):
    """Checks the worker's queues before it consumes, so that a queue
    declared otherwise stops the worker at start-up, naming the command,
    instead of every consumer retrying it every few seconds. (Dramatiq logs
    and ignores an exception in a hook: only SystemExit stops the process,
    with Dramatiq's code for a broker that failed at start-up, 3.)"""

    def before_worker_boot(self, broker, worker):
        for queue_name in sorted(broker.get_declared_queues()):
            try:
                check_at_start(queue_name)
            except QueueMismatch as error:
                logger.critical("%s", error.message)
                raise SystemExit(3) from None
