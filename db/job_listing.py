"""A job's status, derived from its units' rows, and the reads of many jobs
at once that rely on it: the console's pages and the counts by status (the
overview, /metrics). ``JobListing``'s methods are ``Job``'s (db/jobs.py
mixes them in); this module holds what they read jobs through.
"""

from collections.abc import Callable
from typing import Any

from .database import database


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


#: Jobs ``Job.settle`` marks at most in one call (~60 ms of PostgreSQL's time).
SETTLE_LIMIT = 5_000


class JobListing:
    """``Job``'s reads of many jobs at once, and ``settle``, which keeps them
    off the jobs that are done."""

    raw: Callable[..., Any]  # Peewee's Model.raw, which Job has

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
        up over several reads (~60 ms each), not by the first at once.
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
