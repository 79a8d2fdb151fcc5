"""Purging a dead letter, against the real PostgreSQL: its record goes and,
for a unit of an ordered job that held its chain, what follows the unit is
sent in the same transaction, once (``ops.dead_letters.forget``). The
last test walks a real dead-letter queue; the API's purge is in
tests/test_api_operations.py and tests/test_e2e_failures.py."""

import uuid

import jobs
from db import DeadLetter, Job
from harness import queue_depth
from ops import dead_letters
from tests.conftest import dead_letter, publish_dead_letter, sent


def held_at_unit_1(author, followers):
    """A user's ordered job of ``followers`` (2 a unit) whose unit 0 is done
    and unit 1 dead-lettered, and the user's next ordered job behind it;
    the outbox emptied. Returns (first job, second job, message id)."""
    first = jobs.create_job(author.id, "fan", followers, unit_size=2, ordered=True)
    second = jobs.create_job(author.id, "more", 2, unit_size=2, ordered=True)
    jobs.apply_unit(first.id, 0)
    message_id = dead_letter(first, 1)
    sent()
    return first, second, message_id


def test_purging_an_ordered_units_dead_letter_runs_the_rest_of_its_job_then_the_users_next(author, woken):
    first, second, message_id = held_at_unit_1(author, 6)
    assert dead_letters.forget(message_id, "q") is True and woken == [1]
    assert sent() == [("add_followers", {"job_id": first.id, "unit": 2})]
    assert DeadLetter.get_or_none(DeadLetter.message_id == message_id) is None
    # Purged twice (a crash after the commit, an operator's second click): nothing more.
    assert dead_letters.forget(message_id, "q") is False and sent() == []
    jobs.apply_unit(first.id, 2)
    assert sent() == [("add_followers", {"job_id": second.id, "unit": 0})]
    state = Job.get_by_id(first.id).to_dict()
    # The job went on without the purged unit, as an unordered one does.
    assert (state["status"], state["created"], state["messages"]) == (
        "failed", 4, {"total": 3, "done": 2, "failed": 1})
    assert jobs.apply_unit(second.id, 0).created == 2


def test_purging_an_ordered_jobs_last_unit_starts_the_users_next_job(author, woken):
    first, second, message_id = held_at_unit_1(author, 4)
    assert dead_letters.forget(message_id, "q") is True
    assert sent() == [("add_followers", {"job_id": second.id, "unit": 0})]
    # The job is through for good: a job the user orders later does not wait behind it.
    assert Job.get_by_id(first.id).status == "failed"
    third = jobs.create_job(author.id, "later", 2, unit_size=2, ordered=True)
    jobs.apply_unit(second.id, 0)  # the user's chain: the second, then the third
    assert sent() == [("add_followers", {"job_id": third.id, "unit": 0})]


def test_every_purged_unit_of_an_ordered_job_passes_the_chain_on_not_only_the_first(author, woken):
    """A unit purged before a failed one counts as settled: the chain went on
    to this one (a review found the second purge sending nothing: the rest
    of the job never ran and the user's next jobs waited for good)."""
    first = jobs.create_job(author.id, "fan", 6, unit_size=2, ordered=True)
    second = jobs.create_job(author.id, "more", 2, unit_size=2, ordered=True)
    sent()
    for unit in (0, 1):
        assert dead_letters.forget(dead_letter(first, unit), "q") is True
        assert sent() == [("add_followers", {"job_id": first.id, "unit": unit + 1})]
    jobs.apply_unit(first.id, 2)
    assert sent() == [("add_followers", {"job_id": second.id, "unit": 0})]
    state = Job.get_by_id(first.id).to_dict()
    assert (state["status"], state["created"], state["messages"]) == (
        "failed", 2, {"total": 3, "done": 1, "failed": 2})


def test_purging_an_ordered_jobs_last_unit_after_an_earlier_purge_starts_the_users_next_job(author, woken):
    first = jobs.create_job(author.id, "fan", 4, unit_size=2, ordered=True)
    second = jobs.create_job(author.id, "more", 2, unit_size=2, ordered=True)
    sent()
    assert dead_letters.forget(dead_letter(first, 0), "q") is True
    assert sent() == [("add_followers", {"job_id": first.id, "unit": 1})]
    assert dead_letters.forget(dead_letter(first, 1), "q") is True
    assert sent() == [("add_followers", {"job_id": second.id, "unit": 0})]
    assert Job.get_by_id(first.id).status == "failed"  # through for good: later jobs do not wait behind it


