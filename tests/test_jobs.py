"""Jobs and units against the real PostgreSQL: what a job writes to the
outbox, what a unit applies and sends, and the edge paths of at-least-once
delivery (a unit delivered twice, a done unit redelivered, a message that
lies about its job, a cancelled job)."""

import pytest

import jobs
import settings
from db import Job, JobUnit, Outbox, Subscription, database
from tests.conftest import sent


def outbox():
    """The unsent messages: (actor, kwargs), oldest first."""
    return [(row.actor_name, row.kwargs) for row in Outbox.select().order_by(Outbox.id)]


def unit_message(job, unit):
    return ("add_followers", {"job_id": job.id, "unit": unit})


def followers_of(author):
    return Subscription.select().where(Subscription.author == author).count()


def test_a_job_and_its_units_are_committed_together(author):
    job = jobs.create_job(author.id, "fan", 10, unit_size=4)
    assert (job.units, job.status) == (3, "queued")
    assert [job.unit_bounds(u) for u in range(3)] == [(0, 4), (4, 8), (8, 10)]
    assert outbox() == [unit_message(job, 0), unit_message(job, 1), unit_message(job, 2)]


def test_an_unknown_user_commits_neither_job_nor_message(author):
    with pytest.raises(jobs.NotFound):
        jobs.create_job(999_999, "fan", 10)
    assert Job.select().count() == 0 and outbox() == []


def test_a_large_job_is_one_split_job_that_writes_its_units_once(author, monkeypatch):
    monkeypatch.setattr(settings, "MAX_MESSAGES_PUBLISHED_INLINE", 2)
    job = jobs.create_job(author.id, "fan", 5, unit_size=1)
    assert sent() == [("split_job", {"job_id": job.id})]
    assert jobs.enqueue_units(job.id) == 5
    assert jobs.enqueue_units(job.id) == 0  # a redelivered split_job writes nothing
    assert len(outbox()) == 5
    with pytest.raises(jobs.InvalidUnit, match="job 424242 does not exist"):
        jobs.enqueue_units(424242)


def test_a_unit_delivered_twice_commits_once(author):
    job = jobs.create_job(author.id, "fan", 10, unit_size=4)
    assert jobs.apply_unit(job.id, 1) == (4, 0, 0, False)
    assert jobs.apply_unit(job.id, 1) == (None, None, 0, False)
    assert followers_of(author) == 4
    assert JobUnit.get(job=job.id, unit=1).created == 4


def test_job_progress_goes_from_queued_to_done(author):
    job = jobs.create_job(author.id, "fan", 10, unit_size=4)
    assert job.to_dict()["status"] == "queued"
    jobs.apply_unit(job.id, 0)
    state = job.to_dict()
    assert (state["status"], state["messages"]["done"], state["created"]) == ("running", 1, 4)
    jobs.apply_unit(job.id, 2)
    jobs.apply_unit(job.id, 1)
    state = Job.get_by_id(job.id).to_dict()
    assert (state["status"], state["created"], state["skipped"]) == ("done", 10, 0)
    assert Job.count_by_status() == {"done": 1}


def test_a_dead_lettered_unit_fails_the_job_and_a_replay_mends_it(author):
    job = jobs.create_job(author.id, "fan", 4, unit_size=2)
    jobs.apply_unit(job.id, 0)
    JobUnit.mark_failed(job.id, 1, "RuntimeError: boom")
    state = job.to_dict()
    assert state["status"] == "failed" and state["errors"] == ["unit 1: RuntimeError: boom"]
    assert Job.count_by_status() == {"failed": 1}
    JobUnit.mark_failed(job.id, 0, "late duplicate")  # never undoes a done unit
    assert jobs.apply_unit(job.id, 1) == (2, 0, 0, False)
    state = job.to_dict()
    assert (state["status"], state["created"], state["errors"]) == ("done", 4, [])


