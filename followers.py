"""The domain: users, subscriptions and adding followers.

Shared by the API's synchronous path and by the workers, so that a follower
added now and one added through the queue are the same rows made by the same
statements.
"""

import contextlib
import functools
import math
from concurrent.futures import ThreadPoolExecutor

from peewee import IntegrityError

import settings
from db import Job, JobUnit, Subscription, User, database
from passwords import hash_password


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


class InvalidUnit(Exception):
    """A message that can never succeed (unknown job, fields that do not
    match it): dead-lettered at once, never retried."""


class JobFinished(Exception):
    """A job that is done or failed cannot be cancelled any more."""


class JobCancelled(Exception):
    """A unit of a cancelled job: acked without effect, neither retried nor
    dead-lettered. ``next_unit`` is what an ordered job must publish instead
    (the user's next ordered job waits on this one's chain of units)."""

    def __init__(self, message, next_unit=None):
        super().__init__(message)
        self.next_unit = next_unit


def get_user(user_id):
    user = User.get_or_none(User.id == user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist")
    return user


def create_user(login, password, age, is_active=True):
    try:
        with database.atomic():
            return User.create(login=login, password=hash_password(password), age=age, is_active=is_active)
    except IntegrityError:
        raise Conflict(f"login {login!r} is taken") from None


def subscribe(author_id, follower_id):
    if author_id == follower_id:
        raise ValueError("a user cannot follow themselves")
    get_user(author_id)
    get_user(follower_id)
    try:
        with database.atomic():
            return Subscription.create(author=author_id, follower=follower_id)
    except IntegrityError:
        raise Conflict(f"user {follower_id} already follows user {author_id}") from None


def add_followers_now(user, followers_login, count):
    """The synchronous path. Returns (created, skipped).

    A large request is cut into statements of SYNC_STATEMENT_ROWS followers
    run on SYNC_PARALLELISM connections at once: PostgreSQL then builds
    them on every core. Each statement commits on its own, so a request that
    fails half-way (the client gets its error) may have added some followers;
    repeating it adds the rest and doubles nothing.
    """
    # Every follower of a request has the same password: hash it once.
    password_hash = hash_password(followers_login)
    step = settings.SYNC_STATEMENT_ROWS
    ranges = [(start, min(start + step, count)) for start in range(0, count, step)]

    def add(bounds):
        with database.connection_context():
            return User.add_followers(user.id, followers_login, *bounds, password_hash)

    if len(ranges) <= 1 or settings.SYNC_PARALLELISM <= 1:
        created = sum(map(add, ranges))
    else:
        created = sum(_sync_pool().map(add, ranges))
    return created, count - created


@functools.cache
def _sync_pool():
    # Made on first use, in the process that uses it (never across a fork).
    return ThreadPoolExecutor(max_workers=settings.SYNC_PARALLELISM, thread_name_prefix="sync-followers")


def create_job(user_id, followers_login, count, *, chunk_size=None, ordered=None):
    """Record an asynchronous request; publishing it is ``actors.submit_job``.
    Raises NotFound for an unknown user.

    Sets ``job.starts_now``: False for an ordered job queued behind an
    unfinished ordered job of the same user, whose last unit will start it.
    """
    chunk_size = chunk_size or settings.FOLLOWERS_PER_MESSAGE
    ordered = settings.ORDERED_PER_USER if ordered is None else ordered
    fields = dict(followers_login=followers_login, requested=count, chunk_size=chunk_size,
                  messages=math.ceil(count / chunk_size), ordered=ordered)
    if not ordered:
        # One statement, no transaction: the API's hot path.
        job = Job.create_for_user(user_id, **fields)
        if job is None:
            raise NotFound(f"user {user_id} does not exist")
        job.starts_now = True
        return job
    with database.atomic():
        user = get_user(user_id)
        User.lock_for_ordering(user.id)
        job = Job.create(user=user, **fields)
        job.starts_now = not job.has_unfinished_predecessor()
    return job


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


def _mismatch(job_id, chunk, user_id, followers_login, start, count, ordered):
    """Why a unit does not match its job (the slow path, off the happy one)."""
    job = Job.get_or_none(Job.id == job_id)
    if job is None:
        return f"job {job_id} does not exist"
    first, stop = job.chunk_bounds(chunk)
    return (
        f"unit {chunk} of job {job_id} is user {job.user_id}, login {job.followers_login!r}, "
        f"followers {first}..{stop - 1} of {job.messages} units{', ordered' if job.ordered else ''}; "
        f"the message says user {user_id}, login {followers_login!r}, followers {start}..{start + count - 1}"
        f"{', ordered' if ordered else ''}"
    )


def apply_unit(job_id, chunk, user_id, followers_login, start, count, ordered=False):
    """Add one unit's followers, exactly once: one statement that adds them
    and marks the unit done (``JobUnit.apply``), so a unit redelivered after
    a crash, or published twice, commits nothing the second time.

    Returns (created, skipped, next_unit): created and skipped are None if
    the unit was done already; next_unit is the (job, chunk) an ordered job
    must publish now, if any. Raises InvalidUnit if the unit is not its job's,
    JobCancelled if its job was cancelled.
    """
    unit = dict(job_id=job_id, chunk=chunk, author_id=user_id, followers_login=followers_login,
                start=start, stop=start + count, ordered=ordered)
    for first_try in (True, False):
        with database.atomic() if ordered else contextlib.nullcontext():
            matched, created = JobUnit.apply(**unit)
            next_unit = _next_ordered_unit(job_id, chunk) if matched and ordered else None
        if matched:
            return created, (None if created is None else count - created), next_unit
        # No job matched: unknown, cancelled, not this unit's, or its password not hashed yet.
        if Job.select(Job.status).where(Job.id == job_id).scalar() == "cancelled":
            raise JobCancelled(f"job {job_id} is cancelled: unit {chunk} skipped",
                               _next_ordered_job_unit(job_id) if ordered else None)
        if not (first_try and job_password_hash(job_id)):
            break
    raise InvalidUnit(_mismatch(job_id, chunk, user_id, followers_login, start, count, ordered))


def _next_ordered_unit(job_id, chunk):
    """The unit to publish after this one of an ordered job: the next chunk,
    or the first unit of the user's next ordered job. Decided under the
    user's ordering lock, in the unit's transaction, so that a job the API
    creates meanwhile is started exactly once, by the API or by us."""
    job = Job.get_by_id(job_id)
    if chunk + 1 < job.messages:
        return job, chunk + 1
    User.lock_for_ordering(job.user_id)
    following = job.next_ordered_job()
    return (following, 0) if following else None


def _next_ordered_job_unit(job_id):
    """The first unit of the user's ordered job after this one, decided
    under the user's ordering lock as ``_next_ordered_unit`` does."""
    with database.atomic():
        job = Job.get_by_id(job_id)
        User.lock_for_ordering(job.user_id)
        following = job.next_ordered_job()
    return (following, 0) if following else None


def cancel_job(job_id):
    """Cancel a job: its units not applied yet will be skipped (a unit
    whose statement is already running when the cancel commits still
    finishes). Returns the job as it stands. Idempotent: cancelling a
    cancelled job changes nothing. Raises NotFound, or JobFinished for a
    job done or failed."""
    cancelled = Job.cancel(job_id)
    job = Job.get_or_none(Job.id == job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    if not cancelled and job.status != "cancelled":
        raise JobFinished(f"job {job_id} is {job.to_dict()['status']} already; only an unfinished job can be cancelled")
    return job


def _check_unit(job_id, chunk, user_id, followers_login, start, count):
    job = Job.get_or_none(Job.id == job_id)
    if job is None or (user_id, followers_login, (start, start + count)) != (
        job.user_id, job.followers_login, job.chunk_bounds(chunk)
    ) or chunk >= job.messages:
        raise InvalidUnit(_mismatch(job_id, chunk, user_id, followers_login, start, count, job and job.ordered))
    return job


def apply_unit_naively(job_id, chunk, user_id, followers_login, start, count, *, after_commit, ordered=False):
    """The original lesson's consumer, for the lab's naive mode: plain
    inserts committed on their own, then the unit marked done apart from
    them, as an ack would be. A redelivery runs the inserts again and fails
    on the unique login; a crash between the two loses the mark."""
    _check_unit(job_id, chunk, user_id, followers_login, start, count)
    password_hash = job_password_hash(job_id)
    with database.atomic():
        created = User.add_followers(
            user_id, followers_login, start, start + count, password_hash, skip_existing=False
        )
    after_commit()
    with database.atomic():
        JobUnit.claim(job_id, chunk)
        JobUnit.record(job_id, chunk, created, count - created)
    return created, count - created, None
