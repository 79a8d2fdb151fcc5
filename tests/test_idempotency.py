"""Idempotency-Key on POST /api/v1/add-followers, in process (falcon's
TestClient on the real app and the tests' database), where a test can
put a failure between two statements: a retry racing a failing first
request, an answer that could not be recorded. The end-to-end behaviour
(replays, mismatches, concurrent requests) is in tests/test_e2e_api.py."""

import threading

import peewee
import pytest

import followers
from db import IdempotencyKey, database
from web.intake import JobIntake

ADD = "/api/v1/add-followers"


class QuietRelay:
    """The intake's relay, publishing nothing (these tests are about keys)."""

    def pending(self, *, at_most):
        return 0

    def wake(self):
        pass


@pytest.fixture
def client(app_client):
    return app_client(api_token="", intake=JobIntake(relay=QuietRelay(), max_pending=1000))


@pytest.fixture
def author(client):
    user = followers.create_user("author", "secret", 40)
    database.close()  # as the app does after each request
    return user


def test_a_retry_racing_the_release_of_a_failed_first_request_runs_it_again(client, author, monkeypatch):
    """The retry finds the first request's key, which that request releases
    (it failed) before the retry reads it: the key is free, and the retry
    runs. It was a 500."""
    body = {"userId": author.id, "followersLogin": "fan", "count": 3}
    headers = {"Idempotency-Key": "race-1"}
    first_may_fail, first_answer = threading.Event(), []
    add_followers_now = followers.add_followers_now

    def slow_then_failing_the_first_time(user, login, count):
        if not first_answer and threading.current_thread() is not threading.main_thread():
            first_may_fail.wait(10)
            raise peewee.OperationalError("server closed the connection unexpectedly")
        return add_followers_now(user, login, count)

    monkeypatch.setattr(followers, "add_followers_now", slow_then_failing_the_first_time)
    first = threading.Thread(target=lambda: first_answer.append(client.simulate_post(ADD, json=body, headers=headers)))
    first.start()
    for _ in range(200):  # until the first request has claimed its key
        if IdempotencyKey.get_or_none(IdempotencyKey.key == "race-1") is not None:
            break
        threading.Event().wait(0.05)
    database.close()
    get_or_none = IdempotencyKey.get_or_none.__func__

    def read_once_the_first_has_failed(cls, *query):  # the retry, between its INSERT and its read
        first_may_fail.set()
        first.join(10)
        return get_or_none(cls, *query)

    monkeypatch.setattr(IdempotencyKey, "get_or_none", classmethod(read_once_the_first_has_failed))
    retry = client.simulate_post(ADD, json=body, headers=headers)
    assert first_answer[0].status_code == 503
    assert (retry.status_code, retry.json) == (200, {"created": 3, "skipped": 0})


def test_a_sync_request_whose_answer_could_not_be_recorded_can_be_retried(client, author, monkeypatch):
    """Its followers were added, then recording the answer failed (503):
    the key was left "still running" (409) until it expired, 24 h later."""
    body = {"userId": author.id, "followersLogin": "fan", "count": 3}
    headers = {"Idempotency-Key": "lost-answer"}
    complete = IdempotencyKey.complete.__func__
    failures = [peewee.OperationalError("server closed the connection unexpectedly")]

    def complete_failing_once(cls, key, status, response):
        if failures:
            raise failures.pop()
        return complete(cls, key, status, response)

    monkeypatch.setattr(IdempotencyKey, "complete", classmethod(complete_failing_once))
    assert client.simulate_post(ADD, json=body, headers=headers).status_code == 503
    retry = client.simulate_post(ADD, json=body, headers=headers)
    # Run again: nothing is added twice, and the answer says so.
    assert (retry.status_code, retry.json) == (200, {"created": 0, "skipped": 3})
    again = client.simulate_post(ADD, json=body, headers=headers)
    assert (again.status_code, again.json) == (200, {"created": 0, "skipped": 3})
