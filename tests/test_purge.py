"""Purging a dead letter, against the real PostgreSQL: its record goes and,
for a unit of an ordered job that held its chain, what follows the unit is
sent in the same transaction, once (``ops.dead_letters.forget``). The
message side of a purge (RabbitMQ's dead-letter queue) is in
tests/test_api_operations.py and tests/test_e2e_failures.py."""

import pytest

import followers
import jobs
from db import DeadLetter, Job, JobUnit, Outbox, database
from ops import dead_letters


@pytest.fixture
def author(db):
    return followers.create_user("author", "pw", 40)


@pytest.fixture
def woken(monkeypatch):
    """The relay wakes this process's own relay thread: counted instead (see
    tests/conftest.py's no_process_relay_in_the_tests)."""
    calls = []
    monkeypatch.setattr(dead_letters.relay, "wake", lambda: calls.append(1))
    return calls


def sent():
    """What a relay would publish now: the outbox rows, taken out."""
    with database.atomic():
        return [(actor, kwargs) for _, _, _, actor, kwargs, _ in Outbox.claim(10_000)]


def dead_letter(job, unit):
    """Unit ``unit`` of ``job`` dead-lettered, as the workers record it."""
    message_id = f"m-{job.id}-{unit}"
    DeadLetter.record(message_id, "q", "add_followers", "RuntimeError: boom", 1, job_id=job.id, unit=unit)
    JobUnit.mark_failed(job.id, unit, "RuntimeError: boom")
    return message_id


def test_purging_an_ordered_units_dead_letter_runs_the_rest_of_its_job_then_the_users_next(author, woken):
    first = jobs.create_job(author.id, "fan", 6, unit_size=2, ordered=True)
    second = jobs.create_job(author.id, "more", 2, unit_size=2, ordered=True)
    jobs.apply_unit(first.id, 0)
    message_id = dead_letter(first, 1)
    sent()
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
    first = jobs.create_job(author.id, "fan", 4, unit_size=2, ordered=True)
    second = jobs.create_job(author.id, "more", 2, unit_size=2, ordered=True)
    jobs.apply_unit(first.id, 0)
    message_id = dead_letter(first, 1)
    sent()
    assert dead_letters.forget(message_id, "q") is True
    assert sent() == [("add_followers", {"job_id": second.id, "unit": 0})]


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