@pytest.mark.parametrize("then", ["replay", "purge"])
def test_a_split_job_whose_split_job_is_dead_lettered_shows_it_failed_until_it_is_replayed(
        author, monkeypatch, woken, dead_letter_queue, then):
    """Its retries out (PostgreSQL away for a minute), the split_job went to
    the dead-letter queue and the job showed 'queued', no error, for good
    (a review found it): the dead letter was recorded without its job, and
    nothing marked the job. A replay writes its units; a purge leaves it
    failed."""
    import json
    import uuid

    import peewee
    from dramatiq import Message
    from dramatiq.broker import MessageProxy

    from actors.dead_letters import DeadLetters
    from db import DeadLetter
    from harness import publish_raw
    from ops import dead_letters

    monkeypatch.setattr(settings, "MAX_MESSAGES_PUBLISHED_INLINE", 2)
    job = jobs.create_job(author.id, "fan", 5, unit_size=1)
    assert sent() == [("split_job", {"job_id": job.id})]
    message_id = str(uuid.uuid4())
    fields = {"queue_name": dead_letter_queue, "actor_name": "split_job", "args": [], "kwargs": {"job_id": job.id},
              "options": {"retries": settings.MAX_RETRIES}, "message_id": message_id, "message_timestamp": 0}
    message = MessageProxy(Message(**{**fields, "args": ()}))
    message.stuff_exception(peewee.OperationalError("could not connect to server"))
    DeadLetters().after_nack(None, message)  # what a worker does once the retries are out
    publish_raw(f"{dead_letter_queue}.XQ", json.dumps(fields).encode())  # where RabbitMQ puts it
    state = Job.get_by_id(job.id).to_dict()
    assert (state["status"], state["errors"], state["cancellable"]) == (
        "failed", ["OperationalError: could not connect to server"], False)
    assert DeadLetter.get(DeadLetter.message_id == message_id).job_id == job.id

    assert getattr(dead_letters, then)(queue_name=dead_letter_queue).done == [message_id]
    state = Job.get_by_id(job.id).to_dict()
    if then == "purge":
        assert (state["status"], len(state["errors"]), sent()) == ("failed", 1, [])
        return
    assert (state["status"], state["errors"]) == ("queued", [])
    assert sent() == [("split_job", {"job_id": job.id})]
    assert jobs.enqueue_units(job.id) == 5
    for unit in range(5):
        jobs.apply_unit(job.id, unit)
    assert Job.get_by_id(job.id).to_dict()["status"] == "done"


def test_a_unit_of_an_unknown_job_is_invalid(author):
    with pytest.raises(jobs.InvalidUnit, match="job 12345 does not exist"):
        jobs.apply_unit(12345, 0)


# 2**31 - 1: unit * unit_size passes PostgreSQL's integer; that was a
# DataError, retried 5 times, instead of a dead letter at once saying why.
@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("unit", [2, 99, -1, 2**31 - 1])
def test_a_unit_out_of_range_is_invalid_and_leaves_the_job_counts_intact(author, unit, ordered):
    job = jobs.create_job(author.id, "fan", 4, unit_size=2, ordered=ordered)
    jobs.apply_unit(job.id, 0)
    jobs.apply_unit(job.id, 1)
    with pytest.raises(jobs.InvalidUnit, match=r"has units 0\.\.1; the message asks for unit"):
        jobs.apply_unit(job.id, unit)
    JobUnit.mark_failed(job.id, unit, "InvalidUnit: out of range")  # what the dead-letter middleware does
    state = job.to_dict()
    assert (state["status"], state["messages"]) == ("done", {"total": 2, "done": 2, "failed": 0})
    assert followers_of(author) == 4


def test_ordered_units_send_their_successor_once(author):
    job = jobs.create_job(author.id, "fan", 4, unit_size=2, ordered=True)
    second = jobs.create_job(author.id, "more", 2, unit_size=2, ordered=True)
    assert sent() == [unit_message(job, 0)]  # the second waits behind the first
    assert jobs.apply_unit(job.id, 0).sent == 1
    assert sent() == [unit_message(job, 1)]
    assert jobs.apply_unit(job.id, 1).sent == 1
    assert sent() == [unit_message(second, 0)]  # the last unit starts the next job
    # Redelivered after its work was done, a unit sends nothing: the chain cannot fork.
    assert jobs.apply_unit(job.id, 0) == (None, None, 0, False)
    assert jobs.apply_unit(job.id, 1) == (None, None, 0, False)
    assert outbox() == []


def test_an_ordered_job_starts_at_once_when_none_is_ahead(author):
    job = jobs.create_job(author.id, "fan", 2, unit_size=2, ordered=True)
    jobs.apply_unit(job.id, 0)
    sent()
    later = jobs.create_job(author.id, "next", 2, unit_size=2, ordered=True)
    assert sent() == [unit_message(later, 0)]


