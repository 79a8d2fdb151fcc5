"""Dramatiq's RabbitMQ broker, declaring our queues: quorum or classic.

Dramatiq declares classic queues only, and its public API has no hook for
queue arguments (quorum support was declined upstream: PRs #869, #871).
This module is the one place that reaches into Dramatiq's private API:
``RabbitmqBroker._declare_queue``, ``._declare_dq_queue`` and
``._declare_xq_queue``, each Dramatiq's one ``queue_declare`` of a queue.
(Overriding ``_build_queue_arguments`` alone would not do: Dramatiq calls it
with the same name for the work and the delay queue, which must differ in
their delivery limit, and never for the dead-letter queue.)
tests/test_topology.py fails loudly, naming this file, if Dramatiq changes
any of them.
"""

from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, xq_name
from dramatiq.errors import ConnectionClosed

from . import topology


class QueueArgumentsBroker(RabbitmqBroker):
    """A RabbitmqBroker whose queues are declared as ``actors.topology``
    says (``QUEUE_TYPE``, the broker's delivery limit).

    A queue declared otherwise raises ``topology.QueueMismatch`` (naming
    the migration command) instead of Dramatiq's bare ``ConnectionClosed``.
    """

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
