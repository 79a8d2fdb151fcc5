"""The broker and the actors. ``dramatiq actors`` imports this package.

The broker is set before any actor is declared (Dramatiq binds actors to the
broker current at declaration). Nothing connects at import time: connections
open in each process after the fork, on first use.
"""

import dramatiq
from dramatiq.middleware import Retries, ShutdownNotifications, TimeLimit
from dramatiq.middleware.prometheus import Prometheus

import settings

from .broker import QueueArgumentsBroker
from .connection import node_urls
from .dead_letters import DeadLetters
from .delivery_limit import DeliveryLimit
from .hard_time_limit import HardTimeLimit
from .heartbeat import Heartbeat
from .log_level import LogLevel
from .observe import UnitLog
from .relay import OutboxRelay, relay
from .topology import QueueCheck


def _middleware():
    # Passing a list replaces Dramatiq's defaults: we keep what we need.
    # before_* hooks run in this order, after_* hooks in reverse.
    return [
        Heartbeat(interval=settings.HEARTBEAT_INTERVAL_S),  # first: it counts every message, skipped ones too
        # Opt-in in Dramatiq: message counts, errors, retries, durations on :9191.
        *([Prometheus()] if settings.WORKER_METRICS else []),
        QueueCheck(),
        DeadLetters(),
        DeliveryLimit(max_deliveries=settings.MAX_DELIVERIES),
        UnitLog(json_lines=settings.LOG_FORMAT == "json"),
        HardTimeLimit(time_limit=settings.HARD_TIME_LIMIT_MS),
        TimeLimit(time_limit=settings.TIME_LIMIT_MS),
        ShutdownNotifications(),
        Retries(
            max_retries=settings.MAX_RETRIES,
            min_backoff=settings.MIN_BACKOFF_MS,
            max_backoff=settings.MAX_BACKOFF_MS,
        ),
        OutboxRelay(relay=relay),
        # Last, so that its after_process_boot runs first (after_* in reverse).
        LogLevel(level=settings.LOG_LEVEL),
    ]


# Declares the queues as QUEUE_TYPE says; RABBITMQ_URL may name several
# nodes (`;`): Dramatiq connects to the first that answers.
broker = QueueArgumentsBroker(
    url=node_urls(settings.RABBITMQ_URL),
    # Retries re-publish a failed message; a confirm makes sure that copy
    # exists before the original is acked, or a retry could be lost.
    confirm_delivery=True,
    middleware=_middleware(),
)
dramatiq.set_broker(broker)

from .add_followers import add_followers, split_job  # noqa: E402
from .publishing import BrokerUnavailable, publisher  # noqa: E402

__all__ = ["broker", "add_followers", "split_job", "publisher", "relay", "BrokerUnavailable"]
