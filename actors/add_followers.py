"""The add-followers actors and the function that submits a job to them."""

import logging

import dramatiq
from dramatiq import Message

import followers
import settings
import validation
from db import Job, database

from .publishing import BrokerUnavailable, publisher

logger = logging.getLogger(__name__)

#: Exceptions that no retry can cure: dead-lettered at once.
PERMANENT = (validation.Invalid, followers.InvalidUnit)


def unit_message(job, chunk):
    start, stop = job.chunk_bounds(chunk)
    return Message(
        queue_name=settings.QUEUE_NAME,
        actor_name="add_followers",
        args=(),
        kwargs={
            "job_id": job.id,
            "chunk": chunk,
            "user_id": job.user_id,
            "followers_login": job.followers_login,
            "start": start,
            "count": stop - start,
        },
        options={},
    )


@dramatiq.actor(queue_name=settings.QUEUE_NAME, throws=PERMANENT)
def add_followers(*args, **fields):
    """One unit of work: followers [start, start + count) of a job."""
    if args:
        raise validation.Invalid({"args": "positional arguments are not accepted"})
    unit = validation.validate(fields, validation.UNIT, strict=True)
    with database.connection_context():
        result = followers.apply_unit(**unit)
    if result is None:
        logger.info("job %s unit %s: done already, nothing to do", unit["job_id"], unit["chunk"])


@dramatiq.actor(queue_name=settings.QUEUE_NAME, throws=PERMANENT)
def split_job(job_id):
    """Publish the units of a job too large to publish inside the request.
    Sent again (redelivery, replay), it publishes the units again: harmless,
    each unit is applied once."""
    job_id = validation.validate({"job_id": job_id}, {"job_id": validation.Integer(minimum=1)})["job_id"]
    with database.connection_context():
        job = Job.get_or_none(Job.id == job_id)
    if job is None:
        raise followers.InvalidUnit(f"job {job_id} does not exist")
    publisher.publish(unit_message(job, chunk) for chunk in range(job.messages))


def submit_job(user, followers_login, count):
    """Create a job and publish it; raise BrokerUnavailable, with the job
    marked failed, if RabbitMQ did not take it."""
    job = followers.create_job(user, followers_login, count)
    if job.messages <= settings.MAX_MESSAGES_PUBLISHED_INLINE:
        messages = [unit_message(job, chunk) for chunk in range(job.messages)]
    else:
        messages = [split_job.message(job.id)]
    try:
        publisher.publish(messages)
    except BrokerUnavailable as error:
        Job.update(status="failed", error=f"not queued: {error}").where(Job.id == job.id).execute()
        raise
    return job
