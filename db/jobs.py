"""Jobs, with the statements that create, chain, cancel and report them.

A job is one asynchronous add-followers request, cut into ``units`` units of
at most ``unit_size`` followers; a unit is what one message asks for
(``db.units``). Every message a statement decides to send (a new job's
units, an ordered unit's successor) is written to the outbox by that same
statement, so it is committed with what calls for it, or not at all.
"""

from peewee import AutoField, BooleanField, CharField, ForeignKeyField, IntegerField, TextField

from .database import Prepared, database
from .models import BaseModel, User
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


#: A job's units in one row (``u``): what its status and progress are read
#: from, for one job and for a page of them alike.
UNIT_COUNTS_SQL = """LATERAL (
    SELECT count(*) FILTER (WHERE status = 'done') AS done,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           COALESCE(sum(created), 0) AS created, COALESCE(sum(skipped), 0) AS skipped,
           max(updated_at) AS updated_at
    FROM job_units WHERE job_id = j.id
) AS u"""


#: The jobs a page of one status can hold, found through partial indexes
#: (db/schema.py) instead of counting the units of every job for its
#: status: a status few jobs have read the whole table (300,000 jobs: 366
#: ms a page of failed ones, 446 of queued ones). A job is failed only if
#: marked so or with a failed unit (a job whose units are all done is done,
#: and one with none failed is not through), cancelled only if marked so,
#: queued or running only while still ``queued`` in its column, which
#: ``Job.settle`` turns to ``done`` once its units are; ``status_sql``
#: still decides.
PAGE_CANDIDATES_SQL = {
    "queued": "SELECT * FROM jobs WHERE status = 'queued'",
    "running": "SELECT * FROM jobs WHERE status = 'queued'",
    "failed": """SELECT * FROM jobs WHERE id IN (
        SELECT id FROM jobs WHERE status = 'failed'
        UNION SELECT job_id FROM job_units WHERE status = 'failed')""",
    "cancelled": "SELECT * FROM jobs WHERE status = 'cancelled'",
}


#: Jobs ``Job.settle`` marks at most in one call (~0.1 s of PostgreSQL's time).
SETTLE_LIMIT = 5_000


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


def unit_kwargs(job, unit):
    return f"jsonb_build_object('job_id', {job}, 'unit', {unit})"


# The API's one statement per async request (``Job.create_with_units``),
# prepared once per connection: PostgreSQL spent ~340 us of CPU parsing,
# planning and running it, ~170 us running it prepared (3,000 runs each on
# one connection, docs/benchmark.md).
_CREATE_WITH_UNITS = Prepared(
    "create_job_with_units",
    f"""
    WITH job AS (
        INSERT INTO jobs (user_id, followers_login, requested, unit_size, units, ordered, enqueued, status)
        SELECT id, %(login)s, %(requested)s, %(size)s, %(units)s, FALSE, %(units)s <= %(inline)s, 'queued'
        FROM users WHERE id = %(user)s
        RETURNING *
    ), messages AS (
        INSERT INTO outbox (queue_name, actor_name, kwargs)
        SELECT %(queue)s, 'add_followers', {unit_kwargs("job.id", "u")}
        FROM job, generate_series(0, job.units - 1) AS u WHERE job.enqueued
        UNION ALL
        SELECT %(queue)s, 'split_job', jsonb_build_object('job_id', job.id) FROM job WHERE NOT job.enqueued
        RETURNING 1
    )
    SELECT job.id FROM job
    """,
    user="integer", login="text", requested="integer", size="integer", units="integer", inline="integer",
    queue="text",
)


