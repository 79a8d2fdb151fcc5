"""The domain: users, subscriptions and adding followers.

Shared by the API's synchronous path and by the workers, so that a follower
added now and one added through the queue are the same rows made by the same
statements.
"""

import math

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
    """The synchronous path: every follower in one transaction.
    Returns (created, skipped)."""
    # Every follower of a request has the same password: hash it once.
    password_hash = hash_password(followers_login)
    created = 0
    with database.atomic():
        # Statements of 10,000 rows keep each one short and its memory flat.
        for start in range(0, count, 10_000):
            stop = min(start + 10_000, count)
            created += User.add_followers(user.id, followers_login, start, stop, password_hash)
    return created, count - created


def create_job(user, followers_login, count, *, chunk_size=None, ordered=None):
    """Record an asynchronous request; publishing it is ``actors.submit_job``.

    Sets ``job.starts_now``: False for an ordered job queued behind an
    unfinished ordered job of the same user, whose last unit will start it.
    """
    chunk_size = chunk_size or settings.FOLLOWERS_PER_MESSAGE
    ordered = settings.ORDERED_PER_USER if ordered is None else ordered
    with database.atomic():
        if ordered:
            User.lock_for_ordering(user.id)
        job = Job.create(
            user=user,
            followers_login=followers_login,
            requested=count,
            chunk_size=chunk_size,
            messages=math.ceil(count / chunk_size),
            ordered=ordered,
        )
        job.starts_now = not (ordered and job.has_unfinished_predecessor())
    return job


def job_password_hash(job):
    """The job's followers' password hash, computed by the first unit that
    needs it. Two units racing here both hash, one of them stores: harmless."""
    if job.password_hash is None:
        Job.update(password_hash=hash_password(job.followers_login)).where(
            (Job.id == job.id) & Job.password_hash.is_null()
        ).execute()
        job.password_hash = Job.get_by_id(job.id).password_hash
    return job.password_hash


def _check_unit(job_id, chunk, user_id, followers_login, start, count):
    job = Job.get_or_none(Job.id == job_id)
    if job is None:
        raise InvalidUnit(f"job {job_id} does not exist")
    expected = (job.user_id, job.followers_login, job.chunk_bounds(chunk))
    if chunk >= job.messages or (user_id, followers_login, (start, start + count)) != expected:
        raise InvalidUnit(
            f"unit {chunk} of job {job_id} is user {job.user_id}, login {job.followers_login!r}, "
            f"followers {expected[2][0]}..{expected[2][1] - 1} of {job.messages} units"
        )
    return job


def apply_unit(job_id, chunk, user_id, followers_login, start, count):
    """Add one unit's followers, exactly once.

    The unit's "done" mark and its followers commit in one transaction, so a
    unit redelivered after a crash (or published twice) commits nothing the
    second time. Returns (created, skipped, next_unit): created and skipped
    are None if it was done already; next_unit is the (job, chunk) an ordered
    job must publish now, if any.
    """
    job = _check_unit(job_id, chunk, user_id, followers_login, start, count)
    password_hash = job_password_hash(job)
    with database.atomic():
        if not JobUnit.claim(job_id, chunk):
            created = None
        else:
            created = User.add_followers(user_id, followers_login, start, start + count, password_hash)
            JobUnit.record(job_id, chunk, created, count - created)
        next_unit = _next_ordered_unit(job, chunk) if job.ordered else None
    return created, (None if created is None else count - created), next_unit


def _next_ordered_unit(job, chunk):
    """The unit to publish after this one of an ordered job: the next chunk,
    or the first unit of the user's next ordered job. Decided under the
    user's ordering lock, in the unit's transaction, so that a job the API
    creates meanwhile is started exactly once, by the API or by us."""
    if chunk + 1 < job.messages:
        return job, chunk + 1
    User.lock_for_ordering(job.user_id)
    following = job.next_ordered_job()
    return (following, 0) if following else None


def apply_unit_naively(job_id, chunk, user_id, followers_login, start, count, *, after_commit):
    """The original lesson's consumer, for the lab's naive mode: plain
    inserts committed on their own, then the unit marked done apart from
    them, as an ack would be. A redelivery runs the inserts again and fails
    on the unique login; a crash between the two loses the mark."""
    job = _check_unit(job_id, chunk, user_id, followers_login, start, count)
    password_hash = job_password_hash(job)
    with database.atomic():
        created = User.add_followers(
            user_id, followers_login, start, start + count, password_hash, skip_existing=False
        )
    after_commit()
    with database.atomic():
        JobUnit.claim(job_id, chunk)
        JobUnit.record(job_id, chunk, created, count - created)
    return created, count - created, None
