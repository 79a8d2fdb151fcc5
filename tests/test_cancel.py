"""Cancelling a job, against the real PostgreSQL: the status a user reads,
the followers that are (not) created, and what the workers do with the
units of a cancelled job (the pages of jobs: tests/test_job_pages.py)."""

import threading
import uuid

import pytest

import followers
import jobs
from db import Job, JobUnit, Subscription, database
from tests.conftest import sent


def test_a_cancelled_job_applies_no_unit_after_the_cancel(author):
    job = jobs.create_job(author.id, "fan", 10, unit_size=4)
    jobs.apply_unit(job.id, 0)
    state = jobs.cancel_job(job.id).job.to_dict()
    # What was done before the cancel stays, and is told.
    assert (state["status"], state["created"], state["messages"]) == (
        "cancelled", 4, {"total": 3, "done": 1, "failed": 0})
    for unit in (1, 2, 1):  # later units, a redelivery among them
        assert jobs.apply_unit(job.id, unit).cancelled
    assert Subscription.select().where(Subscription.author == author).count() == 4
    assert JobUnit.select().where(JobUnit.job == job.id).count() == 1
    assert Job.get_by_id(job.id).to_dict()["status"] == "cancelled"


def test_a_cancel_waits_for_a_unit_under_way_and_no_unit_applies_after_it(author):
    """The unit's statement share-locks its job row: a cancel that comes
    while it runs waits for its commit, and then counts it as done before."""
    job = jobs.create_job(author.id, "fan", 4, unit_size=2)
    jobs.job_password_hash(job.id)
    database.execute_sql("BEGIN")  # this test's connection: a unit's transaction held open
    JobUnit.apply(job.id, 0, queue="q", locked=False)
    cancelled = []

    def cancel():
        with database.connection_context():
            cancelled.append(jobs.cancel_job(job.id).job.to_dict())

    thread = threading.Thread(target=cancel)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive()  # waiting for the unit's commit
    database.execute_sql("COMMIT")
    thread.join(5)
    assert cancelled[0]["status"] == "cancelled"
    assert cancelled[0]["messages"]["done"] == 1  # the unit under way counted, as done before the cancel
    assert jobs.apply_unit(job.id, 1).cancelled


def test_a_replayed_dead_letter_of_a_cancelled_job_does_nothing(author):
    job = jobs.create_job(author.id, "fan", 4, unit_size=2)
    JobUnit.mark_failed(job.id, 1, "RuntimeError: boom")
    jobs.cancel_job(job.id)
    assert jobs.apply_unit(job.id, 1).cancelled
    assert Subscription.select().count() == 0
    assert JobUnit.get(job=job.id, unit=1).status == "failed"


def test_cancel_is_idempotent(author):
    job = jobs.create_job(author.id, "fan", 10, unit_size=4)
    first = jobs.cancel_job(job.id).job
    again = jobs.cancel_job(job.id).job
    assert first.to_dict()["status"] == again.to_dict()["status"] == "cancelled"
    assert again.updated_at == first.updated_at  # the second call changed nothing


@pytest.mark.parametrize("finish", ["done", "failed unit", "failed to publish", "nothing to do"])
def test_a_finished_job_cannot_be_cancelled(author, finish):
    job = jobs.create_job(author.id, "fan", 0 if finish == "nothing to do" else 4, unit_size=2)
    if finish == "done":
        jobs.apply_unit(job.id, 0)
        jobs.apply_unit(job.id, 1)
    elif finish == "failed unit":
        jobs.apply_unit(job.id, 0)
        JobUnit.mark_failed(job.id, 1, "boom")
    elif finish == "failed to publish":
        Job.update(status="failed").where(Job.id == job.id).execute()
    before = Job.get_by_id(job.id).to_dict()
    with pytest.raises(jobs.JobFinished, match=f"job {job.id} is {before['status']} already"):
        jobs.cancel_job(job.id)
    assert Job.get_by_id(job.id).to_dict() == before


def test_a_job_with_a_dead_lettered_unit_but_units_left_can_be_cancelled(author):
    job = jobs.create_job(author.id, "fan", 6, unit_size=2)
    JobUnit.mark_failed(job.id, 0, "boom")
    assert jobs.cancel_job(job.id).job.to_dict()["status"] == "cancelled"


def test_cancelling_an_unknown_job_is_not_found(db):
    with pytest.raises(followers.NotFound, match="job 4242 does not exist"):
        jobs.cancel_job(4242)


