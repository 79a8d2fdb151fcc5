"""Idempotency keys: the first answer to a request sent with an
``Idempotency-Key`` header, so that a client that retries (a timeout, a lost
connection) gets that answer again instead of a second job.

The key is the primary key: two requests racing with one key serialise on
it, and the second finds the first's answer once the first commits.
"""

import datetime

from peewee import CharField, IntegerField

from .models import BaseModel
from .outbox import JSONBField


class IdempotencyKey(BaseModel):
    key = CharField(max_length=255, primary_key=True)
    request_hash = CharField(max_length=64)  # sha256 of the validated request
    status = IntegerField(null=True)  # None while the first request is still running
    response = JSONBField(null=True)

    class Meta:
        table_name = "idempotency_keys"

    @classmethod
    def claim(cls, key, request_hash):
        """Take the key for this request, inside the caller's transaction.
        Returns None if it is ours now, else the row of the request that
        took it first (waiting for that request's transaction to end).

        That row can be gone by the time it is read: its request failed and
        released the key, or a sweep expired it. The key is free then: try
        again (a retry that raced a failing first request got a 500)."""
        while True:
            inserted = list(
                cls.insert(key=key, request_hash=request_hash)
                .on_conflict_ignore()
                .returning(cls.key)
                .execute()
            )
            if inserted:
                return None
            first = cls.get_or_none(cls.key == key)
            if first is not None:
                return first

    @classmethod
    def complete(cls, key, status, response):
        cls.update(status=status, response=response).where(cls.key == key).execute()

    @classmethod
    def release(cls, key):
        """The request failed without an answer worth keeping: a retry with
        the same key may run it again."""
        cls.delete().where((cls.key == key) & cls.status.is_null()).execute()

    @classmethod
    def expire(cls, *, older_than_hours):
        cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=older_than_hours)
        return cls.delete().where(cls.created_at < cutoff).execute()

