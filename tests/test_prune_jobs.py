"""python -m ops jobs prune, run as an operator runs it, against the tests'
database: which jobs go (finished long ago, with their units), which stay
(in flight, recent, or with a message that may still come: a dead letter
recorded, a message in the outbox, a unit just replayed), and its answers
to bad input."""

import os
import subprocess
import sys
import uuid

import pytest

import followers
import jobs
from db import DeadLetter, Job, JobUnit, Outbox, database
from harness import ROOT, queue_depth
from ops import dead_letters
from tests.conftest import dead_letter, publish_dead_letter, sent


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
    """Jobs of each kind, old (10 days) but for ``recent``; the outbox empty
    but for the message of ``cancelled, message in the outbox``."""
    names = ("done", "done, not settled", "cancelled", "failed, dead letter purged", "failed, marked",
             "failed", "running", "queued", "recent")
    made = {name: jobs.create_job(author.id, name.replace(" ", "_"), 2, unit_size=1) for name in names}
    for name in ("done", "recent"):
        for unit in (0, 1):
            jobs.apply_unit(made[name].id, unit)
    Job.settle()
    for unit in (0, 1):  # done after the last read settled the jobs: still 'queued' in its row
        jobs.apply_unit(made["done, not settled"].id, unit)
    jobs.apply_unit(made["running"].id, 0)
    for name in ("failed", "failed, dead letter purged"):
        JobUnit.mark_failed(made[name].id, 0, "boom")
        jobs.apply_unit(made[name].id, 1)
    DeadLetter.record("m-1", "q", "add_followers", "boom", 5, job_id=made["failed"].id, unit=0)
    Job.update(status="failed").where(Job.id == made["failed, marked"].id).execute()  # no unit ran
    jobs.cancel_job(made["cancelled"].id)
    sent()
    made["cancelled, message in the outbox"] = jobs.create_job(author.id, "outbox", 2, unit_size=1)
    jobs.cancel_job(made["cancelled, message in the outbox"].id)
    for name, job in made.items():
        if name != "recent":
            days_ago(job, 10)
    return made


def test_prune_deletes_old_finished_jobs_with_their_units_and_keeps_the_rest(made):
    assert Job.get_by_id(made["done, not settled"].id).status == "queued"
    assert prune("--days", "7", "--dry-run") == (0, "5 jobs finished more than 7 days ago would be deleted"
                                                    " (--dry-run: nothing was)\n", "")
    assert Job.select().count() == 10

    assert prune("--days", "7") == (0, "deleted 5 jobs finished more than 7 days ago, with their units\n",
                                    "deleted 5 jobs so far\n")
    kept = ("failed", "running", "queued", "recent", "cancelled, message in the outbox")
    assert {job.id for job in Job.select()} == {made[name].id for name in kept}
    assert {unit.job_id for unit in JobUnit.select()} == {made[name].id for name in ("failed", "running", "recent")}
    assert prune("--days", "7")[1].startswith("deleted 0 jobs")
    assert prune("--days", "1", "--dry-run")[:2] == (0, "0 jobs finished more than 1 days ago would be deleted"
                                                      " (--dry-run: nothing was)\n")
    # Once its message is out of the outbox (the relay published it), the
    # cancelled job goes at the next prune.
    sent()
    assert prune("--days", "7")[1] == "deleted 1 jobs finished more than 7 days ago, with their units\n"


def test_prune_deletes_its_limit_oldest_first(made):
    assert Job.prune(days=7, limit=3) == 3
    assert {job.id for job in Job.select()} >= {made["failed, dead letter purged"].id, made["failed, marked"].id}
    assert Job.prune(days=7, limit=3) == 2 and Job.prune(days=7, limit=3) == 0


@pytest.mark.parametrize("days", ["0", "-3"])
def test_prune_refuses_a_retention_under_a_day(made, days):
    assert prune("--days", days) == (2, "", f"--days must be 1 or more, not {days}\n")
    assert Job.select().count() == 10


def test_prune_needs_the_token_when_the_service_has_one(made):
    assert prune("--days", "7", API_TOKEN="s3cret") == (1, "", "prune needs --token equal to API_TOKEN\n")
    assert Job.select().count() == 10
    assert prune("--days", "7", "--token", "s3cret", API_TOKEN="s3cret")[0] == 0
    assert Job.select().count() == 5


