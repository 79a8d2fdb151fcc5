"""Jobs and their units of work, with the statements that create, apply,
chain and report them.

A job is one asynchronous add-followers request, cut into ``units`` units of
at most ``unit_size`` followers; a unit is what one message asks for. Every
message a statement decides to send (a new job's units, an ordered unit's
successor) is written to the outbox by that same statement, so it is
committed with what calls for it, or not at all.
"""

from typing import NamedTuple

from peewee import AutoField, BooleanField, CharField, CompositeKey, ForeignKeyField, IntegerField, TextField

from .database import Prepared, database
from .models import BaseModel, User, followers_ctes
from .outbox import Outbox


def status_sql(job, done, failed):
    """A job's status, as SQL: the one definition, used for a single job and
    for the counts of /metrics alike. ``job`` is a row of ``jobs``; ``done``
    and ``failed`` count its units' rows. A job whose units are all done is
    done, even if a cancel raced with its last unit."""
    return f"""CASE
        WHEN {done} >= {job}.units THEN 'done'
        WHEN {job}.status IN ('cancelled', 'failed') THEN {job}.status
        WHEN {done} + {failed} >= {job}.units THEN 'failed'
        WHEN {done} + {failed} > 0 THEN 'running'
        ELSE {job}.status
    END"""


def next_ordered_job_sql(user, after):
    """The id of the user's ordered job that runs next, as SQL: the first
    after job ``after`` that is not through (its last unit done), failed,
    cancelled or empty; NULL if none. The one definition of "which job of
    this user runs next", for the API that creates a job and for the unit
    that ends one. Both run it under the user's ordering lock
    (``User.lock_for_ordering``), so a job is started once, by one of them."""
    return f"""(
        SELECT n.id FROM jobs AS n
        WHERE n.user_id = {user} AND n.ordered AND n.id > {after} AND n.units > 0
          AND n.status NOT IN ('failed', 'cancelled')
          AND NOT EXISTS (
              SELECT 1 FROM job_units AS last
              WHERE last.job_id = n.id AND last.unit = n.units - 1 AND last.status = 'done'
          )
        ORDER BY n.id LIMIT 1
    )"""


def _unit_kwargs(job, unit):
    return f"jsonb_build_object('job_id', {job}, 'unit', {unit})"