def test_the_next_ordered_job_skips_failed_and_cancelled_jobs(author):
    first = jobs.create_job(author.id, "a", 1, unit_size=1, ordered=True)
    failed = jobs.create_job(author.id, "b", 1, unit_size=1, ordered=True)
    cancelled = jobs.create_job(author.id, "c", 1, unit_size=1, ordered=True)
    last = jobs.create_job(author.id, "d", 1, unit_size=1, ordered=True)
    Job.update(status="failed").where(Job.id == failed.id).execute()  # an older release's refused job
    Job.update(status="cancelled").where(Job.id == cancelled.id).execute()
    sent()
    jobs.apply_unit(first.id, 0)
    assert sent() == [unit_message(last, 0)]


def test_a_cancelled_job_applies_nothing_and_an_ordered_one_passes_the_chain_on_once(author):
    plain = jobs.create_job(author.id, "plain", 4, unit_size=2)
    ordered = jobs.create_job(author.id, "fan", 4, unit_size=2, ordered=True)
    following = jobs.create_job(author.id, "next", 2, unit_size=2, ordered=True)
    sent()
    Job.update(status="cancelled").where(Job.id.in_([plain.id, ordered.id])).execute()
    assert jobs.apply_unit(plain.id, 0) == (None, None, 0, True)
    assert jobs.apply_unit(ordered.id, 0) == (None, None, 1, True)
    assert sent() == [unit_message(following, 0)]
    assert jobs.apply_unit(ordered.id, 0) == (None, None, 0, True)  # redelivered: passes nothing twice
    assert outbox() == [] and followers_of(author) == 0
    assert Job.get_by_id(plain.id).to_dict()["status"] == "cancelled"


# --- Units applied together (a worker's group commit, actors.unit_batches) ---


def test_units_applied_together_commit_each_once_and_leave_the_others_to_apply_alone(author):
    import followers

    followers.create_user("fan_#7", "pw", 7)  # exists already: skipped, not subscribed
    job = jobs.create_job(author.id, "fan", 10, unit_size=3)
    assert jobs.apply_units(job.id, [0, 1]) == {}  # the password is not hashed yet: each alone
    jobs.apply_unit(job.id, 0)  # (which hashes it)
    assert jobs.apply_units(job.id, [0, 1, 2, 2, 4, -1]) == {
        0: (None, None, 0, False),  # done already: nothing twice
        1: (3, 0, 0, False),
        2: (2, 1, 0, False),
    }  # 4 and -1 are not the job's: left to apply_unit, which says so
    assert followers_of(author) == 8
    state = Job.get_by_id(job.id).to_dict()
    assert (state["messages"]["done"], state["created"], state["skipped"]) == (3, 8, 1)
    assert jobs.apply_units(job.id, [1, 3]) == {1: (None, None, 0, False), 3: (1, 0, 0, False)}
    assert Job.get_by_id(job.id).to_dict()["status"] == "done" and followers_of(author) == 9


def test_units_applied_together_mend_a_dead_letter_and_skip_cancelled_ordered_and_unknown_jobs(author):
    job = jobs.create_job(author.id, "fan", 4, unit_size=1)
    jobs.apply_unit(job.id, 0)
    JobUnit.mark_failed(job.id, 1, "RuntimeError: boom")
    assert jobs.apply_units(job.id, [1, 2]) == {1: (1, 0, 0, False), 2: (1, 0, 0, False)}
    assert Job.get_by_id(job.id).to_dict()["errors"] == []
    ordered = jobs.create_job(author.id, "ord", 2, unit_size=1, ordered=True)
    jobs.apply_unit(ordered.id, 0)  # hashes its password; its successor is decided under the user's lock
    assert jobs.apply_units(ordered.id, [1, 0]) == {}
    Job.update(status="cancelled").where(Job.id == job.id).execute()
    assert jobs.apply_units(job.id, [3, 2]) == {} and jobs.apply_units(424242, [0, 1]) == {}
    assert followers_of(author) == 4


def test_a_cancel_waits_for_units_applied_together(author):
    import psycopg2

    from db.database import connect_params

    job = jobs.create_job(author.id, "fan", 4, unit_size=1)
    jobs.apply_unit(job.id, 0)
    canceller = psycopg2.connect(**connect_params())
    canceller.autocommit = True
    try:
        with canceller.cursor() as cursor, database.atomic():
            jobs.apply_units(job.id, [1, 2])  # its transaction still open: the statement is under way
            cursor.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg2.errors.LockNotAvailable):
                cursor.execute("UPDATE jobs SET status = 'cancelled' WHERE id = %s", (job.id,))
    finally:
        canceller.close()
