"""The domain: users, subscriptions and adding followers now.

The asynchronous path (``jobs``) adds followers with the same statements
(``db.models.followers_ctes``), so that a follower added now and one added
through the queue are the same rows.
"""

import functools
from concurrent.futures import ThreadPoolExecutor

from peewee import IntegrityError

import settings
from db import FollowerCount, Subscription, User, database
from passwords import hash_password


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


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
            subscription = Subscription.create(author=author_id, follower=follower_id)
            FollowerCount.add(author_id, 1)
            return subscription
    except IntegrityError:
        raise Conflict(f"user {follower_id} already follows user {author_id}") from None


def followers_page(user_id, *, limit, offset=0, cursor=0):
    """A page of a user's followers, oldest subscription first: up to
    ``limit`` of them after ``cursor`` (0: from the first) and ``offset``.
    Returns (followers, total, next cursor or None on the last page).
    Raises NotFound for an unknown user.

    The cursor is the last subscription id of the page before: the next
    page starts there at once, however deep. ``total`` is the author's
    follower count (``FollowerCount``), never a count of the rows.
    """
    total = FollowerCount.of_user(user_id)
    if total is None:
        raise NotFound(f"user {user_id} does not exist")
    # One row more than the page tells whether another page follows.
    rows = User.followers_page(user_id, after=cursor, offset=offset, limit=limit + 1)
    page = rows[:limit]
    next_cursor = page[-1].subscription_id if len(rows) > limit else None
    return page, total, next_cursor


def add_followers_now(user, followers_login, count):
    """The synchronous path. Returns (created, skipped).

    A large request is cut into statements of SYNC_STATEMENT_ROWS followers
    run on SYNC_PARALLELISM connections at once: PostgreSQL then builds
    them on every core. Each statement commits on its own, so a request that
    fails half-way (the client gets its error) may have added some followers;
    repeating it adds the rest and doubles nothing.
    """
    # Every follower of a request has the same password: hash it once.
    return add_followers_hashed(user.id, followers_login, count, hash_password(followers_login))


def add_followers_hashed(user_id, followers_login, count, password_hash):
    """``add_followers_now`` once the password is hashed: its statements
    alone (the benchmark times them so: bench/sync_statements.py)."""
    step = settings.SYNC_STATEMENT_ROWS
    ranges = [(start, min(start + step, count)) for start in range(0, count, step)]

    def add(bounds):
        start, stop = bounds
        with database.connection_context():
            return User.add_followers(user_id, followers_login, start, stop, password_hash)

    if len(ranges) <= 1 or settings.SYNC_PARALLELISM <= 1:
        created = sum(map(add, ranges))
    else:
        created = sum(_sync_pool().map(add, ranges))
    return created, count - created


@functools.cache
def _sync_pool():
    # Made on first use, in the process that uses it (never across a fork).
    return ThreadPoolExecutor(max_workers=settings.SYNC_PARALLELISM, thread_name_prefix="sync-followers")
