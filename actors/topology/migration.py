"""Re-declaring queues whose type or arguments changed, without losing a
message.

RabbitMQ cannot change a queue in place, so each queue declared otherwise
is drained into a holding queue ``<name>.migrating`` (of the new type),
deleted, declared anew, and the holding queue drained back into it. A move
has a batch confirmed by the destination (publisher confirms, see
actors/confirms.py for why not a transaction) before it acks that batch in
the source, so
a migration killed at any point loses nothing: run it again, it picks up
where it stopped (a batch may then be there twice, which idempotent units
absorb). A queue is deleted only once empty, so a message that slipped
in during the move is moved too.

Stop the API, the relay and the workers first: a consumer makes the
migration refuse, and a publisher could hit the moment the queue does not
exist (such a message is unroutable, and dropped unless published with
``mandatory``).
"""

from pika.exceptions import ChannelClosedByBroker

import settings

from ..confirms import ConfirmedChannel
from . import configured_arguments, is_mismatch

BATCH = 500
IDLE_S = 0.5  # no message for this long: the source looks empty
MAX_PASSES = 5  # messages kept arriving: a publisher is running


class MigrationRefused(Exception):
    pass


def holding_queue(name):
    return f"{name}.migrating"


def migrate(connection, names, *, report=print):
    """Bring each queue of ``names`` to its configured declaration; returns
    how many messages the re-declared queues received."""
    for name in names:
        consumers = _consumers(connection, name)
        if consumers:
            raise MigrationRefused(f"{consumers} consumers on {name}: stop the workers first")
    return sum(_migrate(connection, name, report) for name in names)


def _migrate(connection, name, report):
    moved = 0
    holding = holding_queue(name)
    if not _declared_as_configured(connection, name):
        report(f"{name}: declared otherwise; moving its messages to {holding}")
        if not _exists(connection, holding):  # else left by a migration that stopped: keep it as it is
            _declare(connection, holding, {"x-queue-type": settings.QUEUE_TYPE})
        for _ in range(MAX_PASSES):
            _move(connection, name, holding, report)
            if _delete_if_empty(connection, name):
                break
        else:
            raise MigrationRefused(f"messages keep arriving in {name}: stop the API and the relay first")
        _declare(connection, name, configured_arguments(name))
        report(f"{name}: declared as a {settings.QUEUE_TYPE} queue")
    if _exists(connection, holding):
        moved += _move(connection, holding, name, report)
        if not _delete_if_empty(connection, holding):
            raise MigrationRefused(f"{holding} is not empty: run the migration again")
    return moved


def _declared_as_configured(connection, name):
    """Declares ``name`` as configured if it is missing; False if it exists
    declared otherwise."""
    try:
        _declare(connection, name, configured_arguments(name))
        return True
    except ChannelClosedByBroker as error:
        if is_mismatch(error):
            return False
        raise


def _declare(connection, name, arguments):
    channel = connection.channel()
    channel.queue_declare(queue=name, durable=True, arguments=arguments)
    channel.close()


def _exists(connection, name):
    try:
        channel = connection.channel()
        channel.queue_declare(queue=name, passive=True)
        channel.close()
        return True
    except ChannelClosedByBroker as error:
        if error.reply_code == 404:
            return False
        raise


def _consumers(connection, name):
    try:
        channel = connection.channel()
        result = channel.queue_declare(queue=name, passive=True)
        channel.close()
        return result.method.consumer_count
    except ChannelClosedByBroker as error:
        if error.reply_code == 404:
            return 0
        raise


def _delete_if_empty(connection, name):
    """Delete ``name`` if it holds no message. Quorum queues refuse
    ``if_empty`` (and close the connection over it), so its depth is read
    first: a message published in between would be deleted with the queue,
    which is why publishers must be stopped (and why this says so if one was)."""
    channel = connection.channel()
    if channel.queue_declare(queue=name, passive=True).method.message_count:
        channel.close()
        return False
    deleted = channel.queue_delete(queue=name).method.message_count
    channel.close()
    if deleted:
        raise MigrationRefused(
            f"{deleted} messages reached {name} as it was deleted, and are lost: stop every publisher first"
        )
    return True


def _move(connection, source, destination, report):
    """Move every message of ``source`` to ``destination``, bodies and
    properties unchanged (but a quorum queue's delivery count), a confirmed
    batch at a time."""
    reading = connection.channel()
    reading.basic_qos(prefetch_count=BATCH)
    writing = ConfirmedChannel(connection.channel(), timeout=settings.BROKER_TIMEOUT_S)
    moved, pending_tag, pending = 0, None, 0
    for method, properties, body in reading.consume(source, inactivity_timeout=IDLE_S):
        if method is not None:
            if properties.headers:  # the old queue's count of deliveries: the new queue counts anew
                properties.headers.pop("x-delivery-count", None)
            writing.publish(destination, body, properties)
            pending_tag, pending = method.delivery_tag, pending + 1
        if pending and (pending == BATCH or method is None):
            writing.wait()  # the batch is in the destination...
            reading.basic_ack(pending_tag, multiple=True)  # ...before it leaves the source
            moved += pending
            pending = 0
            report(f"    {source} → {destination}: {moved} messages")
        if method is None:
            break
    reading.cancel()
    reading.close()
    writing.channel.close()
    return moved