def test_prune_says_when_postgresql_does_not_answer(db):
    code, out, err = prune("--days", "7", DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere")
    assert (code, out) == (1, "") and err.startswith("PostgreSQL does not answer (") and "check DATABASE_URL" in err


def test_a_job_whose_dead_letter_was_just_replayed_is_kept_until_its_unit_has_long_had_its_chance(
        author, woken, dead_letter_queue):
    """The replay forgets the dead letter's record and sends the unit again
    through the outbox; the relay publishes it, and a worker may not run it
    for a while (a backlog). Meanwhile the job, unchanged for 10 days, has
    no record and nothing in the outbox: the replay stamps its unit, or the
    prune would delete it and the replayed unit would find no job."""
    job = jobs.create_job(author.id, "fan", 2, unit_size=1)
    jobs.apply_unit(job.id, 1)
    message_id = dead_letter(job, 0, str(uuid.uuid4()))
    publish_dead_letter(dead_letter_queue, message_id, job, 0)
    days_ago(job, 10)
    sent()
    assert dead_letters.replay(queue_name=dead_letter_queue).done == [message_id]
    assert queue_depth(f"{dead_letter_queue}.XQ") == 0
    assert sent() == [("add_followers", {"job_id": job.id, "unit": 0})]  # published: out of the outbox
    assert Outbox.select().count() == 0 and Job.prunable(days=7) == 0
    assert Job.prune(days=7) == 0
    assert jobs.apply_unit(job.id, 0).created == 1  # the replayed unit, when a worker runs it
    assert Job.get_by_id(job.id).to_dict()["status"] == "done"


def test_cancelling_a_job_deleted_meanwhile_is_not_found(author, monkeypatch):
    job = jobs.create_job(author.id, "fan", 2, unit_size=1)

    def cancel_after_a_prune(job_id):
        Job.delete_by_id(job_id)  # python -m ops jobs prune, between the cancel's read and its update
        return False

    monkeypatch.setattr(Job, "cancel", cancel_after_a_prune)
    with pytest.raises(followers.NotFound, match=f"job {job.id} does not exist"):
        jobs.cancel_job(job.id)


def test_a_cancelled_ordered_job_stays_until_the_users_next_ordered_job_has_started(author):
    """Its next unit, held by RabbitMQ (workers down for days), passes the
    user's turn on when it comes; with the job deleted, it would find none to
    pass, and the user's next ordered jobs would wait for good."""
    first = jobs.create_job(author.id, "fan", 4, unit_size=2, ordered=True)
    second = jobs.create_job(author.id, "more", 2, unit_size=2, ordered=True)
    jobs.apply_unit(first.id, 0)
    sent()  # unit 1 of the first job is in RabbitMQ; the second waits for its turn
    jobs.cancel_job(first.id)
    days_ago(first, 10)
    assert prune("--days", "7")[:2] == (0, "deleted 0 jobs finished more than 7 days ago, with their units\n")

    # Unit 1 comes at last: skipped, and the second job gets the turn.
    assert jobs.apply_unit(first.id, 1) == (None, None, 1, True)
    assert sent() == [("add_followers", {"job_id": second.id, "unit": 0})]
    days_ago(first, 10)
    assert prune("--days", "7")[1].startswith("deleted 0 jobs")  # sent, not started yet
    jobs.apply_unit(second.id, 0)
    assert prune("--days", "7")[1].startswith("deleted 1 jobs")
    assert {job.id for job in Job.select()} == {second.id}


def test_an_ordered_job_is_pruned_when_no_ordered_job_of_its_user_waits(author):
    job = jobs.create_job(author.id, "fan", 2, unit_size=2, ordered=True)
    jobs.apply_unit(job.id, 0)
    other = followers.create_user("other", "secret", 30)  # another user's ordered job waiting changes nothing
    jobs.create_job(other.id, "theirs", 2, unit_size=2, ordered=True)
    sent()
    days_ago(job, 10)
    assert prune("--days", "7")[1].startswith("deleted 1 jobs")
    assert Job.get_or_none(Job.id == job.id) is None
