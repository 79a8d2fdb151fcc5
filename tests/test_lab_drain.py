"""The lab's drain rule against the real PostgreSQL: a unit whose message is
still on its way (its worker died under it, a retry waits, or it sits in a
worker's prefetch, never started) keeps the queue from counting as drained,
however long everything has been quiet; a unit lost for good does not."""

import datetime
import subprocess
import sys
from types import SimpleNamespace

import pytest

import followers
import jobs
import settings
from db import JobUnit, MessageEvent, Outbox
from lab.observe import Observer

LONG_AGO = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def observer(db):
    # A queue that does not exist: nothing ready in it.
    stack = SimpleNamespace(database_url=settings.DATABASE_URL, queue_name=f"{settings.STACK_PREFIX}test_no_such_queue")
    observer = Observer(stack)
    yield observer
    observer.close()


@pytest.fixture
def job(db):
    author = followers.create_user("author", "pw", 40)
    job = jobs.create_job(author.id, "fan", 30, unit_size=10, ordered=False)  # units 0, 1, 2
    Outbox.delete().execute()  # a relay published them
    return job


def delivery(job, unit, outcome, *, pid=None, seconds=0):
    MessageEvent.create(
        message_id=f"m{unit}-{outcome}-{seconds}", actor_name="add_followers", job_id=job.id, unit=unit,
        pid=pid or dead_pid(), thread="t", started=LONG_AGO + datetime.timedelta(seconds=seconds),
        ended=None if outcome == "running" else LONG_AGO + datetime.timedelta(seconds=seconds + 1), outcome=outcome,
    )


def finish(job, unit, status="done"):
    JobUnit.insert(job=job.id, unit=unit, status=status).execute()


def test_a_redelivery_not_started_yet_is_in_flight_however_quiet(observer, job):
    finish(job, 0)
    finish(job, 1, "failed")
    delivery(job, 2, "running")  # its worker died minutes ago; the message sits unacked somewhere
    assert (observer.ready(), observer.running_now(), observer.units_in_flight()) == (0, 0, 1)
    assert not observer.drained(settle=2)


@pytest.mark.parametrize("outcome", ["retrying", "dead-lettered"])
def test_a_unit_waiting_for_its_retry_or_its_dead_letter_mark_is_in_flight(observer, job, outcome):
    finish(job, 0)
    finish(job, 1)
    delivery(job, 2, outcome)
    assert observer.units_in_flight() == 1 and not observer.drained(settle=2)


def test_a_unit_never_started_is_in_flight(observer, job):
    finish(job, 0)
    finish(job, 1)
    assert observer.units_in_flight() == 1 and not observer.drained(settle=2)


def test_lost_units_and_finished_ones_let_it_drain(observer, job):
    finish(job, 0)
    delivery(job, 1, "running")
    delivery(job, 1, "done", seconds=10)  # ran again later, its error swallowed, acked: lost
    delivery(job, 2, "done")
    assert observer.units_in_flight() == 0
    assert observer.drained(settle=2)
    assert observer.units_unaccounted() == 2
