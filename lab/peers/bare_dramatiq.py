"""Peer 1, bare Dramatiq: the original's consumer as a Dramatiq actor
written the obvious way, on Dramatiq's defaults.

``dramatiq lab.peers.bare_dramatiq --processes P --threads T`` runs it;
``publish`` is its intake (``actor.send``, once per unit).

Its configuration and where it comes from:
- ``RabbitmqBroker(url=...)``: every other argument at its default, so
  Dramatiq's default middleware (AgeLimit, TimeLimit, ShutdownNotifications,
  Callbacks, Pipelines, Retries) and no publisher confirms
  (https://dramatiq.io/reference.html#dramatiq.brokers.rabbitmq.RabbitmqBroker).
- The actor's ``time_limit``: the soft limit the lab gives our workers
  (TIME_LIMIT_MS); Dramatiq has no hard one
  (https://dramatiq.io/guide.html#message-time-limits).
- Retries: Dramatiq's default count (20); only the backoff is scaled down,
  to the lab's MIN_BACKOFF_MS..MAX_BACKOFF_MS, as ours is, so that a
  scenario fits in seconds (https://dramatiq.io/guide.html#message-retries).

The lab adds two observers, as it does to our workers: ``CurrentMessage``
(Dramatiq's own, so the task can tell which attempt it is for the faults)
and ``DeliveryLog`` (a row per delivery). Neither changes what happens to a
message.
"""

import threading

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import AgeLimit, CurrentMessage, Middleware

import settings

from . import deliveries, work


class DeliveryLog(Middleware):
    """Records each delivery in ``peer_deliveries``. Added first, so its
    after hook runs last, once Retries has decided the message's fate."""

    def __init__(self):
        self.local = threading.local()

    def before_process_message(self, broker, message):
        user_id, followers_login, count, first = _unit(message.args)
        self.local.row = deliveries.started(message.message_id, user_id, followers_login, count, first,
                                            getattr(message, "redelivered", False))

    def after_process_message(self, broker, message, *, result=None, exception=None):
        outcome = "dead-lettered" if message.failed else "retrying" if exception is not None else "done"
        deliveries.ended(getattr(self.local, "row", None), outcome, exception)
        self.local.row = None

    def after_skip_message(self, broker, message):
        self.after_process_message(broker, message, exception=getattr(message, "_exception", None))


def _unit(args):
    args = list(args) + [None] * 4
    return args[0], args[1], args[2], args[3] or 0


broker = RabbitmqBroker(url=settings.RABBITMQ_URL)
broker.add_middleware(DeliveryLog(), before=AgeLimit)
broker.add_middleware(CurrentMessage())
dramatiq.set_broker(broker)


@dramatiq.actor(
    queue_name=settings.QUEUE_NAME,
    time_limit=settings.TIME_LIMIT_MS,
    min_backoff=settings.MIN_BACKOFF_MS,
    max_backoff=settings.MAX_BACKOFF_MS,
)
def add_followers(user_id, follower_login, count, first=0):
    """The original's message {userId, followerLogin, count}, plus the index
    of its first follower when a request is cut into several messages."""
    message = CurrentMessage.get_current_message()
    attempt = message.options.get("retries", 0) + 1
    work.add_followers(user_id, follower_login, count, first, attempt=attempt,
                       first_delivery=attempt == 1 and not getattr(message, "redelivered", False))


def publish(user_id, follower_login, units):
    """The intake: one ``send`` per unit, (first, count) each."""
    for first, count in units:
        add_followers.send(user_id, follower_login, count, first)
