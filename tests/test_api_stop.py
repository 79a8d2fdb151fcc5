"""gunicorn stopped with SIGTERM (web/gevent_worker.py): idle keep-alive
connections do not hold the stop for graceful_timeout, and a request in
flight is still answered in full, its connection closed after it."""

import os
import signal
import threading
import time

import pytest
import requests

from harness import Stack, wait_for
from tests.e2e_helpers import create_user, unique

pytestmark = pytest.mark.slow  # real gunicorn processes

GRACEFUL_TIMEOUT_S = 30  # gunicorn.conf.py


@pytest.fixture
def stack():
    with Stack("api_stop") as stack:
        stack.reset(fresh=False)
        stack.start_api()
        yield stack


def sigterm_and_wait(stack):
    """SIGTERM gunicorn's master; returns the seconds until it has exited."""
    started = time.monotonic()
    os.kill(stack.api.popen.pid, signal.SIGTERM)
    stack.api.popen.wait(GRACEFUL_TIMEOUT_S + 10)
    return time.monotonic() - started


def test_an_idle_kept_alive_connection_does_not_hold_the_stop(stack):
    idle = requests.Session()  # keeps its connection open after the answer
    assert idle.get(f"{stack.url}/openapi.json", timeout=10).status_code == 200
    seconds = sigterm_and_wait(stack)
    assert stack.api.popen.returncode == 0
    # gunicorn's own gevent worker waited the whole graceful_timeout here.
    assert seconds < GRACEFUL_TIMEOUT_S / 3, f"stopping took {seconds:.1f} s with one idle connection"
    assert "graceful timeout" not in stack.api.log_path.read_text().lower()


def test_a_request_in_flight_is_answered_and_the_stop_ends_with_it(stack):
    author = create_user(stack, unique("stop"))
    answers = []
    client = requests.Session()
    body = {"userId": author, "followersLogin": unique("f"), "count": 100_000, "async": 0}
    request = threading.Thread(
        target=lambda: answers.append(client.post(f"{stack.url}/api/v1/add-followers", json=body, timeout=60))
    )
    request.start()
    # In flight: its first statements have committed (each commits 5,000), not all of them.
    wait_for(lambda: requests.get(f"{stack.url}/api/v1/users/{author}/followers?limit=1").json()["total"] > 0,
             timeout=30, interval=0.02, what="the sync request's first followers")
    assert not answers, "the request ended before the SIGTERM: make it bigger"
    seconds = sigterm_and_wait(stack)
    request.join()
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    assert answer.json()["created"] == 100_000
    # Its connection, kept alive by the client, was closed once answered.
    assert seconds < GRACEFUL_TIMEOUT_S / 3, f"stopping took {seconds:.1f} s"
