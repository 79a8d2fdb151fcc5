"""Peer 2, Celery 5 on RabbitMQ, in the configuration its documentation
recommends for reliability, running the original's consumer as a task
written the obvious way.

``celery -A lab.peers.celery_app worker --concurrency N`` runs it;
``publish`` is its intake (``task.delay``, once per unit).

Every setting below says where it comes from. The stable docs are
https://docs.celeryq.dev/en/stable/ ("configuration" is
userguide/configuration.html, "tasks" userguide/tasks.html).
"""

import math

from celery import Celery, signals
from kombu import Exchange, Queue

import settings

from . import deliveries, work

QUEUE = settings.QUEUE_NAME
#: Where RabbitMQ puts what Celery rejects without requeueing: the same
#: name as Dramatiq's dead-letter queue, so the lab reads both alike.
DEAD_LETTERS = f"{QUEUE}.XQ"

#: The queue type, for the work queue and the dead letters alike.
QUEUE_ARGUMENTS = {"x-queue-type": "quorum"} if settings.QUEUE_TYPE == "quorum" else {}

app = Celery("followers_peer", broker=settings.RABBITMQ_URL)
app.conf.update(
    # configuration#task-acks-late: ack after the task ran, so a worker that
    # dies mid-task does not lose it (tasks: "Should I use retry or acks_late?").
    task_acks_late=True,
    # configuration#task-reject-on-worker-lost: requeue a task whose worker
    # process died, rather than ack it (its docs warn: message loops, #9082).
    task_reject_on_worker_lost=True,
    # configuration#task-acks-on-failure-or-timeout = False, which Celery 5.7
    # splits in two: a failed or timed-out task is rejected, not acked, so
    # it goes to the queue's dead-letter exchange instead of vanishing.
    task_acks_on_failure=False,
    task_acks_on_timeout=False,
    # Celery 5.7's answer to #9082 (Task.retry_on_worker_lost): a task whose
    # worker died is retried like Task.retry, so max_retries bounds it.
    task_retry_on_worker_lost=True,
    # configuration#worker-prefetch-multiplier and the tasks guide's
    # "Prefetch limits" for long tasks: reserve one task per process.
    worker_prefetch_multiplier=1,
    # configuration#task-time-limit (hard: the pool kills the process) and
    # #task-soft-time-limit: the limits the lab gives our workers,
    # HARD_TIME_LIMIT_MS and TIME_LIMIT_MS.
    task_time_limit=settings.HARD_TIME_LIMIT_MS / 1000 if settings.HARD_TIME_LIMIT_MS else None,
    task_soft_time_limit=settings.TIME_LIMIT_MS / 1000 if settings.TIME_LIMIT_MS else None,
    # configuration#broker-transport-options, "confirm_publish" of py-amqp:
    # delay() returns once RabbitMQ holds the message, as our publishes do.
    broker_transport_options={"confirm_publish": True},
    # configuration#worker-cancel-long-running-tasks-on-connection-loss:
    # recommended with acks_late (Celery warns without it; 6.0's default).
    worker_cancel_long_running_tasks_on_connection_loss=True,
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,  # nothing reads results; no result backend
    # The dead-letter exchange Celery's docs point to for rejected messages
    # (tasks#reject, "dead letter exchanges"): RabbitMQ's DLX arguments.
    # On a cluster (lab compare --cluster, QUEUE_TYPE=quorum) a quorum queue,
    # declared as the routing guide shows (userguide/routing.html, "Using
    # Quorum Queues": x-queue-type); Celery then turns global QoS off itself
    # (configuration#worker-detect-quorum-queues). Elsewhere a classic one.
    task_queues=[Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE, queue_arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": DEAD_LETTERS, **QUEUE_ARGUMENTS})],
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    # Nothing of the remote-control and event machinery is under test.
    worker_enable_remote_control=False,
)


@app.task(
    bind=True,
    name="add_followers",
    # tasks#automatic-retry-for-known-exceptions: Celery retries nothing unless
    # asked; Dramatiq retries every error by default and so do we. Celery's
    # default max_retries (3); backoff as documented, capped at the lab's scale.
    autoretry_for=(Exception,),
    retry_backoff=True,
    retry_backoff_max=math.ceil(settings.MAX_BACKOFF_MS / 1000),
    # The delay of retry_on_worker_lost's retries (tasks#Task.default_retry_delay,
    # 3 minutes by default): scaled down to the lab's MIN_BACKOFF_MS, as
    # every backoff in the lab is.
    default_retry_delay=settings.MIN_BACKOFF_MS / 1000,
)
def add_followers(self, user_id, follower_login, count, first=0):
    """The original's message {userId, followerLogin, count}, plus the index
    of its first follower when a request is cut into several messages."""
    attempt = self.request.retries + 1
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    work.add_followers(user_id, follower_login, count, first, attempt=attempt,
                       first_delivery=attempt == 1 and not redelivered)


def publish(user_id, follower_login, units):
    """The intake: one ``delay`` per unit, (first, count) each."""
    for first, count in units:
        add_followers.delay(user_id, follower_login, count, first)


# --- The lab's observers: a row per delivery, the dead-letter queue ---------

_rows = {}  # task id -> peer_deliveries row, in the pool process running it
_OUTCOMES = {"SUCCESS": "done", "RETRY": "retrying", "FAILURE": "dead-lettered"}


@signals.task_prerun.connect
def _delivery_started(task_id=None, task=None, args=(), **_):
    args = list(args) + [None] * 4
    redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
    _rows[task_id] = deliveries.started(task_id, args[0], args[1], args[2], args[3] or 0, redelivered)


@signals.task_postrun.connect
def _delivery_ended(task_id=None, state=None, retval=None, **_):
    # A failed task is rejected without requeue (acks_on_failure is off):
    # RabbitMQ dead-letters it. A process killed under its task never gets here.
    error = retval if isinstance(retval, BaseException) else None
    deliveries.ended(_rows.pop(task_id, None), _OUTCOMES.get(state, str(state).lower()), error)


@signals.worker_init.connect
def _declare_dead_letters(**_):
    with app.connection_for_write() as connection:
        Queue(DEAD_LETTERS, durable=True, queue_arguments=QUEUE_ARGUMENTS)(connection.default_channel).declare()
