"""The add-followers actors. A message names its work and nothing else: a
job id and a unit number; everything else is read from the job row."""

import logging

import dramatiq

import jobs
import settings
import validation
from db import database

from .relay import relay
from .unit_batches import UnitBatches

logger = logging.getLogger(f"followers.{__name__}")

#: Exceptions that no retry can cure: dead-lettered at once.
PERMANENT = (validation.Invalid, jobs.InvalidUnit)


def _apply_one(job_id, unit):
    with database.connection_context():
        return jobs.apply_unit(job_id, unit)


def _apply_many(job_id, units):
    with database.connection_context():
        return jobs.apply_units(job_id, units)


#: The units of one job that this process's threads hold at once share a statement.
unit_batches = UnitBatches(apply_one=_apply_one, apply_many=_apply_many)


@dramatiq.actor(queue_name=settings.QUEUE_NAME, throws=PERMANENT)
def add_followers(*args, **fields):
    """One unit of work: unit ``unit`` of job ``job_id``."""
    if args:
        raise validation.Invalid({"args": "positional arguments are not accepted"})
    unit = validation.validate(fields, validation.UNIT, strict=True)
    applied = unit_batches.apply(unit["job_id"], unit["unit"])
    if applied.cancelled:
        logger.info("job %s unit %s: the job is cancelled; nothing to do", unit["job_id"], unit["unit"])
    elif applied.created is None:
        logger.info("job %s unit %s: done already, nothing to do", unit["job_id"], unit["unit"])
    if applied.sent:
        relay.wake()


@dramatiq.actor(queue_name=settings.QUEUE_NAME, throws=PERMANENT)
def split_job(job_id):
    """Write the units of a job too large to write inside its request to the
    outbox, then hash the job's password. Delivered again (a redelivery, a
    replay), it writes nothing."""
    job_id = validation.validate({"job_id": job_id}, {"job_id": validation.Integer(minimum=1)})["job_id"]
    with database.connection_context():
        written = jobs.enqueue_units(job_id)
    if written:
        relay.wake()
        # While the relay publishes the units: otherwise the first unit
        # hashes, and every unit that comes meanwhile waits for it.
        with database.connection_context():
            jobs.job_password_hash(job_id)
