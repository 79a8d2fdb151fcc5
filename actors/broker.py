"""Dramatiq's RabbitMQ broker, declaring our queues (quorum or classic) and
telling the middleware how many times the broker delivered a message.

Dramatiq declares classic queues only, and its public API has no hook for
queue arguments (quorum support was declined upstream: PRs #869, #871).
This module is the one place that reaches into Dramatiq's private API, each
reach a method of its own; tests/test_topology.py fails loudly, naming this
file, if Dramatiq 2.2 changes any of them:

- ``RabbitmqBroker._declare_queue``, ``._declare_dq_queue`` and
  ``._declare_xq_queue`` (each Dramatiq's one ``queue_declare``; overriding
  ``_build_queue_arguments`` alone would not do: it is called with the same
  name for the work and delay queues, and never for the dead-letter queue);
- ``_RabbitmqConsumer`` and its ``iterator`` of ``(method, properties,
  body)``: Dramatiq drops the properties, where quorum queues put
  ``x-delivery-count``.
"""

from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer
from dramatiq.common import dq_name, xq_name
from dramatiq.errors import ConnectionClosed

from . import topology


class _DeliveryCountingConsumer(_RabbitmqConsumer):
    """Sets ``delivery_count`` on each message: the broker's count of its
    earlier deliveries (``x-delivery-count``: quorum queues only; None on a
    first delivery and on classic queues)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._headers = None
        self.iterator = self._noting_headers(self.iterator)

    def _noting_headers(self, deliveries):
        for method, properties, body in deliveries:
            self._headers = getattr(properties, "headers", None)
            yield method, properties, body

    def __next__(self):
        message = super().__next__()  # takes exactly one delivery from self.iterator
        if message is not None:
            count = (self._headers or {}).get("x-delivery-count")  # pika's long: an int subclass
            message.delivery_count = int(count) if isinstance(count, int) and not isinstance(count, bool) else None
        return message


class QueueArgumentsBroker(RabbitmqBroker):
    """A RabbitmqBroker whose queues are declared as ``actors.topology``
    says (``QUEUE_TYPE``, the broker's delivery limit), and whose consumers
    report the broker's delivery count.

    A queue declared otherwise raises ``topology.QueueMismatch`` (naming
    the migration command) instead of Dramatiq's bare ``ConnectionClosed``.
    """

    @property
    def consumer_class(self):
        return _DeliveryCountingConsumer

    def declare_queue(self, queue_name, *, ensure=False):
        try:
            return super().declare_queue(queue_name, ensure=ensure)
        except ConnectionClosed as error:
            if topology.is_mismatch(error.message):
                raise topology.mismatch(queue_name, error.message) from None
            raise

    def _declare_queue(self, queue_name):
        return self._declare(queue_name)

    def _declare_dq_queue(self, queue_name):
        return self._declare(dq_name(queue_name))

    def _declare_xq_queue(self, queue_name):
        return self._declare(xq_name(queue_name))

    def _declare(self, name):
        arguments = topology.configured_arguments(name)
        return self.channel.queue_declare(queue=name, durable=True, arguments=arguments)