def test_a_cancelled_ordered_job_hands_its_turn_to_the_users_next_one(author):
    first = jobs.create_job(author.id, "fan", 4, unit_size=2, ordered=True)
    second = jobs.create_job(author.id, "more", 2, unit_size=2, ordered=True)
    assert sent() == [("add_followers", {"job_id": first.id, "unit": 0})]  # the second waits
    jobs.apply_unit(first.id, 0)
    sent()
    jobs.cancel_job(first.id)
    # Unit 1 of the first job arrives: skipped, and the second job starts instead.
    assert jobs.apply_unit(first.id, 1) == (None, None, 1, True)
    assert sent() == [("add_followers", {"job_id": second.id, "unit": 0})]
    assert jobs.apply_unit(second.id, 0).created == 2


@pytest.mark.parametrize("done_before", [0, 1])
def test_cancelling_an_ordered_job_held_by_a_dead_letter_starts_the_users_next_one(author, done_before):
    """No unit of it will come round to pass the turn on: the dead-lettered
    one waits in the dead-letter queue, and its successor is never sent."""
    first = jobs.create_job(author.id, "fan", 6, unit_size=2, ordered=True)
    second = jobs.create_job(author.id, "more", 2, unit_size=2, ordered=True)
    for unit in range(done_before):
        jobs.apply_unit(first.id, unit)
    JobUnit.mark_failed(first.id, done_before, "RuntimeError: boom")
    sent()
    assert jobs.cancel_job(first.id).sent == 1  # the caller wakes the relay
    assert sent() == [("add_followers", {"job_id": second.id, "unit": 0})]
    # Cancelled again, or its dead letter replayed: the turn is not passed twice.
    assert jobs.cancel_job(first.id).sent == 0
    assert jobs.apply_unit(first.id, done_before) == (None, None, 0, True)
    assert sent() == []
    assert jobs.apply_unit(second.id, 0).created == 2


def test_an_ordered_job_failed_by_its_last_unit_can_be_cancelled_and_starts_the_users_next_one(author):
    """Every unit done or dead-lettered: finished, but for an ordered job
    the dead letter still holds the user's next jobs, and cancel lets them go."""
    first = jobs.create_job(author.id, "fan", 4, unit_size=2, ordered=True)
    second = jobs.create_job(author.id, "more", 2, unit_size=2, ordered=True)
    jobs.apply_unit(first.id, 0)
    JobUnit.mark_failed(first.id, 1, "RuntimeError: boom")
    sent()
    before = Job.get_by_id(first.id).to_dict()
    assert (before["status"], before["cancellable"]) == ("failed", True)
    after = jobs.cancel_job(first.id).job.to_dict()
    assert (after["status"], after["cancellable"], after["created"]) == ("cancelled", False, 2)
    assert sent() == [("add_followers", {"job_id": second.id, "unit": 0})]
    assert jobs.apply_unit(first.id, 1) == (None, None, 0, True) and sent() == []


@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("state", ["queued", "running", "held", "done", "failed", "failed to publish", "cancelled"])
def test_a_job_is_cancellable_exactly_when_cancel_cancels_it(author, ordered, state):
    job = jobs.create_job(author.id, "fan", 4, unit_size=2, ordered=ordered)
    if state in ("running", "done"):
        jobs.apply_unit(job.id, 0)
    if state == "done":
        jobs.apply_unit(job.id, 1)
    if state in ("held", "failed"):
        JobUnit.mark_failed(job.id, 0, "boom")
    if state == "failed":
        JobUnit.mark_failed(job.id, 1, "bang")
    if state == "failed to publish":
        Job.update(status="failed").where(Job.id == job.id).execute()
    if state == "cancelled":
        jobs.cancel_job(job.id)
    shown = Job.get_by_id(job.id).to_dict()
    (listed,) = [row.to_dict(progress=progress, unit_errors=errors) for row, progress, errors in Job.page()]
    assert listed["cancellable"] == shown["cancellable"]
    assert shown["cancellable"] == Job.cancel(job.id)


def test_cancelling_an_ordered_job_with_a_unit_in_flight_leaves_the_turn_to_that_unit(author):
    """A dead letter that is not the chain's head (a unit done since, by a
    replay) holds nothing: the unit in flight passes the turn on, once."""
    first = jobs.create_job(author.id, "fan", 6, unit_size=2, ordered=True)
    second = jobs.create_job(author.id, "more", 2, unit_size=2, ordered=True)
    assert sent() == [("add_followers", {"job_id": first.id, "unit": 0})]
    JobUnit.mark_failed(first.id, 0, "RuntimeError: boom")
    jobs.apply_unit(first.id, 0)  # replayed after a fix: done, and unit 1 is sent
    assert sent() == [("add_followers", {"job_id": first.id, "unit": 1})]
    assert jobs.cancel_job(first.id).sent == 0
    assert sent() == []
    assert jobs.apply_unit(first.id, 1) == (None, None, 1, True)
    assert sent() == [("add_followers", {"job_id": second.id, "unit": 0})]


