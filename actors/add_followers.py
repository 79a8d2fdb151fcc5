"""The add-followers actors and the function that submits a job to them."""

import logging
import os

import dramatiq
from dramatiq import Message
from dramatiq.middleware import CurrentMessage

import followers
import settings
import validation
from db import Job, database

from . import faults
from .middleware import attempt_of
from .publishing import BrokerUnavailable, publisher

logger = logging.getLogger(f"followers.{__name__}")

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
            "ordered": job.ordered,
        },
        options={},
    )


@dramatiq.actor(queue_name=settings.QUEUE_NAME, throws=PERMANENT)
def add_followers(*args, **fields):
    """One unit of work: followers [start, start + count) of a job."""
    if args:
        raise validation.Invalid({"args": "positional arguments are not accepted"})
    unit = validation.validate(fields, validation.UNIT, strict=True)
    if "swallow_errors" in settings.NAIVE:
        # The original's §5 "fix": log everything, ack anyway.
        try:
            _run_unit(unit)
        except Exception:
            logger.exception("error swallowed, message acked: job %s unit %s", unit["job_id"], unit["chunk"])
        return
    _run_unit(unit)


def _delivery():
    """(attempt, first delivery?) of the message being processed: the
    faults' business only."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return 1, True
    attempt = attempt_of(message)
    return attempt, attempt == 1 and not getattr(message, "redelivered", False)


def _run_unit(unit):
    attempt, first_delivery = _delivery() if faults.ACTIVE else (1, True)
    if faults.ACTIVE:
        faults.before_effect(unit, attempt)
    with database.connection_context():
        if "no_dedup" in settings.NAIVE:
            followers.apply_unit_naively(**unit, after_commit=lambda: faults.after_commit(unit, first_delivery))
            return
        try:
            created, _, next_unit = followers.apply_unit(**unit)
        except followers.JobCancelled as cancelled:
            logger.info("%s", cancelled)  # acked: a cancelled job's unit is neither retried nor dead-lettered
            created, next_unit = 0, cancelled.next_unit
    if created is None:
        logger.info("job %s unit %s: done already, nothing to do", unit["job_id"], unit["chunk"])
    if faults.ACTIVE:
        faults.after_commit(unit, first_delivery)
    if next_unit is not None:
        publisher.publish([unit_message(*next_unit)])


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
    if job.status == "cancelled":
        logger.info("job %s is cancelled: its units are not published", job_id)
        return
    publisher.publish(unit_message(job, chunk) for chunk in range(job.messages))


def submit_job(user_id, followers_login, count):
    """Create a job and publish it; raise NotFound for an unknown user, and
    BrokerUnavailable, with the job marked failed, if RabbitMQ did not take it."""
    job = followers.create_job(user_id, followers_login, count)
    if job.ordered:
        # One unit at a time: each unit publishes the next when it is done.
        messages = [unit_message(job, 0)] if job.starts_now and job.messages else []
    elif job.messages <= settings.MAX_MESSAGES_PUBLISHED_INLINE:
        messages = [unit_message(job, chunk) for chunk in range(job.messages)]
    else:
        messages = [split_job.message(job.id)]
    try:
        publisher.publish(messages)
    except BrokerUnavailable as error:
        Job.update(status="failed", error=f"not queued: {error}").where(Job.id == job.id).execute()
        raise
    return job
