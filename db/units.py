"""Units of work: one message's worth of a job, with the statements that
apply them, exactly once, and record what became of them.

A unit's followers, its "done" row and, for an ordered job, its successor's
outbox row are written by one statement: what a unit does and what it sends
commit together, once.
"""

from typing import NamedTuple

from peewee import CharField, CompositeKey, ForeignKeyField, IntegerField, TextField, fn

from .database import Prepared, database
from .jobs import Job, next_ordered_job_sql, unit_kwargs
from .models import BaseModel, followers_ctes
from .outbox import Outbox


class UnitResult(NamedTuple):
    """What ``JobUnit.apply`` did, and what it saw of the job."""

    matched: bool  # the job matched: the unit was applied, or found done
    created: int | None  # followers created; None if the unit was done already
    sent: int  # messages written to the outbox (an ordered unit's successor)
    units: int | None  # the job's units; None if there is no such job
    ordered: bool
    user_id: int | None
    cancelled: bool
    size: int | None  # followers in this unit
    in_range: bool
    needs_lock: bool  # an ordered job's unit: apply it again under the user's lock


def _successor_sql(source):
    """What follows unit ``%(unit)s`` of an ordered job ``job`` (a CTE with
    the job's id, user_id, units and ordered), for a data-modifying CTE:
    the outbox row of the job's next unit or, after its last, of the first
    unit of the user's next ordered job; once per row of ``source``."""
    return Outbox.rows_sql("add_followers", unit_kwargs("next.job_id", "next.unit"), f"""{source},
            LATERAL (
                SELECT job.id AS job_id, %(unit)s + 1 AS unit WHERE %(unit)s + 1 < job.units
                UNION ALL
                SELECT {next_ordered_job_sql("job.user_id", "job.id")}, 0 WHERE %(unit)s + 1 >= job.units
            ) AS next
            WHERE job.ordered AND next.job_id IS NOT NULL""")


# The unit statement (``JobUnit.apply``), prepared once per connection: it
# runs once per message, and PostgreSQL spent twice as long parsing and
# planning it as running it.
_UNIT_FOLLOWERS = followers_ctes(password="job.password_hash", source="job", prefix="job.followers_login || '_#'",
                                 start="job.first", stop="job.stop", author="job.user_id")
_APPLY_UNIT = Prepared(
    "apply_unit",
    f"""
    WITH job AS (
        SELECT id, user_id, followers_login, password_hash, ordered, units,
               %(unit)s * unit_size AS first, LEAST((%(unit)s + 1) * unit_size, requested) AS stop
        FROM jobs
        WHERE id = %(job)s AND %(unit)s >= 0 AND %(unit)s < units AND status <> 'cancelled'
          AND password_hash IS NOT NULL AND (NOT ordered OR %(locked)s)
        FOR SHARE
    ), {_UNIT_FOLLOWERS}, unit AS (
        INSERT INTO job_units (job_id, unit, status, created, skipped)
        SELECT job.id, %(unit)s, 'done', made.n, job.stop - job.first - made.n
        FROM job, (SELECT count(*) AS n FROM subscribed) AS made
        ON CONFLICT (job_id, unit) DO UPDATE
            SET status = 'done', error = NULL, created = EXCLUDED.created,
                skipped = EXCLUDED.skipped, updated_at = now()
            WHERE job_units.status = 'failed'  -- a replayed dead letter
        RETURNING created
    ), successor AS (
        {_successor_sql("job, unit")}
    )
    SELECT (SELECT count(*) FROM job) > 0, (SELECT created FROM unit), (SELECT count(*) FROM successor),
           j.units, COALESCE(j.ordered, FALSE), j.user_id, COALESCE(j.status = 'cancelled', FALSE),
           -- Only for a unit of the job: unit * unit_size of any other may pass 2**31.
           CASE WHEN %(unit)s >= 0 AND %(unit)s < j.units
                THEN LEAST((%(unit)s + 1) * j.unit_size, j.requested) - %(unit)s * j.unit_size END
    FROM (SELECT 1) AS one LEFT JOIN jobs AS j ON j.id = %(job)s
    """,
    job="integer", unit="integer", queue="text", locked="boolean",
)