def test_a_late_unit_of_a_cancelled_job_does_not_send_again_the_first_unit_of_a_job_that_started(author, woken):
    """The user's next ordered job, created after the cancel, started at
    once. Its unit 0 was dead-lettered and purged, and its unit 1 ran. The
    cancelled job's unit then comes round: it hands the turn to no one (a
    review found it sending the next job's unit 0 again, which ran over its
    failed row, after unit 1, though purged)."""
    from ops import dead_letters
    from tests.conftest import dead_letter

    first = jobs.create_job(author.id, "fan", 4, unit_size=2, ordered=True)
    jobs.apply_unit(first.id, 0)
    sent()  # unit 1 of the first job is in RabbitMQ
    jobs.cancel_job(first.id)
    second = jobs.create_job(author.id, "more", 6, unit_size=2, ordered=True)
    assert sent() == [("add_followers", {"job_id": second.id, "unit": 0})]  # nothing ahead of it
    assert dead_letters.forget(dead_letter(second, 0), "q") is True
    assert sent() == [("add_followers", {"job_id": second.id, "unit": 1})]
    assert jobs.apply_unit(second.id, 1).created == 2
    sent()
    assert jobs.apply_unit(first.id, 1) == (None, None, 0, True)
    assert sent() == []
    assert JobUnit.get(job=second.id, unit=0).status == "failed"


def in_flight_at_the_cancel_then_dead_lettered(author):
    """A user's ordered job cancelled while its unit 1 was in RabbitMQ (the
    cancel leaves the turn to that unit), then that unit dead-lettered
    without running (the delivery limit, after workers died on it) and
    recorded; the user's next ordered job behind it. Returns (first job,
    second job, message id)."""
    from tests.conftest import dead_letter

    first = jobs.create_job(author.id, "fan", 4, unit_size=2, ordered=True)
    second = jobs.create_job(author.id, "more", 2, unit_size=2, ordered=True)
    jobs.apply_unit(first.id, 0)
    sent()
    assert jobs.cancel_job(first.id).sent == 0
    message_id = dead_letter(first, 1)
    assert sent() == []
    return first, second, message_id


def test_a_cancelled_jobs_unit_dead_lettered_after_the_cancel_hands_the_turn_on_when_replayed(author, woken):
    """A review found the user's next ordered job waiting for good: the
    replayed unit found its failed row and took it for a turn passed."""
    first, second, message_id = in_flight_at_the_cancel_then_dead_lettered(author)
    assert jobs.apply_unit(first.id, 1) == (None, None, 1, True)  # the replay
    assert sent() == [("add_followers", {"job_id": second.id, "unit": 0})]
    # A second copy, a cancel again: the turn is passed once.
    assert jobs.apply_unit(first.id, 1) == (None, None, 0, True)
    assert jobs.cancel_job(first.id).sent == 0 and sent() == []


def test_a_cancelled_jobs_unit_dead_lettered_after_the_cancel_hands_the_turn_on_when_purged(author, woken):
    from ops import dead_letters

    first, second, message_id = in_flight_at_the_cancel_then_dead_lettered(author)
    assert dead_letters.forget(message_id, "q") is True
    assert sent() == [("add_followers", {"job_id": second.id, "unit": 0})]
    assert jobs.apply_unit(first.id, 1) == (None, None, 0, True) and sent() == []  # a copy still comes


def test_a_cancelled_jobs_unrecorded_dead_letter_hands_the_turn_on_when_purged(author, woken):
    """No worker could record the unit's death (PostgreSQL did not answer):
    the cancel finds no failed unit and leaves the turn to it; its purge
    marks it failed and, the job being cancelled, starts the user's next."""
    from ops import dead_letters

    first = jobs.create_job(author.id, "fan", 4, unit_size=2, ordered=True)
    second = jobs.create_job(author.id, "more", 2, unit_size=2, ordered=True)
    jobs.apply_unit(first.id, 0)
    sent()
    assert jobs.cancel_job(first.id).sent == 0
    assert dead_letters.forget(str(uuid.uuid4()), "q", unit=(first.id, 1)) is True
    assert sent() == [("add_followers", {"job_id": second.id, "unit": 0})]
    assert JobUnit.get(job=first.id, unit=1).status == "failed"


def test_a_split_job_of_a_cancelled_job_writes_no_unit(author, monkeypatch):
    import settings

    monkeypatch.setattr(settings, "MAX_MESSAGES_PUBLISHED_INLINE", 1)
    job = jobs.create_job(author.id, "fan", 4, unit_size=1)
    sent()
    jobs.cancel_job(job.id)
    assert jobs.enqueue_units(job.id) == 0 and sent() == []
