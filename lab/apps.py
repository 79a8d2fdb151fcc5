"""The lab's API apps, for the intake scenario (§3 with the API killed
between the commit and the publish): ``gunicorn lab.apps:robust_app`` is the
production app whose intake may be SIGKILLed between the commit of a job and
the hand-off of its messages to the relay; ``gunicorn lab.apps:naive_app``
is the intake the service had before the outbox: commit the job, then
publish its units to RabbitMQ (a 503 when RabbitMQ is down), with the same
kill between the two. ``FAULT_API_KILL_PERCENT`` sets how often it strikes.
"""

import logging
import os
import random
import signal
import sys

from dramatiq import Message

import actors
import followers
import settings
from actors import BrokerUnavailable
from api import create_app
from db import Job
from web.intake import JobIntake

logger = logging.getLogger("followers.lab.apps")


def maybe_killed(where):
    if settings.FAULT_API_KILL_PERCENT and random.randrange(100) < settings.FAULT_API_KILL_PERCENT:
        logger.critical("injected kill: %s", where)
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


class KillableIntake(JobIntake):
    def committed(self, job_id):
        maybe_killed(f"job {job_id} committed with its messages in the outbox, the relay not woken")
        super().committed(job_id)


class PublishAfterCommit(JobIntake):
    """Commit the job alone, then publish its units: what the outbox fixes."""

    def create(self, user_id, followers_login, count):
        user = followers.get_user(user_id)
        size = settings.FOLLOWERS_PER_MESSAGE
        return Job.create(user=user, followers_login=followers_login, requested=count, unit_size=size,
                          units=-(-count // size), ordered=False, enqueued=True)

    def committed(self, job_id):
        maybe_killed(f"job {job_id} committed, its messages not published")
        job = Job.get_by_id(job_id)
        messages = [Message(queue_name=settings.QUEUE_NAME, actor_name="add_followers", args=(),
                            kwargs={"job_id": job.id, "unit": unit}, options={}) for unit in range(job.units)]
        try:
            actors.publisher.publish(messages)
        except BrokerUnavailable as error:
            Job.update(status="failed", error=f"not queued: {error}").where(Job.id == job.id).execute()
            raise


robust_app = create_app(intake=KillableIntake(relay=actors.relay, max_pending=settings.OUTBOX_MAX_PENDING))
naive_app = create_app(intake=PublishAfterCommit(relay=actors.relay, max_pending=settings.OUTBOX_MAX_PENDING))
