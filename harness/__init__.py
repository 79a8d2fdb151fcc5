"""The process harness shared by the tests, the lab and the benchmark: start
the real gunicorn and ``dramatiq`` on their own database and queues, watch
them, kill them, and look at RabbitMQ as a user would."""

from .processes import BIN, ROOT, Process, free_port, wait_for
from .rabbitmq import consumer_count, delete_queues, publish_raw, purge_queue, queue_depth, queue_state
from .stack import Stack, database_url

__all__ = [
    "BIN", "ROOT", "Process", "Stack", "consumer_count", "database_url", "delete_queues", "free_port",
    "publish_raw", "purge_queue", "queue_depth", "queue_state", "wait_for",
]
