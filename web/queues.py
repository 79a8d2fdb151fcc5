"""``GET /api/v1/queues``: depths, consumers and rates from RabbitMQ, dead
letters and the outbox backlog from PostgreSQL (``ops.queues``)."""

from ops import queues


class QueuesResource:
    def on_get(self, req, resp):
        resp.media = queues.overview()
