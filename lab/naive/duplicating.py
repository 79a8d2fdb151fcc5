"""§4: the consumer that duplicates on redelivery. Plain inserts committed
on their own (no unit mark in the same transaction), then the unit marked
done apart from them, as an ack would be: a redelivery runs the inserts
again and fails on the unique login, as the original did."""

from dramatiq.middleware import CurrentMessage

import actors
import validation
from db import FollowerCount, Job, database
from jobs import InvalidUnit, job_password_hash
from lab.workers import faults

faults.in_actor = True


def add_plainly(job, start, stop, password_hash):
    """The followers and their subscriptions, with no ON CONFLICT: an
    existing login raises a unique violation."""
    cursor = database.execute_sql(
        f"""
        WITH new_followers AS (
            INSERT INTO users (login, password, age, is_active)
            SELECT %(prefix)s || i, %(password)s, i, TRUE FROM generate_series(%(start)s, %(stop)s - 1) AS i
            RETURNING id
        ), subscribed AS (
            INSERT INTO subscriptions (author_id, follower_id) SELECT %(author)s, id FROM new_followers
            RETURNING author_id
        ), counted AS (  -- the schema's invariant: every subscription counted
            {FollowerCount.upsert("SELECT author_id, count(*) FROM subscribed GROUP BY author_id")}
        )
        SELECT count(*) FROM subscribed
        """,
        {"prefix": f"{job.followers_login}_#", "password": password_hash, "start": start, "stop": stop,
         "author": job.user_id},
    )
    return cursor.fetchone()[0]


def consume(**fields):
    unit = validation.validate(fields, validation.UNIT, strict=True)
    faults.before_effect(CurrentMessage.get_current_message())
    with database.connection_context():
        job = Job.get_or_none(Job.id == unit["job_id"])
        if job is None or not 0 <= unit["unit"] < job.units:
            raise InvalidUnit(f"no unit {unit['unit']} of job {unit['job_id']}")
        start, stop = job.unit_bounds(unit["unit"])
        password_hash = job_password_hash(job.id)
        with database.atomic():
            created = add_plainly(job, start, stop, password_hash)
        # Committed, not yet marked (the mark is this consumer's ack): the
        # crash of §4 strikes in between.
        faults.after_commit(CurrentMessage.get_current_message())
        mark_done(job.id, unit["unit"], created, stop - start - created)


def mark_done(job_id, unit, created, skipped):
    database.execute_sql(
        """
        INSERT INTO job_units (job_id, unit, status, created, skipped) VALUES (%s, %s, 'done', %s, %s)
        ON CONFLICT (job_id, unit) DO UPDATE SET status = 'done', created = EXCLUDED.created,
            skipped = EXCLUDED.skipped, error = NULL, updated_at = now()
        """,
        (job_id, unit, created, skipped),
    )


# The production actor, its name, queue and options kept, runs this instead.
actors.add_followers.fn = consume
