"""The pages of jobs and their counts by status, which the console and
/metrics read, against the real PostgreSQL: each job's status as the job
itself tells it, and the jobs counted to find them (``Job.settle``)."""

import psycopg2
import pytest

import followers
import jobs
import settings
from db import Job, JobUnit, database
from tests.test_follower_pages import plan_nodes


def test_the_page_of_jobs_derives_status_and_progress_as_the_job_does(author):
    other = followers.create_user("other", "pw", 1)
    made = [jobs.create_job(author.id, f"p{i}", 4, unit_size=2) for i in range(4)]
    later = jobs.create_job(other.id, "o", 2, unit_size=2)
    jobs.apply_unit(made[1].id, 0)  # running
    jobs.apply_unit(made[2].id, 0)
    jobs.apply_unit(made[2].id, 1)  # done
    JobUnit.mark_failed(made[3].id, 0, "boom")
    JobUnit.mark_failed(made[3].id, 1, "bang")  # failed
    jobs.cancel_job(later.id)
    page = Job.page(limit=10)
    assert [job.id for job, _, _ in page] == [later.id] + [job.id for job in reversed(made)]
    for job, progress, errors in page:
        assert job.to_dict(progress=progress, unit_errors=errors) == Job.get_by_id(job.id).to_dict()
    statuses = {status: [job.id for job, _, _ in Job.page(status=status)]
                for status in ("queued", "running", "done", "failed", "cancelled")}
    assert statuses == {"queued": [made[0].id], "running": [made[1].id], "done": [made[2].id],
                        "failed": [made[3].id], "cancelled": [later.id]}
    assert [job.id for job, _, _ in Job.page(user_id=other.id)] == [later.id]
    assert Job.page(status="failed")[0][2] == ["unit 0: boom", "unit 1: bang"]


def test_pages_follow_each_other_without_gaps_or_repeats(author):
    ids = [jobs.create_job(author.id, f"k{i}", 1).id for i in range(7)]
    seen, before = [], None
    while True:
        page = Job.page(before=before, limit=3)
        if not page:
            break
        seen += [job.id for job, _, _ in page]
        before = page[-1][0].id
    assert seen == sorted(ids, reverse=True)


# --- Finding the few among many done jobs ----------------------------------


def bulk_done_jobs(author, count):
    """``count`` one-unit jobs, each unit done, as if the workers had run
    them: still ``queued`` in their column, as the workers leave them."""
    database.execute_sql(
        """WITH made AS (
               INSERT INTO jobs (user_id, followers_login, requested, unit_size, units, status, ordered, enqueued,
                                 created_at, updated_at)
               SELECT %s, 'bulk' || i, 1, 1, 1, 'queued', FALSE, TRUE, now(), now()
               FROM generate_series(1, %s) AS i RETURNING id)
           INSERT INTO job_units (job_id, unit, status, created, skipped, created_at, updated_at)
           SELECT id, 0, 'done', 1, 0, now(), now() FROM made""",
        (author.id, count),
    )


def units_counted(sql, params):
    """How many jobs' units the statement counted (its loops over
    job_units' primary key), run under EXPLAIN ANALYZE."""
    (explained,) = database.execute_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params).fetchone()
    counted = [node["Actual Loops"] for node in plan_nodes(explained[0]["Plan"])
               if node.get("Relation Name") == "job_units" and node.get("Index Name") == "job_units_pkey"]
    return max(counted, default=0)


@pytest.fixture
def one_job_of_each_status(author):
    """Among 2,000 done jobs, one job of each other status."""
    bulk_done_jobs(author, 2000)
    made = {status: jobs.create_job(author.id, status, 2, unit_size=1)
            for status in ("queued", "running", "failed", "cancelled")}
    jobs.apply_unit(made["running"].id, 0)
    JobUnit.mark_failed(made["failed"].id, 0, "boom")
    jobs.apply_unit(made["failed"].id, 1)
    jobs.cancel_job(made["cancelled"].id)
    database.execute_sql("ANALYZE jobs, job_units")
    return made


@pytest.mark.parametrize("status", ["queued", "running", "failed", "cancelled"])
def test_a_page_of_a_status_few_jobs_have_counts_the_units_of_those_jobs_only(
        one_job_of_each_status, monkeypatch, status):
    """The page of such a status must not count the units of every job to
    find it (it did: 300,000 jobs took 366 ms a page of failed jobs, 446 of
    queued ones). Queued and running jobs are found among the jobs not yet
    settled (``Job.settle``): the ones in flight, and the one failed."""
    statements = []
    raw = Job.raw
    monkeypatch.setattr(Job, "raw", lambda sql, *params: statements.append((sql, params)) or raw(sql, *params))

    page = Job.page(status=status)
    assert [job.id for job, _, _ in page] == [one_job_of_each_status[status].id]
    (sql, params), = statements
    assert 1 <= units_counted(sql, params) <= 3