# Several units of one unordered job (``JobUnit.apply_many``): the unit
# statement for a set of units, with one job row lock and one commit.
_APPLY_UNITS = Prepared(
    "apply_units",
    f"""
    WITH job AS (
        SELECT id, user_id, followers_login, password_hash, unit_size, requested, units
        FROM jobs
        WHERE id = %(job)s AND status <> 'cancelled' AND password_hash IS NOT NULL AND NOT ordered
        FOR SHARE
    ), todo AS (
        SELECT DISTINCT u AS unit, u * job.unit_size AS first, LEAST((u + 1) * job.unit_size, job.requested) AS stop
        FROM job, unnest(%(units)s) AS u
        WHERE u >= 0 AND u < job.units
    ), {followers_ctes(password="job.password_hash", source="job, todo", prefix="job.followers_login || '_#'",
                       start="todo.first", stop="todo.stop", author="job.user_id", author_source="job")}, made AS (
        -- A follower's age is its index, so its unit is age / unit_size.
        SELECT new_followers.age / job.unit_size AS unit, count(*) AS n FROM job, new_followers GROUP BY 1
    ), marked AS (
        INSERT INTO job_units (job_id, unit, status, created, skipped)
        SELECT job.id, todo.unit, 'done', COALESCE(made.n, 0), todo.stop - todo.first - COALESCE(made.n, 0)
        FROM job, todo LEFT JOIN made ON made.unit = todo.unit
        ORDER BY todo.unit
        ON CONFLICT (job_id, unit) DO UPDATE
            SET status = 'done', error = NULL, created = EXCLUDED.created,
                skipped = EXCLUDED.skipped, updated_at = now()
            WHERE job_units.status = 'failed'  -- a replayed dead letter
        RETURNING unit, created
    )
    SELECT todo.unit, todo.stop - todo.first, marked.created FROM todo LEFT JOIN marked ON marked.unit = todo.unit
    """,
    job="integer", units="integer[]",
)


#: A condition on ``failed``, a unit of an ordered job: it is dead-lettered
#: and every unit before it is done, or failed (a unit purged before it,
#: which let the chain go on to this one), so the job's chain, and its
#: user's, wait on it (a dead letter's replay, its purge or its job's
#: cancel). Counting only done units, a second purged unit of one job held
#: nothing, and the rest of the job and the user's next jobs waited for good.
_HOLDS_THE_CHAIN = """failed.status = 'failed'
    AND failed.unit = (SELECT count(*) FROM job_units AS before
                       WHERE before.job_id = failed.job_id AND before.status IN ('done', 'failed')
                         AND before.unit < failed.unit)"""


def _pass_turn_sql(also="TRUE"):
    """Marks cancelled ordered job ``%(job)s``'s turn as passed on, the
    first time only and where ``also`` holds, for a data-modifying CTE
    that returns a row then (for ``_start_next_ordered_job_sql``)."""
    return f"""UPDATE jobs SET turn_passed = TRUE
                WHERE id = %(job)s AND ordered AND status = 'cancelled' AND NOT turn_passed AND {also}
                RETURNING id"""


def _start_next_ordered_job_sql(source):
    """How a cancelled ordered job passes its user's chain on, for a
    data-modifying CTE: the outbox row of the first unit of user
    ``%(user)s``'s next ordered job after job ``%(job)s``, once per row of
    ``source`` (none when no job is next, or when it has started already:
    created while this one was cancelled, it was sent at once, and its
    unit 0 sent again could run after its unit 1, or run though purged)."""
    return Outbox.rows_sql("add_followers", unit_kwargs("next.job_id", "0"), f"""{source},
        (SELECT {next_ordered_job_sql("%(user)s", "%(job)s")} AS job_id) AS next
        WHERE next.job_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM job_units AS started WHERE started.job_id = next.job_id)""")


