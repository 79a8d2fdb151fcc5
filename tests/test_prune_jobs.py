"""python -m ops jobs prune, run as an operator runs it, against the tests'
database: which jobs go (finished long ago, with their units), which stay
(in flight, with a dead letter recorded, recent), and its answers to bad
input."""

import os
import subprocess
import sys

import pytest

import jobs
from db import DeadLetter, Job, JobUnit, database
from harness import ROOT


def prune(*args, **env):
    result = subprocess.run([sys.executable, "-m", "ops", "jobs", "prune", *args], cwd=ROOT,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout, result.stderr


def days_ago(job, days):
    """The job and its units last changed ``days`` days ago."""
    for table, key in (("jobs", "id"), ("job_units", "job_id")):
        database.execute_sql(f"UPDATE {table} SET updated_at = now() - make_interval(days => %s) WHERE {key} = %s",
                             (days, job.id))


@pytest.fixture
def made(author):
    """A job of each kind, old (10 days) but for ``recent``."""
    made = {name: jobs.create_job(author.id, name.replace(" ", "_"), 2, unit_size=1)
            for name in ("done", "done, not settled", "cancelled", "failed, dead letter purged", "failed", "running",
                         "queued", "recent")}
    for name in ("done", "done, not settled", "recent"):
        for unit in (0, 1):
            jobs.apply_unit(made[name].id, unit)
    jobs.apply_unit(made["running"].id, 0)
    for name in ("failed", "failed, dead letter purged"):
        JobUnit.mark_failed(made[name].id, 0, "boom")
        jobs.apply_unit(made[name].id, 1)
    DeadLetter.record("m-1", "q", "add_followers", "boom", 5, job_id=made["failed"].id, unit=0)
    jobs.cancel_job(made["cancelled"].id)
    Job.settle()
    for name, job in made.items():
        if name != "recent":
            days_ago(job, 10)
    # Done after the settle: the prune settles it itself.
    late = made["done, not settled"]
    JobUnit.delete().where((JobUnit.job == late.id) & (JobUnit.unit == 1)).execute()
    Job.update(status="queued").where(Job.id == late.id).execute()
    jobs.apply_unit(late.id, 1)
    days_ago(late, 10)
    return made


def test_prune_deletes_old_finished_jobs_with_their_units_and_keeps_the_rest(made):
    assert prune("--days", "7", "--dry-run") == (0, "4 jobs finished more than 7 days ago would be deleted"
                                                    " (--dry-run: nothing was)\n", "")
    assert Job.select().count() == 8

    assert prune("--days", "7") == (0, "deleted 4 jobs finished more than 7 days ago, with their units\n",
                                    "deleted 4 jobs so far\n")
    left = {job.id for job in Job.select()}
    assert left == {made[name].id for name in ("failed", "running", "queued", "recent")}
    assert {unit.job_id for unit in JobUnit.select()} == {made[name].id for name in ("failed", "running", "recent")}
    assert prune("--days", "7")[1].startswith("deleted 0 jobs")
    assert prune("--days", "1", "--dry-run")[:2] == (0, "0 jobs finished more than 1 days ago would be deleted"
                                                      " (--dry-run: nothing was)\n")


def test_prune_deletes_its_limit_oldest_first(made):
    assert Job.prune(days=7, limit=3) == 3
    assert {job.id for job in Job.select()} >= {made["failed, dead letter purged"].id, made["recent"].id}
    assert Job.prune(days=7, limit=3) == 1 and Job.prune(days=7, limit=3) == 0


@pytest.mark.parametrize("days", ["0", "-3"])
def test_prune_refuses_a_retention_under_a_day(made, days):
    assert prune("--days", days) == (2, "", f"--days must be 1 or more, not {days}\n")
    assert Job.select().count() == 8


def test_prune_needs_the_token_when_the_service_has_one(made):
    assert prune("--days", "7", API_TOKEN="s3cret") == (1, "", "prune needs --token equal to API_TOKEN\n")
    assert Job.select().count() == 8
    assert prune("--days", "7", "--token", "s3cret", API_TOKEN="s3cret")[0] == 0
    assert Job.select().count() == 4


def test_prune_says_when_postgresql_does_not_answer(db):
    code, out, err = prune("--days", "7", DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere")
    assert (code, out) == (1, "") and err.startswith("PostgreSQL does not answer (") and "check DATABASE_URL" in err
