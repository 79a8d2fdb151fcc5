"""Asynchronous jobs: creating one, applying its units, fanning a large one
out. Shared by the API (which creates jobs) and the workers (which apply
them), so that both read the same rules from one place.

Every message these functions decide to send is written to the outbox in
the same statement or transaction (``db.outbox``); the caller then wakes the
relay (``actors.relay``), which publishes it. Nothing here talks to RabbitMQ.
"""

import math
from typing import NamedTuple

import settings
from db import Job, JobUnit, User, database
from followers import NotFound, get_user
from passwords import hash_password


class InvalidUnit(Exception):
    """A message that can never succeed (an unknown job, a unit the job does
    not have): dead-lettered at once, never retried."""


class JobFinished(Exception):
    """A job that is done or failed cannot be cancelled any more."""


def create_job(user_id, followers_login, count, *, unit_size=None, ordered=None):
    """Record an asynchronous request with its messages in the outbox: one
    statement, or for an ordered job one transaction under the user's
    ordering lock. Raises NotFound for an unknown user."""
    unit_size = unit_size or settings.FOLLOWERS_PER_MESSAGE
    ordered = settings.ORDERED_PER_USER if ordered is None else ordered
    fields = dict(queue=settings.QUEUE_NAME, followers_login=followers_login, requested=count,
                  unit_size=unit_size, units=math.ceil(count / unit_size))
    if not ordered:
        job = Job.create_with_units(user_id, inline_units=settings.MAX_MESSAGES_PUBLISHED_INLINE, **fields)
        if job is None:
            raise NotFound(f"user {user_id} does not exist")
        return job
    with database.atomic():
        user = get_user(user_id)
        User.lock_for_ordering(user.id)
        return Job.create_ordered(user, **fields)


def job_password_hash(job_id):
    """The job's followers' password hash, computed once, by the first unit
    that needs it, under the job row's lock (the others wait ~70 ms for it
    rather than hash again). None if the job does not exist."""
    with database.atomic():
        job = Job.select(Job.id, Job.followers_login, Job.password_hash).where(Job.id == job_id).for_update().first()
        if job is None:
            return None
        if job.password_hash is None:
            job.password_hash = hash_password(job.followers_login)
            Job.update(password_hash=job.password_hash).where(Job.id == job_id).execute()
    return job.password_hash


class Applied(NamedTuple):
    """What applying a unit did. ``created`` and ``skipped`` are None when
    the unit was done already (or its job cancelled): nothing was applied.
    ``sent``: messages it wrote to the outbox (an ordered unit's successor)."""

    created: int | None
    skipped: int | None
    sent: int
    cancelled: bool = False


def apply_unit(job_id, unit):
    """Apply unit ``unit`` of job ``job_id`` exactly once (``JobUnit.apply``:
    one statement adds its followers, marks it done and, for an ordered job,
    sends its successor). Raises InvalidUnit for a unit that is not its
    job's; a unit of a cancelled job is acknowledged and does nothing."""
    for first_try in (True, False):
        result = JobUnit.apply(job_id, unit, queue=settings.QUEUE_NAME, locked=False)
        if result.needs_lock:
            # An ordered job: its successor is decided under the user's lock,
            # taken before the statement so that it sees every job created
            # before the lock (see next_ordered_job_sql).
            with database.atomic():
                User.lock_for_ordering(result.user_id)
                result = JobUnit.apply(job_id, unit, queue=settings.QUEUE_NAME, locked=True)
                if result.cancelled and result.in_range:
                    sent = int(JobUnit.pass_cancelled(job_id, result.user_id, unit, queue=settings.QUEUE_NAME))
                    return Applied(None, None, sent, cancelled=True)
        if result.matched:
            if result.created is None:
                return Applied(None, None, 0)
            return Applied(result.created, result.size - result.created, result.sent)
        if result.units is None:
            raise InvalidUnit(f"job {job_id} does not exist")
        if not result.in_range:
            raise InvalidUnit(f"job {job_id} has units 0..{result.units - 1}; the message asks for unit {unit}")
        if result.cancelled:
            return Applied(None, None, 0, cancelled=True)
        # The job's password is not hashed yet: the first unit hashes it.
        if not first_try or job_password_hash(job_id) is None:
            break
    raise InvalidUnit(f"job {job_id} unit {unit} could not be applied")


def apply_units(job_id, units):
    """Apply units of one job together, each exactly once
    (``JobUnit.apply_many``): one statement and one commit for all. Returns
    {unit: Applied} for the units it settled; any other must go through
    ``apply_unit``."""
    return {
        unit: Applied(None, None, 0) if created is None else Applied(created, size - created, 0)
        for unit, (size, created) in JobUnit.apply_many(job_id, units).items()
    }


def enqueue_units(job_id):
    """``split_job``: write the units of a job too large to write inside its
    request to the outbox, once. Returns how many were written (0 when a
    redelivered split_job finds them written already)."""
    exists, written = Job.enqueue_units(job_id, queue=settings.QUEUE_NAME)
    if not exists:
        raise InvalidUnit(f"job {job_id} does not exist")
    return written


class Cancelled(NamedTuple):
    """What cancelling a job did. ``sent``: messages it wrote to the outbox
    (the user's next ordered job, when this one was held by a dead letter)."""

    job: Job  # as it stands after the cancel
    sent: int


def get_job(job_id):
    job = Job.get_or_none(Job.id == job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


def cancel_job(job_id):
    """Cancel a job: its units not applied yet are skipped (a unit whose
    statement is under way finishes first: the cancel waits for it).
    Returns ``Cancelled``. Idempotent: cancelling a cancelled job changes
    nothing. Raises NotFound, or JobFinished for a job done, or failed and
    unordered (``Job.cancellable``).

    An ordered job passes its user's chain on when its next unit comes
    round (``apply_unit``); one whose chain waits on a dead letter has none
    coming, so the cancel passes it on, under the user's ordering lock."""
    sent = 0
    with database.atomic():
        job = get_job(job_id)
        if job.ordered:
            User.lock_for_ordering(job.user_id)
        cancelled = Job.cancel(job_id)
        if cancelled and job.ordered:
            sent = int(JobUnit.pass_turn_held_by_dead_letter(job_id, job.user_id, queue=settings.QUEUE_NAME))
        job = get_job(job_id)  # as it is now (NotFound if python -m ops jobs prune deleted it meanwhile)
    if not cancelled and job.status != "cancelled":
        raise JobFinished(f"job {job_id} is {job.to_dict()['status']} already; only an unfinished job can be cancelled")
    return Cancelled(job, sent)
