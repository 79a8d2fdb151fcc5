"""Test set-up: the tests' own database and queue, never a developer's.

The environment is fixed before any project module is imported, since
settings.py reads it once at import.
"""

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_base = urlsplit(os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/followers")
# STACK_PREFIX (see settings.py) keeps two checkouts' test runs apart.
_prefix = os.environ.get("STACK_PREFIX", "")
os.environ["DATABASE_URL"] = urlunsplit(_base._replace(path=f"/followers_{_prefix}test"))
os.environ["QUEUE_NAME"] = f"{_prefix}test_add_followers"
os.environ["PASSWORD_HASH_COST"] = "1024"  # hashing is not under test here; keep it cheap

import pytest  # noqa: E402

from db import database, schema  # noqa: E402


@pytest.fixture(scope="session")
def test_database():
    schema.drop_database()
    schema.set_up()
    yield database
    database.close_all()


@pytest.fixture
def db(test_database):
    """A connection to an empty test database."""
    schema.truncate_all()
    with test_database.connection_context():
        yield test_database


@pytest.fixture
def app_client(test_database):
    """``app_client(**create_app options)``: falcon's TestClient on the real
    app, in process, over the emptied test database. No ``db`` fixture: the
    app takes a connection per request and hands it back, as in gunicorn."""
    import falcon.testing

    import api

    def make(**options):
        schema.truncate_all()
        return falcon.testing.TestClient(api.create_app(**options))

    yield make
    database.close()


@pytest.fixture
def author(db):
    """A user to add followers to, in the empty test database."""
    import followers

    return followers.create_user("author", "pw", 40)


def sent():
    """What a relay would publish now: the outbox rows (actor, kwargs), taken out."""
    from db import Outbox

    with database.atomic():
        return [(actor, kwargs) for _, _, _, actor, kwargs, _ in Outbox.claim(10_000)]


@pytest.fixture(autouse=True)
def no_process_relay_in_the_tests():
    """This process's own outbox relay (``actors.relay``, started by the
    first wake) would publish the tests' database's outbox from a thread
    of its own, every second, under the tests that read that outbox
    (tests/test_relay.py, test_cancel's ``sent``): they would lose rows at
    random. An in-process test must not wake it; tests that need a relay
    run real processes, or a ``Relay`` of their own."""
    yield
    actors = sys.modules.get("actors")  # not imported by this test session: no relay either
    assert actors is None or not actors.relay.running, (
        "this test woke the process's outbox relay (actors.relay); see the fixture")


def require_broker_figures(answer):
    """Fail at once, saying what to do, when an overview (``ops.queues``)
    says RabbitMQ's management API does not answer: the plugin is off on
    this machine (``./run tests`` turns it on; plain pytest does not)."""
    if not answer["broker"]["available"]:
        pytest.fail(f"{answer['broker']['description']}: turn the management plugin on "
                    "(rabbitmq-plugins enable rabbitmq_management), as ./run tests does", pytrace=False)
    return answer


@pytest.fixture(scope="session")
def artifacts():
    path = ROOT / "artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def lab_run():
    """``lab.runner.run`` once per scenario and mode in a session: the lab's
    verdict tests and the report's browser test read the same real runs
    rather than start them twice (~10 s of the suite)."""
    from lab.runner import run
    from lab.scenarios import BY_NAME

    results = {}

    def run_once(scenario_name, mode):
        if (scenario_name, mode) not in results:
            results[scenario_name, mode] = run(BY_NAME[scenario_name], mode, progress=False, stack_name="test_lab")
        return results[scenario_name, mode]

    return run_once


@pytest.fixture
def woken(monkeypatch):
    """The relay wakes this process's own relay thread: counted instead (see
    tests/conftest.py's no_process_relay_in_the_tests)."""
    from ops import dead_letters

    calls = []
    monkeypatch.setattr(dead_letters.relay, "wake", lambda: calls.append(1))
    return calls


def dead_letter(job, unit, message_id=None):
    """Unit ``unit`` of ``job`` dead-lettered, as the workers record it
    (a message id of Dramatiq's, a uuid, is needed to replay it)."""
    from db import DeadLetter, JobUnit

    message_id = message_id or f"m-{job.id}-{unit}"
    DeadLetter.record(message_id, "q", "add_followers", "RuntimeError: boom", 1, job_id=job.id, unit=unit)
    JobUnit.mark_failed(job.id, unit, "RuntimeError: boom")
    return message_id


@pytest.fixture
def dead_letter_queue():
    """A work queue name of the tests' own, and its dead-letter queue (declared, emptied)."""
    import pika

    import settings
    from harness import delete_queues

    name = f"{settings.QUEUE_NAME}_dead"
    delete_queues(name)
    connection = pika.BlockingConnection(pika.URLParameters(settings.RABBITMQ_URL))
    connection.channel().queue_declare(f"{name}.XQ", durable=True)
    connection.close()
    yield name
    delete_queues(name)


def publish_dead_letter(queue, message_id, job, unit):
    """A unit's message in ``queue``'s dead-letter queue, as Dramatiq puts it there."""
    import json

    from harness import publish_raw

    publish_raw(f"{queue}.XQ", json.dumps({
        "queue_name": queue, "actor_name": "add_followers", "args": [], "kwargs": {"job_id": job.id, "unit": unit},
        "options": {}, "message_id": message_id, "message_timestamp": 0}).encode())