def test_count_by_status_counts_the_units_of_the_jobs_not_settled_only(one_job_of_each_status, monkeypatch):
    statements = []
    execute_sql = database.execute_sql
    monkeypatch.setattr(database, "execute_sql",
                        lambda sql, *params: statements.append((sql, *params)) or execute_sql(sql, *params))

    counts = Job.count_by_status()
    assert counts == {"done": 2000, "queued": 1, "running": 1, "failed": 1, "cancelled": 1}
    settle, (sql, *params) = statements
    monkeypatch.undo()
    assert 1 <= units_counted(sql, params[0] if params else None) <= 4  # queued, running, failed; cancelled


# --- Settling ----------------------------------------------------------------


def column_statuses(made):
    return {name: Job.get_by_id(job.id).status for name, job in made.items()}


def test_settling_marks_done_only_the_jobs_whose_units_are_all_done_and_changes_nothing_a_reader_sees(author):
    made = {status: jobs.create_job(author.id, status, 2, unit_size=1)
            for status in ("queued", "running", "done", "failed", "cancelled", "cancelled then done")}
    jobs.apply_unit(made["running"].id, 0)
    for name in ("done", "cancelled then done"):
        jobs.apply_unit(made[name].id, 0)
    JobUnit.mark_failed(made["failed"].id, 0, "boom")
    jobs.apply_unit(made["failed"].id, 1)
    jobs.cancel_job(made["cancelled"].id)
    jobs.cancel_job(made["cancelled then done"].id)
    jobs.apply_unit(made["done"].id, 1)
    JobUnit.create(job=made["cancelled then done"].id, unit=1, status="done")  # a unit under way when cancelled
    before = {name: Job.get_by_id(job.id).to_dict() for name, job in made.items()}

    assert Job.settle() == 1
    assert column_statuses(made) == {"queued": "queued", "running": "queued", "done": "done", "failed": "queued",
                                     "cancelled": "cancelled", "cancelled then done": "cancelled"}
    assert {name: Job.get_by_id(job.id).to_dict() for name, job in made.items()} == before
    assert Job.settle() == 0

    # A replayed dead letter finishes the failed job: the next settle marks it.
    jobs.apply_unit(made["failed"].id, 0)
    assert Job.get_by_id(made["failed"].id).to_dict()["status"] == "done"
    assert Job.settle() == 1 and Job.get_by_id(made["failed"].id).status == "done"


def test_a_settled_job_stays_done_for_a_redelivered_unit_and_cannot_be_cancelled(author):
    job = jobs.create_job(author.id, "fan", 2, unit_size=1)
    jobs.apply_unit(job.id, 0)
    jobs.apply_unit(job.id, 1)
    Job.settle()
    assert jobs.apply_unit(job.id, 1).created is None  # a redelivery: done already
    with pytest.raises(jobs.JobFinished):
        jobs.cancel_job(job.id)
    state = Job.get_by_id(job.id).to_dict()
    assert (state["status"], state["created"], Job.get_by_id(job.id).status) == ("done", 2, "done")


def test_settling_marks_at_most_its_limit_oldest_first(author):
    bulk_done_jobs(author, 3)
    ids = [job.id for job in Job.select().order_by(Job.id)]
    assert Job.settle(limit=2) == 2
    assert [Job.get_by_id(i).status for i in ids] == ["done", "done", "queued"]
    assert Job.settle(limit=2) == 1
    assert Job.count_by_status() == {"done": 3}


def test_settling_skips_a_job_whose_row_another_transaction_holds_without_waiting(author):
    """A unit's statement share-locks its job's row, a cancel updates it:
    the settle leaves that job to the next reader rather than wait."""
    bulk_done_jobs(author, 2)
    held, free = [job.id for job in Job.select().order_by(Job.id)]
    other = psycopg2.connect(settings.DATABASE_URL)
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT 1 FROM jobs WHERE id = %s FOR KEY SHARE", (held,))
            database.execute_sql("SET statement_timeout = '5s'")
            assert Job.settle() == 1
        assert (Job.get_by_id(held).status, Job.get_by_id(free).status) == ("queued", "done")
        assert Job.count_by_status() == {"done": 2}  # a job not settled is counted all the same
    finally:
        other.close()
        database.execute_sql("SET statement_timeout = 0")