class JobUnit(BaseModel):
    """The "done" mark of one unit of work (job + unit), committed in the
    same statement as its followers: the idempotency key of the whole
    pipeline. A redelivered or re-published unit finds its row and commits
    nothing twice, and, since only the statement that writes the row sends
    an ordered unit's successor, sends nothing twice either.

    ``status``: done; failed (dead-lettered, until a replay applies it);
    cancelled (a unit of an ordered job that came round after the job's
    cancel; the job's ``turn_passed`` says whether the user's chain was
    handed on)."""

    # The primary key (job, unit) already indexes job_id.
    job = ForeignKeyField(Job, on_delete="CASCADE", index=False)
    unit = IntegerField()
    status = CharField(max_length=16)
    created = IntegerField(default=0)
    skipped = IntegerField(default=0)
    error = TextField(null=True)

    class Meta:
        table_name = "job_units"
        primary_key = CompositeKey("job", "unit")

    @classmethod
    def apply(cls, job_id, unit, *, queue, locked):
        """Add one unit's followers, mark the unit done and, for an ordered
        job, write its successor to the outbox, in ONE statement: exactly
        once, because a follower that exists is skipped, a unit done already
        is not marked again, and only the marking sends the successor.

        Everything but (job, unit) is read from the job row, which the
        statement share-locks: a cancel waits for a unit under way, and a
        unit that comes after the cancel finds the job cancelled. An ordered
        job's unit must run under the user's ordering lock: unless the
        caller says it holds it (``locked``), the statement applies nothing
        and says so (``needs_lock``).

        No match: an unknown job, a unit out of range, a cancelled job, an
        ordered one without the lock, or its password not hashed yet; the
        result tells which.
        """
        cursor = database.execute_prepared(
            _APPLY_UNIT, {"job": job_id, "unit": unit, "queue": queue, "locked": locked}
        )
        matched, created, sent, units, ordered, user_id, cancelled, size = cursor.fetchone()
        in_range = units is not None and 0 <= unit < units
        needs_lock = not matched and ordered and in_range and not locked
        return UnitResult(matched, created, sent, units, ordered, user_id, cancelled, size, in_range, needs_lock)

    @classmethod
    def apply_many(cls, job_id, units):
        """Apply several units of one unordered job in ONE statement, each
        exactly as ``apply`` applies it alone: its followers, its done mark
        (a unit done already commits nothing), under the job row's share
        lock (a cancel waits for the statement; after it, nothing applies).

        Returns {unit: (followers in the unit, followers created, or None if
        the unit was done already)} for the units it settled. A unit it
        leaves out (no such job, cancelled, ordered, its password not hashed
        yet, out of range) must go through ``apply``, which tells why."""
        cursor = database.execute_prepared(_APPLY_UNITS, {"job": job_id, "units": list(units)})
        return {unit: (size, created) for unit, size, created in cursor.fetchall()}

    @classmethod
    def pass_cancelled(cls, job_id, user_id, unit, *, queue):
        """A unit of a cancelled ordered job came round: mark it cancelled
        (unless it has a row: done, or failed and replayed) and, unless the
        job's turn was passed already (``Job.turn_passed``), hand the user's
        chain to the next job. The caller holds the user's ordering lock.
        True if it passed it on."""
        cursor = database.execute_sql(
            f"""
            WITH mark AS (
                INSERT INTO job_units (job_id, unit, status, created, skipped)
                VALUES (%(job)s, %(unit)s, 'cancelled', 0, 0)
                ON CONFLICT (job_id, unit) DO NOTHING
            ), passed AS (
                {_pass_turn_sql()}
            ), successor AS (
                {_start_next_ordered_job_sql("passed")}
            )
            SELECT count(*) FROM successor
            """,
            {"job": job_id, "unit": unit, "user": user_id, "queue": queue},
        )
        return bool(cursor.fetchone()[0])

    @classmethod
    def pass_turn_held_by_dead_letter(cls, job_id, user_id, *, queue):
        """A cancelled ordered job whose chain waits on a dead letter (its
        first unit not done is failed): none of its units will come round
        to pass the user's chain on (``pass_cancelled``), so pass it now.
        The caller holds the user's ordering lock, in the transaction that
        cancelled the job. ``Job.turn_passed`` makes it once: a replay or
        purge of that dead letter then passes nothing. True if it passed it
        on."""
        cursor = database.execute_sql(
            f"""
            WITH held AS (
                SELECT 1 FROM job_units AS failed WHERE failed.job_id = %(job)s AND {_HOLDS_THE_CHAIN} LIMIT 1
            ), passed AS (
                {_pass_turn_sql("EXISTS (SELECT 1 FROM held)")}
            ), successor AS (
                {_start_next_ordered_job_sql("passed")}
            )
            SELECT count(*) FROM successor
            """,
            {"job": job_id, "user": user_id, "queue": queue},
        )
        return bool(cursor.fetchone()[0])

    @classmethod
    def pass_turn_of_purged(cls, job_id, unit, user_id, *, queue):
        """Unit ``unit`` of an ordered job was dead-lettered, and its dead
        letter is purged: it will never run to send what follows it, so send
        that now (the job's next unit, or the user's next job): the rest of
        the job, and of the user's jobs, goes on without it, as an unordered
        job's other units do. After a job's last unit, the job is marked
        failed: it will never be through (``next_ordered_job_sql``). For a
        cancelled job, the user's next job, unless its turn was passed
        already (a unit of it in flight at the cancel, dead-lettered since:
        nothing else would pass it). Nothing for a unit that does not hold
        the chain.
        The caller holds the user's ordering lock, in the transaction that
        forgets the dead letter (``ops.dead_letters.forget``, which says how
        that is once). True if it sent anything."""
        cursor = database.execute_sql(
            f"""
            WITH job AS (
                SELECT id, user_id, units, ordered FROM jobs
                WHERE id = %(job)s AND user_id = %(user)s AND ordered AND status <> 'cancelled'
            ), held AS (
                SELECT 1 FROM job_units AS failed
                WHERE failed.job_id = %(job)s AND failed.unit = %(unit)s AND {_HOLDS_THE_CHAIN}
            ), successor AS (
                {_successor_sql("job, held")}
            ), through AS (
                -- Its last unit will never be done: mark the job failed, or
                -- the user's ordered jobs created later would wait behind it.
                UPDATE jobs SET status = 'failed', updated_at = now() FROM job, held
                WHERE jobs.id = job.id AND %(unit)s + 1 >= job.units AND jobs.status = 'queued'
            ), passed AS (
                {_pass_turn_sql("user_id = %(user)s AND EXISTS (SELECT 1 FROM held)")}
            ), handed_on AS (
                {_start_next_ordered_job_sql("passed")}
            )
            SELECT (SELECT count(*) FROM successor) + (SELECT count(*) FROM handed_on)
            """,
            {"job": job_id, "unit": unit, "user": user_id, "queue": queue},
        )
        return bool(cursor.fetchone()[0])

    @classmethod
    def touch(cls, job_id, unit):
        """Stamp the unit's row (if it has one) as changed now: a replay of
        its dead letter, so that ``Job.prune`` leaves its job be."""
        if job_id is not None:
            cls.update(updated_at=fn.now()).where((cls.job == job_id) & (cls.unit == unit)).execute()

    @classmethod
    def mark_failed(cls, job_id, unit, error, *, replace_error=True):
        """Record a dead-lettered unit so the job shows it. Never undoes a
        unit that is done, and records nothing for a unit its job does not
        have: a message that lies about its job leaves the job's counts as
        they are. A unit failed already takes the new ``error`` unless
        ``replace_error`` is false."""
        database.execute_sql(
            """
            INSERT INTO job_units (job_id, unit, status, error, created, skipped)
            SELECT id, %(unit)s, 'failed', %(error)s, 0, 0 FROM jobs
            WHERE id = %(job)s AND %(unit)s >= 0 AND %(unit)s < units
            ON CONFLICT (job_id, unit) DO UPDATE SET error = EXCLUDED.error, updated_at = now()
                WHERE job_units.status = 'failed' AND %(replace)s
            """,
            {"job": job_id, "unit": unit, "error": error, "replace": replace_error},
        )


JOB_MODELS = [Job, JobUnit]
