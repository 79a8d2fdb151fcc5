"""Cancelling a job, against the real PostgreSQL: the status a user reads,
the followers that are (not) created, and what the workers do with the
units of a cancelled job; and the page of jobs the console lists."""

import pytest

import followers
from db import Job, JobUnit, Subscription


@pytest.fixture
def author(db):
    return followers.create_user("author", "pw", 40)


def _unit(job, chunk):
    start, stop = job.chunk_bounds(chunk)
    return dict(job_id=job.id, chunk=chunk, user_id=job.user_id, followers_login=job.followers_login,
                start=start, count=stop - start, ordered=job.ordered)


def test_a_cancelled_job_applies_no_unit_after_the_cancel(author):
    job = followers.create_job(author.id, "fan", 10, chunk_size=4)
    followers.apply_unit(**_unit(job, 0))
    state = followers.cancel_job(job.id).to_dict()
    # What was done before the cancel stays, and is told.
    assert (state["status"], state["created"], state["messages"]) == (
        "cancelled", 4, {"total": 3, "done": 1, "failed": 0})
    for chunk in (1, 2, 1):  # later units, a redelivery among them
        with pytest.raises(followers.JobCancelled, match=f"job {job.id} is cancelled"):
            followers.apply_unit(**_unit(job, chunk))
    assert Subscription.select().where(Subscription.author == author).count() == 4
    assert JobUnit.select().where(JobUnit.job == job.id).count() == 1
    assert Job.get_by_id(job.id).to_dict()["status"] == "cancelled"


def test_a_replayed_dead_letter_of_a_cancelled_job_does_nothing(author):
    job = followers.create_job(author.id, "fan", 4, chunk_size=2)
    JobUnit.mark_failed(job.id, 1, "RuntimeError: boom")
    followers.cancel_job(job.id)
    with pytest.raises(followers.JobCancelled):
        followers.apply_unit(**_unit(job, 1))
    assert Subscription.select().count() == 0
    assert JobUnit.get(job=job.id, chunk=1).status == "failed"


def test_cancel_is_idempotent(author):
    job = followers.create_job(author.id, "fan", 10, chunk_size=4)
    first = followers.cancel_job(job.id)
    again = followers.cancel_job(job.id)
    assert first.to_dict()["status"] == again.to_dict()["status"] == "cancelled"
    assert again.updated_at == first.updated_at  # the second call changed nothing


@pytest.mark.parametrize("finish", ["done", "failed unit", "failed to publish", "nothing to do"])
def test_a_finished_job_cannot_be_cancelled(author, finish):
    job = followers.create_job(author.id, "fan", 0 if finish == "nothing to do" else 4, chunk_size=2)
    if finish == "done":
        followers.apply_unit(**_unit(job, 0))
        followers.apply_unit(**_unit(job, 1))
    elif finish == "failed unit":
        followers.apply_unit(**_unit(job, 0))
        JobUnit.mark_failed(job.id, 1, "boom")
    elif finish == "failed to publish":
        Job.update(status="failed").where(Job.id == job.id).execute()
    before = Job.get_by_id(job.id).to_dict()
    with pytest.raises(followers.JobFinished, match=f"job {job.id} is {before['status']} already"):
        followers.cancel_job(job.id)
    assert Job.get_by_id(job.id).to_dict() == before


def test_a_job_with_a_dead_lettered_unit_but_units_left_can_be_cancelled(author):
    job = followers.create_job(author.id, "fan", 6, chunk_size=2)
    JobUnit.mark_failed(job.id, 0, "boom")
    assert followers.cancel_job(job.id).to_dict()["status"] == "cancelled"


def test_cancelling_an_unknown_job_is_not_found(db):
    with pytest.raises(followers.NotFound, match="job 4242 does not exist"):
        followers.cancel_job(4242)


def test_a_cancelled_ordered_job_hands_its_turn_to_the_users_next_one(author):
    first = followers.create_job(author.id, "fan", 4, chunk_size=2, ordered=True)
    second = followers.create_job(author.id, "more", 2, chunk_size=2, ordered=True)
    assert not second.starts_now
    followers.apply_unit(**_unit(first, 0))
    followers.cancel_job(first.id)
    # Unit 1 of the first job arrives: skipped, and the second job starts instead.
    with pytest.raises(followers.JobCancelled) as cancelled:
        followers.apply_unit(**_unit(first, 1))
    following, chunk = cancelled.value.next_unit
    assert (following.id, chunk) == (second.id, 0)
    assert followers.apply_unit(**_unit(second, 0))[0] == 2


# --- The page of jobs ----------------------------------------------------------


def test_the_page_of_jobs_derives_status_and_progress_as_the_job_does(author):
    other = followers.create_user("other", "pw", 1)
    jobs = [followers.create_job(author.id, f"p{i}", 4, chunk_size=2) for i in range(4)]
    later = followers.create_job(other.id, "o", 2, chunk_size=2)
    followers.apply_unit(**_unit(jobs[1], 0))  # running
    followers.apply_unit(**_unit(jobs[2], 0))
    followers.apply_unit(**_unit(jobs[2], 1))  # done
    JobUnit.mark_failed(jobs[3].id, 0, "boom")
    JobUnit.mark_failed(jobs[3].id, 1, "bang")  # failed
    followers.cancel_job(later.id)
    page = Job.page(limit=10)
    assert [job.id for job, _, _ in page] == [later.id] + [job.id for job in reversed(jobs)]
    for job, progress, errors in page:
        assert job.to_dict(progress=progress, unit_errors=errors) == Job.get_by_id(job.id).to_dict()
    statuses = {status: [job.id for job, _, _ in Job.page(status=status)]
                for status in ("queued", "running", "done", "failed", "cancelled")}
    assert statuses == {"queued": [jobs[0].id], "running": [jobs[1].id], "done": [jobs[2].id],
                        "failed": [jobs[3].id], "cancelled": [later.id]}
    assert [job.id for job, _, _ in Job.page(user_id=other.id)] == [later.id]
    assert Job.page(status="failed")[0][2] == [
        "unit 0: boom", "unit 1: bang"]


def test_pages_follow_each_other_without_gaps_or_repeats(author):
    ids = [followers.create_job(author.id, f"k{i}", 1).id for i in range(7)]
    seen, before = [], None
    while True:
        page = Job.page(before=before, limit=3)
        if not page:
            break
        seen += [job.id for job, _, _ in page]
        before = page[-1][0].id
    assert seen == sorted(ids, reverse=True)