def test_a_replayed_copy_of_a_purged_unit_is_absorbed(author, woken):
    """A copy of the purged message that still runs (replayed, say, before
    a crash) applies its unit once more and sends its successor again: the
    successor finds itself done, and nothing after it runs twice."""
    first = jobs.create_job(author.id, "fan", 4, unit_size=2, ordered=True)
    message_id = dead_letter(first, 0)
    sent()
    dead_letters.forget(message_id, "q")
    assert sent() == [("add_followers", {"job_id": first.id, "unit": 1})]
    assert jobs.apply_unit(first.id, 1).created == 2
    assert jobs.apply_unit(first.id, 0).created == 2  # the copy
    assert sent() == [("add_followers", {"job_id": first.id, "unit": 1})]
    assert jobs.apply_unit(first.id, 1).created is None and sent() == []


def test_purging_sends_nothing_for_a_cancelled_job_an_unordered_one_or_a_unit_that_holds_nothing(author, woken):
    cancelled = jobs.create_job(author.id, "a", 4, unit_size=2, ordered=True)
    unordered = jobs.create_job(author.id, "b", 4, unit_size=2)
    ahead = jobs.create_job(author.id, "c", 6, unit_size=2, ordered=True)
    letters = [dead_letter(cancelled, 0), dead_letter(unordered, 0), dead_letter(ahead, 2)]  # unit 0 of "c" not done
    jobs.cancel_job(cancelled.id)  # passes the user's chain on itself
    sent()
    assert [dead_letters.forget(message_id, "q") for message_id in letters] == [False, False, False]
    assert sent() == [] and woken == [] and DeadLetter.select().count() == 0


def test_forgetting_a_letter_without_a_job_only_drops_its_record(db, woken):
    DeadLetter.record("plain", "q", "some_actor", "ValueError: no", 1)
    assert dead_letters.forget("plain", "q") is False and DeadLetter.select().count() == 0
    assert dead_letters.forget("never-recorded", "q") is False


def test_a_purge_killed_between_its_commit_and_its_ack_is_finished_by_the_next(author, woken, dead_letter_queue):
    """The record is forgotten and the chain passed on, then the process
    dies before RabbitMQ drops the message: the next purge drops it, keeps
    the unit's reason, and the successor it sends again runs once."""
    first = jobs.create_job(author.id, "fan", 4, unit_size=2, ordered=True)
    jobs.apply_unit(first.id, 0)
    message_id = dead_letter(first, 1)
    publish_dead_letter(dead_letter_queue, message_id, first, 1)
    sent()
    # The first purge, up to its commit: no job of the user is next, so it
    # sends nothing, and marks the job failed.
    assert dead_letters.forget(message_id, dead_letter_queue) is False
    second = jobs.create_job(author.id, "more", 2, unit_size=2, ordered=True)  # starts at once: nothing ahead
    assert sent() == [("add_followers", {"job_id": second.id, "unit": 0})]
    assert jobs.apply_unit(second.id, 0).created == 2
    assert dead_letters.purge(queue_name=dead_letter_queue).done == [message_id]
    assert queue_depth(f"{dead_letter_queue}.XQ") == 0
    assert sent() == [] and Job.get_by_id(first.id).to_dict()["errors"] == ["unit 1: RuntimeError: boom"]


def test_purging_a_dead_letter_no_worker_recorded_marks_its_unit_failed_and_passes_the_chain_on(
        author, woken, dead_letter_queue):
    """A worker that could not reach PostgreSQL when the unit died recorded
    neither the dead letter nor the unit's failure: the purge reads the job
    and unit from the message itself."""
    first = jobs.create_job(author.id, "fan", 4, unit_size=2, ordered=True)
    second = jobs.create_job(author.id, "more", 2, unit_size=2, ordered=True)
    jobs.apply_unit(first.id, 0)
    sent()
    message_id = str(uuid.uuid4())
    publish_dead_letter(dead_letter_queue, message_id, first, 1)
    outcome = dead_letters.purge(queue_name=dead_letter_queue)
    assert outcome.done == [message_id] and queue_depth(f"{dead_letter_queue}.XQ") == 0
    assert sent() == [("add_followers", {"job_id": second.id, "unit": 0})] and woken == [1]
    state = Job.get_by_id(first.id).to_dict()
    assert (state["status"], state["messages"]) == ("failed", {"total": 2, "done": 1, "failed": 1})
    assert any(dead_letters.UNRECORDED in error for error in state["errors"]), state["errors"]
