"""Baseline (a): the original's add-followers loop, in Peewee.

As the Symfony service did it (``SubscriptionService::addFollowers``): for
each follower, find the author, insert the user, insert the subscription,
every statement in autocommit. A login that exists already is skipped.
"""

import time

from peewee import IntegrityError

from db.models import Subscription, User

from .baseline_db import database


def run(author_id, followers_login, count, password_hash):
    """Add ``count`` followers; returns the seconds it took."""
    started = time.perf_counter()
    with database.connection_context():
        for i in range(count):
            author = User.get_by_id(author_id)
            try:
                follower = User.create(login=f"{followers_login}_#{i}", password=password_hash, age=i, is_active=True)
            except IntegrityError:
                continue
            Subscription.create(author=author, follower=follower)
    return time.perf_counter() - started