class Job(BaseModel):
    """``status`` holds what the API and the operator decide (queued,
    cancelled); running, done and failed are derived from the units' rows
    (``status_sql``), so that no worker has to update this hot row."""

    id = AutoField()  # as Peewee would add it, written out for type checkers
    user = ForeignKeyField(User, on_delete="CASCADE")
    user_id: int  # the foreign key's raw id, which Peewee adds
    followers_login = CharField(max_length=32)
    requested = IntegerField()
    unit_size = IntegerField()
    units = IntegerField()
    status = CharField(max_length=16, default="queued")
    # Units of an ordered job run one after another, and after the user's
    # earlier ordered jobs (settings.ORDERED_PER_USER when it was created).
    ordered = BooleanField(default=False)
    # Its units are in the outbox (or sent): a large job's split_job sets it
    # when it writes them, so a split_job delivered twice writes them once.
    enqueued = BooleanField(default=True)
    error = TextField(null=True)
    # Hashed once per job by the first unit that needs it (not by the API,
    # which would then spend ~50 ms of CPU on every request).
    password_hash = CharField(max_length=160, null=True)

    class Meta:
        table_name = "jobs"

    @classmethod
    def create_with_units(cls, user_id, *, queue, followers_login, requested, unit_size, units, inline_units):
        """Insert a job for a user that exists and write its messages to the
        outbox, in ONE statement (one round trip, atomic on its own): its
        units if there are at most ``inline_units``, else one ``split_job``.
        None if the user does not exist."""
        return cls._one(
            f"""
                WITH job AS (
                    INSERT INTO jobs (user_id, followers_login, requested, unit_size, units, ordered, enqueued, status)
                    SELECT id, %(login)s, %(requested)s, %(size)s, %(units)s, FALSE, %(units)s <= %(inline)s, 'queued'
                    FROM users WHERE id = %(user)s
                    RETURNING *
                ), messages AS (
                    INSERT INTO outbox (queue_name, actor_name, kwargs)
                    SELECT %(queue)s, 'add_followers', {_unit_kwargs("job.id", "u")}
                    FROM job, generate_series(0, job.units - 1) AS u WHERE job.enqueued
                    UNION ALL
                    SELECT %(queue)s, 'split_job', jsonb_build_object('job_id', job.id) FROM job WHERE NOT job.enqueued
                    RETURNING 1
                )
                SELECT job.* FROM job
                """,
            {"user": user_id, "login": followers_login, "requested": requested, "size": unit_size,
             "units": units, "inline": inline_units, "queue": queue},
        )

    @classmethod
    def create_ordered(cls, user, *, queue, followers_login, requested, unit_size, units):
        """Insert an ordered job and, if no job of the user is ahead of it,
        write its first unit to the outbox; otherwise the unit that ends the
        job ahead of it will. The caller holds the user's ordering lock."""
        return cls._one(
            f"""
                WITH job AS (
                    INSERT INTO jobs (user_id, followers_login, requested, unit_size, units, ordered, enqueued, status)
                    VALUES (%(user)s, %(login)s, %(requested)s, %(size)s, %(units)s, TRUE, TRUE, 'queued')
                    RETURNING *
                ), first_unit AS (
                    INSERT INTO outbox (queue_name, actor_name, kwargs)
                    SELECT %(queue)s, 'add_followers', {_unit_kwargs("job.id", "0")} FROM job
                    -- The new job is not visible to this statement: NULL means none is ahead of it.
                    WHERE job.units > 0 AND {next_ordered_job_sql("job.user_id", "0")} IS NULL
                    RETURNING 1
                )
                SELECT job.* FROM job
                """,
            {"user": user.id, "login": followers_login, "requested": requested, "size": unit_size,
             "units": units, "queue": queue},
        )

    @classmethod
    def _one(cls, sql, params):
        """The job a statement returns (``SELECT job.*``), or None."""
        cursor = database.execute_sql(sql, params)
        row = cursor.fetchone()
        return None if row is None else cls(**dict(zip((column[0] for column in cursor.description), row, strict=True)))

    @classmethod
    def enqueue_units(cls, job_id, *, queue):
        """Write the units of a job that was too large to write inside the
        request (``split_job``), once. Returns (job exists, units written)."""
        cursor = database.execute_sql(
            f"""
            WITH job AS (
                UPDATE jobs SET enqueued = TRUE, updated_at = now()
                WHERE id = %(job)s AND NOT enqueued AND status <> 'cancelled'
                RETURNING id, units
            ), messages AS (
                {Outbox.rows_sql("add_followers", _unit_kwargs("job.id", "u"),
                                 "job, generate_series(0, job.units - 1) AS u")}
            )
            SELECT EXISTS (SELECT 1 FROM jobs WHERE id = %(job)s), (SELECT count(*) FROM messages)
            """,
            {"job": job_id, "queue": queue},
        )
        return cursor.fetchone()

    def unit_bounds(self, unit):
        """The follower indexes [start, stop) of one unit."""
        start = unit * self.unit_size
        return start, min(start + self.unit_size, self.requested)

    def progress(self):
        """The units' counts and the job's status (``status_sql``), in one query."""
        cursor = database.execute_sql(
            f"""
            SELECT u.done, u.failed, u.created, u.skipped, u.updated_at, {status_sql("j", "u.done", "u.failed")}
            FROM jobs AS j, LATERAL (
                SELECT count(*) FILTER (WHERE status = 'done') AS done,
                       count(*) FILTER (WHERE status = 'failed') AS failed,
                       COALESCE(sum(created), 0) AS created, COALESCE(sum(skipped), 0) AS skipped,
                       max(updated_at) AS updated_at
                FROM job_units WHERE job_id = j.id
            ) AS u
            WHERE j.id = %s
            """,
            (self.id,),
        )
        keys = ("done", "failed", "created", "skipped", "updated_at", "status")
        return dict(zip(keys, cursor.fetchone(), strict=True))

    def unit_errors(self, limit=20):
        query = (
            JobUnit.select(JobUnit.unit, JobUnit.error)
            .where((JobUnit.job == self.id) & (JobUnit.status == "failed"))
            .order_by(JobUnit.unit)
            .limit(limit)
        )
        return [f"unit {row.unit}: {row.error}" for row in query]

    def to_dict(self, *, progress=None, unit_errors=None):
        """The job as the API shows it; ``progress`` and ``unit_errors``
        when the caller fetched them already (a page of jobs)."""
        progress = progress or self.progress()
        errors = ([self.error] if self.error else []) + (self.unit_errors() if unit_errors is None else unit_errors)
        updated_at = max(filter(None, [self.updated_at, progress["updated_at"]]))
        return {
            "id": self.id,
            "userId": self.user_id,
            "followersLogin": self.followers_login,
            "requested": self.requested,
            "created": progress["created"],
            "skipped": progress["skipped"],
            "status": progress["status"],
            # The API calls a job's units "messages": one message each.
            "messages": {"total": self.units, "done": progress["done"], "failed": progress["failed"]},
            "errors": errors,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": updated_at.isoformat(),
        }

    @classmethod
    def count_by_status(cls):
        """{status: jobs}, in one aggregate query (for the API's /metrics)."""
        cursor = database.execute_sql(
            f"""
            SELECT {status_sql("j", "COALESCE(u.done, 0)", "COALESCE(u.failed, 0)")} AS status, count(*)
            FROM jobs AS j
            LEFT JOIN (
                SELECT job_id, count(*) FILTER (WHERE status = 'done') AS done,
                       count(*) FILTER (WHERE status = 'failed') AS failed
                FROM job_units GROUP BY job_id
            ) AS u ON u.job_id = j.id
            GROUP BY 1
            """
        )
        return dict(cursor.fetchall())

    # --- Operations: the console and its API ------------------------------

    @classmethod
    def cancel(cls, job_id):
        """Mark the job cancelled, in one statement that leaves a finished
        job alone (failed to publish, or every unit done or dead-lettered).
        True if this call cancelled it. From then on no unit of it applies:
        ``JobUnit.apply`` checks the status in its own statement, under a
        share lock of the row, so this waits for a unit under way."""
        cursor = database.execute_sql(
            """
            UPDATE jobs SET status = 'cancelled', updated_at = now()
            WHERE id = %(job)s AND status NOT IN ('failed', 'cancelled')
              AND units > (SELECT count(*) FROM job_units WHERE job_id = %(job)s AND status IN ('done', 'failed'))
            RETURNING id
            """,
            {"job": job_id},
        )
        return cursor.fetchone() is not None

    @classmethod
    def page(cls, *, status=None, user_id=None, before=None, limit=50):
        """Jobs newest first, with ids below ``before`` (keyset pagination:
        a page costs the same however deep), of one user and of one derived
        status if given. Returns [(job, progress, unit errors)] in two
        round trips whatever the page's size."""
        jobs = list(
            cls.raw(
                f"""
                SELECT j.*, u.done, u.failed, u.created AS units_created, u.skipped AS units_skipped,
                       u.updated_at AS units_updated_at, {status_sql("j", "u.done", "u.failed")} AS derived_status
                FROM jobs AS j
                CROSS JOIN LATERAL (
                    SELECT count(*) FILTER (WHERE status = 'done') AS done,
                           count(*) FILTER (WHERE status = 'failed') AS failed,
                           COALESCE(sum(created), 0) AS created, COALESCE(sum(skipped), 0) AS skipped,
                           max(updated_at) AS updated_at
                    FROM job_units WHERE job_id = j.id
                ) AS u
                WHERE (%s::int IS NULL OR j.id < %s) AND (%s::int IS NULL OR j.user_id = %s)
                  AND (%s::text IS NULL OR {status_sql("j", "u.done", "u.failed")} = %s)
                ORDER BY j.id DESC
                LIMIT %s
                """,
                before, before, user_id, user_id, status, status, limit,
            )
        )
        errors: dict[int, list[str]] = {job.id: [] for job in jobs}
        failing = [job.id for job in jobs if job.failed]
        if failing:
            cursor = database.execute_sql(
                """
                SELECT job_id, unit, error FROM (
                    SELECT job_id, unit, error, row_number() OVER (PARTITION BY job_id ORDER BY unit) AS n
                    FROM job_units WHERE job_id = ANY(%s) AND status = 'failed'
                ) AS failed WHERE n <= 20
                ORDER BY job_id, unit
                """,
                (failing,),
            )
            for job_id, unit, error in cursor.fetchall():
                errors[job_id].append(f"unit {unit}: {error}")
        return [
            (job, {"done": job.done, "failed": job.failed, "created": job.units_created,
                   "skipped": job.units_skipped, "updated_at": job.units_updated_at,
                   "status": job.derived_status}, errors[job.id])
            for job in jobs
        ]

    def unit_rows(self, limit=500):
        """The job's finished units (done, dead-lettered or cancelled), in order."""
        return list(JobUnit.select().where(JobUnit.job == self.id).order_by(JobUnit.unit).limit(limit))


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
        {Outbox.rows_sql("add_followers", _unit_kwargs("next.job_id", "next.unit"), f'''job, unit,
            LATERAL (
                SELECT job.id AS job_id, %(unit)s + 1 AS unit WHERE %(unit)s + 1 < job.units
                UNION ALL
                SELECT {next_ordered_job_sql("job.user_id", "job.id")}, 0 WHERE %(unit)s + 1 >= job.units
            ) AS next
            WHERE job.ordered AND next.job_id IS NOT NULL''')}
    )
    SELECT (SELECT count(*) FROM job) > 0, (SELECT created FROM unit), (SELECT count(*) FROM successor),
           j.units, COALESCE(j.ordered, FALSE), j.user_id, COALESCE(j.status = 'cancelled', FALSE),
           LEAST((%(unit)s + 1) * j.unit_size, j.requested) - %(unit)s * j.unit_size
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


