"""The transactional outbox: every message a transaction decides to send is
a row written by that same transaction.

A job's units, a ``split_job``, an ordered unit's successor, a replay: each
is committed together with the change that calls for it, or not at all. A
relay (``actors.relay``) publishes the rows to RabbitMQ with the broker's
confirmation and deletes them in the transaction that claimed them, so a
relay killed at any point leaves the rows for the next one: a message may be
sent twice (units are idempotent), never lost. Deleting a sent row, rather
than marking it, keeps the table as small as the backlog.
"""

import datetime
import json

from peewee import SQL, BigAutoField, CharField, Field, Model, UUIDField

from .database import database
from .models import TimestampTZField


class JSONBField(Field):
    field_type = "JSONB"

    def db_value(self, value):
        return None if value is None else json.dumps(value)

    # psycopg2 already hands JSONB back as Python objects.


class Outbox(Model):
    id = BigAutoField()
    # Fixed when the row is written, so a row sent twice is one message id
    # twice, which the workers' delivery counting and dead letters key on.
    message_id = UUIDField(constraints=[SQL("DEFAULT gen_random_uuid()")])
    queue_name = CharField(max_length=255)
    actor_name = CharField(max_length=255)
    kwargs = JSONBField()
    created_at = TimestampTZField(constraints=[SQL("DEFAULT now()")])

    class Meta:
        database = database
        table_name = "outbox"

    @classmethod
    def rows_sql(cls, actor_name, kwargs_sql, source):
        """An ``INSERT INTO outbox ... SELECT`` of one row per row of
        ``source`` (an SQL FROM list), for a data-modifying CTE: the messages
        are written by the same statement as the change that calls for them.
        Takes the ``%(queue)s`` parameter."""
        return f"""
            INSERT INTO outbox (queue_name, actor_name, kwargs)
            SELECT %(queue)s, '{actor_name}', {kwargs_sql} FROM {source}
            RETURNING 1"""

    @classmethod
    def add(cls, queue_name, actor_name, kwargs, *, message_id=None):
        """One message, in the caller's transaction (a replay keeps its id)."""
        row = {"queue_name": queue_name, "actor_name": actor_name, "kwargs": kwargs}
        if message_id is not None:
            row["message_id"] = message_id
        cls.insert(**row).execute()

    @classmethod
    def claim(cls, limit):
        """Take up to ``limit`` unsent rows, oldest first, out of the outbox
        inside the caller's transaction: rows other relays hold are skipped,
        and if the caller rolls back (the publish failed) they come back.

        The transaction commits without waiting for its WAL to reach disk
        (``synchronous_commit = off``, for this transaction only): if
        PostgreSQL crashes before it does, the deletion is undone and the rows
        are sent again, a duplicate that idempotent units absorb. Waiting
        would cost a disk flush for every batch; a request's own commit (the
        rows' insertion) still waits for one, since a 202 promises it."""
        cursor = database.execute_sql(
            """
            SET LOCAL synchronous_commit = off;
            DELETE FROM outbox WHERE id IN (
                SELECT id FROM outbox ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
            )
            RETURNING id, message_id, queue_name, actor_name, kwargs, created_at
            """,
            (limit,),
        )
        return sorted(cursor.fetchall())

    @classmethod
    def pending(cls, *, at_most):
        """Unsent rows, counted up to ``at_most`` (a bounded scan however
        large the backlog grows)."""
        cursor = database.execute_sql("SELECT count(*) FROM (SELECT 1 FROM outbox LIMIT %s) AS rows", (at_most,))
        return cursor.fetchone()[0]

    @classmethod
    def backlog(cls):
        """(unsent rows, age in seconds of the oldest or None)."""
        cursor = database.execute_sql("SELECT count(*), min(created_at) FROM outbox")
        count, oldest = cursor.fetchone()
        if oldest is None:
            return count, None
        age = datetime.datetime.now(datetime.UTC) - oldest
        return count, round(max(age.total_seconds(), 0.0), 3)
