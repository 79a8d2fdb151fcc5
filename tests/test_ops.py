"""The operations package against the real PostgreSQL and RabbitMQ: the
queue overview when RabbitMQ's management API does not answer (or refuses
us), the outbox backlog, and dead-letter walks taking turns."""

import jsonschema_rs
import psycopg2
import pytest

import settings
from db import DeadLetter, Outbox, database
from db.database import connect_params
from harness import free_port
from ops import dead_letters, queues
from tests.api_helpers import OPENAPI
from tests.conftest import require_broker_figures


def assert_is_a_queues_answer(answer):
    schema = {"$ref": "#/components/schemas/Queues", "components": OPENAPI["components"]}
    errors = [error.message for error in jsonschema_rs.Draft202012Validator(schema).iter_errors(answer)]
    assert not errors, errors


def test_without_the_management_api_the_overview_says_so_and_keeps_postgresqls_figures(db, monkeypatch):
    DeadLetter.record("m-1", settings.QUEUE_NAME, "add_followers", "boom", 1, job_id=None, unit=None)
    monkeypatch.setattr(settings, "RABBITMQ_MANAGEMENT_URL", f"http://127.0.0.1:{free_port()}")
    answer = queues.overview()
    assert_is_a_queues_answer(answer)
    assert answer["broker"]["available"] is False and "does not answer" in answer["broker"]["description"]
    queue = answer["queues"][0]
    assert queue["deadLettersRecorded"] == 1
    assert {queue[name] for name in ("ready", "unacked", "consumers", "inRate", "outRate", "delayed")} == {None}


def test_refused_credentials_make_the_broker_figures_unavailable_too(db, monkeypatch):
    monkeypatch.setattr(settings, "RABBITMQ_MANAGEMENT_URL", "http://nobody:wrong@127.0.0.1:15672")
    answer = queues.overview()
    assert answer["broker"] == {"available": False,
                                "description": "RabbitMQ's management API answered 401 Unauthorized"}


def test_the_management_api_is_read_with_the_rabbitmq_urls_credentials(db):
    answer = require_broker_figures(queues.overview())
    assert_is_a_queues_answer(answer)
    assert answer["broker"] == {"available": True}


def test_the_outbox_backlog_counts_the_unsent_messages_and_the_age_of_the_oldest(db):
    assert queues.outbox_backlog() == {"pending": 0, "oldestAgeSeconds": None}
    Outbox.add("q", "add_followers", {"job_id": 1, "unit": 0})
    database.execute_sql("UPDATE outbox SET created_at = now() - interval '90 seconds'")
    Outbox.add("q", "add_followers", {"job_id": 1, "unit": 1})
    backlog = queues.outbox_backlog()
    assert backlog["pending"] == 2 and 89 < backlog["oldestAgeSeconds"] < 120


def test_a_walk_of_the_dead_letter_queue_waits_for_another_then_gives_up(db, monkeypatch):
    monkeypatch.setattr(dead_letters, "LOCK_WAIT_S", 0.3)
    holder = psycopg2.connect(**connect_params())  # another walker: an API worker, the CLI
    try:
        holder.autocommit = True
        holder.cursor().execute("SELECT pg_advisory_lock(%s, hashtext(%s))",
                                (dead_letters.LOCK_CLASS, settings.QUEUE_NAME))
        with pytest.raises(dead_letters.DeadLetterQueueBusy, match="try again"):
            dead_letters.replay(["any"])
    finally:
        holder.close()
    outcome = dead_letters.purge(["not-there"])  # free again: the walk runs (and finds nothing)
    assert outcome.done == [] and outcome.queue == f"{settings.QUEUE_NAME}.XQ"