class JobUnit(BaseModel):
    """The "done" mark of one unit of work (job + unit), committed in the
    same statement as its followers: the idempotency key of the whole
    pipeline. A redelivered or re-published unit finds its row and commits
    nothing twice, and, since only the statement that writes the row sends
    an ordered unit's successor, sends nothing twice either.

    ``status``: done; failed (dead-lettered, until a replay applies it);
    cancelled (a unit of an ordered job cancelled under it, which passed
    the user's chain on)."""

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
        and, the first time only, hand the user's chain to the next job.
        The caller holds the user's ordering lock. True if it passed it on."""
        cursor = database.execute_sql(
            f"""
            WITH mark AS (
                INSERT INTO job_units (job_id, unit, status, created, skipped)
                VALUES (%(job)s, %(unit)s, 'cancelled', 0, 0)
                ON CONFLICT (job_id, unit) DO NOTHING
                RETURNING 1
            ), successor AS (
                {Outbox.rows_sql("add_followers", _unit_kwargs("next.job_id", "0"), f'''mark,
                    (SELECT {next_ordered_job_sql("%(user)s", "%(job)s")} AS job_id) AS next
                    WHERE next.job_id IS NOT NULL''')}
            )
            SELECT (SELECT count(*) FROM mark)
            """,
            {"job": job_id, "unit": unit, "user": user_id, "queue": queue},
        )
        return bool(cursor.fetchone()[0])

    @classmethod
    def mark_failed(cls, job_id, unit, error):
        """Record a dead-lettered unit so the job shows it. Never undoes a
        unit that is done, and records nothing for a unit its job does not
        have: a message that lies about its job leaves the job's counts as
        they are."""
        database.execute_sql(
            """
            INSERT INTO job_units (job_id, unit, status, error, created, skipped)
            SELECT id, %(unit)s, 'failed', %(error)s, 0, 0 FROM jobs
            WHERE id = %(job)s AND %(unit)s >= 0 AND %(unit)s < units
            ON CONFLICT (job_id, unit) DO UPDATE SET error = EXCLUDED.error, updated_at = now()
                WHERE job_units.status = 'failed'
            """,
            {"job": job_id, "unit": unit, "error": error},
        )


JOB_MODELS = [Job, JobUnit]