class Job(BaseModel):
    """``status`` holds what the API and the operator decide (queued,
    cancelled, failed by a purge); running, done and failed are derived
    from the units' rows (``status_sql``), so that no worker has to update
    this hot row. A job seen done is marked so afterwards (``settle``), so
    that the readers of jobs in flight skip it."""

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
        None if the user does not exist.

        Only the new id comes back; the rest of the Job is what was written
        (but for the timestamps): reading back every column and building a
        Model from it cost ~20-40 us of CPU per request, 10-17% of the
        app's own (docs/benchmark.md)."""
        row = database.execute_prepared(
            _CREATE_WITH_UNITS,
            {"user": user_id, "login": followers_login, "requested": requested, "size": unit_size,
             "units": units, "inline": inline_units, "queue": queue},
        ).fetchone()
        if row is None:
            return None
        return cls(id=row[0], user=user_id, followers_login=followers_login, requested=requested,
                   unit_size=unit_size, units=units, ordered=False, enqueued=units <= inline_units, status="queued")

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
                    SELECT %(queue)s, 'add_followers', {unit_kwargs("job.id", "0")} FROM job
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
                {Outbox.rows_sql("add_followers", unit_kwargs("job.id", "u"),
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
            FROM jobs AS j, {UNIT_COUNTS_SQL}
            WHERE j.id = %s
            """,
            (self.id,),
        )
        keys = ("done", "failed", "created", "skipped", "updated_at", "status")
        return dict(zip(keys, cursor.fetchone(), strict=True))

    def unit_errors(self, limit=20):
        from .units import JobUnit  # db.units imports this module: JobUnit's rows point at a Job

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
            "cancellable": self.cancellable(progress["status"]),
            # The API calls a job's units "messages": one message each.
            "messages": {"total": self.units, "done": progress["done"], "failed": progress["failed"]},
            "errors": errors,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": updated_at.isoformat(),
        }

    @classmethod
    def settle(cls, limit=SETTLE_LIMIT):
        """Mark ``done`` in its column every job still ``queued`` there whose
        units are all done, which nothing undoes. It changes no status, only
        where readers find it: the jobs in flight, which ``count_by_status``
        and a page of queued or running jobs count the units of, are then
        the jobs still ``queued`` (a partial index, db/schema.py), not every
        job. Readers settle before they read (workers finish units, not
        jobs: they would have to count a job's units at each one), so each
        job costs one UPDATE once, and a read counts the units of the jobs
        finished since the last one and of those in flight.
        Returns how many it marked.

        At most ``limit`` jobs, oldest first: a database that never settled
        (one older than this, with 300,000 jobs: 2.9 s at once) is caught
        up over several reads (~0.1 s each), not by the first at once.
        Rows locked meanwhile (a cancel, a unit of the job running) are
        left to the next reader: readers never wait for each other."""
        cursor = database.execute_sql(
            """
            UPDATE jobs SET status = 'done'
            WHERE id = ANY(ARRAY(
                SELECT id FROM jobs AS j
                WHERE status = 'queued'
                  AND units <= (SELECT count(*) FROM job_units WHERE job_id = j.id AND status = 'done')
                ORDER BY id LIMIT %s
                FOR UPDATE SKIP LOCKED
            ))
            """,
            (limit,),
        )
        return cursor.rowcount

    @classmethod
    def count_by_status(cls):
        """{status: jobs}, in one aggregate query (for the API's /metrics and
        the console's overview), after ``settle``: the units of jobs in flight
        and of jobs marked cancelled or failed are counted, those settled
        done are not (300,000 done jobs: 160 ms a count before)."""
        cls.settle()
        cursor = database.execute_sql(
            f"""
            SELECT status, sum(jobs)::int FROM (
                SELECT 'done' AS status, count(*) AS jobs FROM jobs WHERE status = 'done'
                UNION ALL
                SELECT {status_sql("j", "u.done", "u.failed")}, count(*)
                FROM (SELECT * FROM jobs WHERE status = 'queued'
                      UNION ALL SELECT * FROM jobs WHERE status IN ('cancelled', 'failed')) AS j
                CROSS JOIN {UNIT_COUNTS_SQL}
                GROUP BY 1
            ) AS counted
            GROUP BY status HAVING sum(jobs) > 0
            """
        )
        return dict(cursor.fetchall())

    # --- Operations: the console and its API ------------------------------

    @classmethod
    def cancel(cls, job_id):
        """Mark the job cancelled, in one statement that leaves a finished
        job alone: failed to publish, every unit done, or every unit done or
        dead-lettered, unless it is ordered (``cancellable``). True if this
        call cancelled it. From then on no unit of it applies:
        ``JobUnit.apply`` checks the status in its own statement, under a
        share lock of the row, so this waits for a unit under way."""
        cursor = database.execute_sql(
            """
            UPDATE jobs SET status = 'cancelled', updated_at = now()
            FROM (SELECT count(*) FILTER (WHERE status = 'done') AS done,
                         count(*) FILTER (WHERE status = 'failed') AS failed
                  FROM job_units WHERE job_id = %(job)s) AS u
            WHERE id = %(job)s AND status NOT IN ('failed', 'cancelled')
              AND units > u.done AND (ordered OR units > u.done + u.failed)
            RETURNING id
            """,
            {"job": job_id},
        )
        return cursor.fetchone() is not None

    def cancellable(self, status):
        """Whether ``cancel`` would cancel the job, whose derived status is
        ``status``: while it is queued or running, or, ordered, failed by a
        dead letter, which holds its user's next ordered jobs until it is
        replayed or purged, or the job cancelled (its units run one after
        another, so the first one not done is that dead letter). The rule of ``cancel``'s
        statement, read from what the job's page has fetched already."""
        return status in ("queued", "running") or (status == "failed" and self.ordered and self.status != "failed")

    @classmethod
    def page(cls, *, status=None, user_id=None, before=None, limit=50):
        """Jobs newest first, with ids below ``before`` (keyset pagination:
        a page costs the same however deep), of one user and of one derived
        status if given. Returns [(job, progress, unit errors)] in two
        round trips whatever the page's size."""
        # A page of one status but done starts from the jobs that can be so
        # (PAGE_CANDIDATES_SQL); any other reads jobs newest first until
        # the page is full (most jobs are done).
        if status in ("queued", "running"):
            cls.settle()
        jobs_sql = f"({PAGE_CANDIDATES_SQL[status]})" if status in PAGE_CANDIDATES_SQL else "jobs"
        jobs = list(
            cls.raw(
                f"""
                SELECT j.*, u.done, u.failed, u.created AS units_created, u.skipped AS units_skipped,
                       u.updated_at AS units_updated_at, {status_sql("j", "u.done", "u.failed")} AS derived_status
                FROM {jobs_sql} AS j
                CROSS JOIN {UNIT_COUNTS_SQL}
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
        from .units import JobUnit  # db.units imports this module: JobUnit's rows point at a Job

        return list(JobUnit.select().where(JobUnit.job == self.id).order_by(JobUnit.unit).limit(limit))
