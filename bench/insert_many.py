"""Baseline (b): Peewee ``insert_many`` in batches of 1,000, one transaction.

The usual "bulk insert" answer: rows built in Python, one INSERT per batch of
users (ids returned), then one per batch of subscriptions.
"""

import time

from db.models import Subscription, User

from .baseline_db import database

BATCH = 1000


def run(author_id, followers_login, count, password_hash):
    """Add ``count`` followers; returns the seconds it took."""
    started = time.perf_counter()
    with database.connection_context(), database.atomic():
        for start in range(0, count, BATCH):
            rows = [
                {"login": f"{followers_login}_#{i}", "password": password_hash, "age": i, "is_active": True}
                for i in range(start, min(start + BATCH, count))
            ]
            ids = [row[0] for row in User.insert_many(rows).on_conflict_ignore().returning(User.id).tuples()]
            if ids:
                Subscription.insert_many([(author_id, id_) for id_ in ids], fields=["author", "follower"]).execute()
    return time.perf_counter() - started
