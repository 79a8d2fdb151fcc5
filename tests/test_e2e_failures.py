"""End to end, when things go wrong: a broker that is down, workers that are
not running yet, and messages that no producer of ours would send."""

import json
import time
import uuid

import pytest

from harness import Stack, free_port, publish_raw, queue_depth, wait_for
from lab.observe import Observer
from tests.e2e_helpers import create_user, submit_async, unique

# Every test here starts the real processes (or a browser): -m 'not slow' skips them.
pytestmark = pytest.mark.slow


def dramatiq_message(queue, actor="add_followers", args=(), kwargs=None):
    return json.dumps({
        "queue_name": queue, "actor_name": actor, "args": list(args), "kwargs": kwargs or {},
        "options": {}, "message_id": str(uuid.uuid4()), "message_timestamp": int(time.time() * 1000),
    }).encode()


def test_job_waits_queued_until_workers_start(artifacts):
    with Stack("e2e_queued", env={"FOLLOWERS_PER_MESSAGE": "10"}, threads=2) as stack:
        stack.reset()
        stack.start_api()
        author = create_user(stack, "author")
        body = submit_async(stack, author, "w", 35)
        job = stack.get(f"/api/v1/jobs/{body['jobId']}").json()
        assert (job["status"], job["messages"]["done"], job["created"]) == ("queued", 0, 0)
        assert queue_depth(stack.queue_name) == 4
        stack.start_workers()
        job = stack.wait_job(body["jobId"])
        assert (job["status"], job["created"]) == ("done", 35)
        assert queue_depth(stack.queue_name) == 0


def test_broker_down_is_503_and_the_job_is_marked_failed():
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    with Stack("e2e_nobroker", env={"RABBITMQ_URL": closed, "BROKER_TIMEOUT_S": "2"}) as stack:
        stack.reset()
        stack.start_api()
        health = stack.get("/health")
        assert health.status_code == 503
        assert health.json()["database"] == "ok" and health.json()["broker"].startswith("down")
        author = create_user(stack, "author")
        response = stack.post("/api/v1/add-followers", json={"userId": author, "followersLogin": "x",
                                                             "count": 5, "async": 1})
        assert response.status_code == 503
        assert response.json() == {"success": False, "error": "broker unavailable",
                                   "description": response.json()["description"]}
        job = stack.get("/api/v1/jobs/1").json()
        assert job["status"] == "failed" and "not queued" in job["errors"][0]
        # The synchronous path needs no broker.
        response = stack.post("/api/v1/add-followers", json={"userId": author, "followersLogin": "x", "count": 5})
        assert response.json() == {"created": 5, "skipped": 0}


@pytest.fixture(scope="module")
def stack():
    with Stack("e2e_bad", env={"FOLLOWERS_PER_MESSAGE": "5"}, threads=2) as stack:
        stack.reset()
        stack.start()
        yield stack


def test_malformed_messages_are_dead_lettered_and_good_ones_still_complete(stack):
    author = create_user(stack, unique("a"))
    job = submit_async(stack, author, "ok", 5)
    stack.wait_job(job["jobId"])
    good = {"job_id": job["jobId"], "chunk": 0, "user_id": author, "followers_login": "ok", "start": 0, "count": 5}
    bad_bodies = [
        b"{not json",
        b"\xff\xfe binary",
        json.dumps({"userId": 1, "followerLogin": "x", "count": 1}).encode(),  # the original's format
        dramatiq_message(stack.queue_name, kwargs={**good, "count": "five"}),
        dramatiq_message(stack.queue_name, kwargs={**good, "followers_login": "x" * 33}),
        dramatiq_message(stack.queue_name, kwargs={**good, "job_id": 999999}),
        dramatiq_message(stack.queue_name, kwargs={"job_id": job["jobId"]}),
        dramatiq_message(stack.queue_name, args=[1, 2]),
        dramatiq_message(stack.queue_name, actor="no_such_actor", kwargs=good),
        dramatiq_message(stack.queue_name, kwargs={**good, "chunk": 0, "user_id": author + 1000}),  # unknown user
        dramatiq_message(stack.queue_name, kwargs={**good, "count": -5}),
        dramatiq_message(stack.queue_name, kwargs={k: v for k, v in good.items() if k != "start"}),
        dramatiq_message(stack.queue_name, kwargs={**good, "followers_login": "a" * 1_000_000}),  # a 1 MB body
        b"x" * 1_000_000,
        b"[1, 2, 3]",
        b"null",
    ]
    pids = stack.workers.children()
    for body in bad_bodies:
        publish_raw(stack.queue_name, body)
    dead = f"{stack.queue_name}.XQ"
    wait_for(lambda: queue_depth(dead) == len(bad_bodies), timeout=30,
             what=f"{len(bad_bodies)} dead letters (log: {stack.workers.log_path})")
    assert queue_depth(stack.queue_name) == 0

    # No worker died, and a good job behind the bad messages completes.
    assert stack.workers.alive and stack.workers.children() == pids
    second = create_user(stack, unique("a"))
    job = submit_async(stack, second, unique("g"), 12)
    assert stack.wait_job(job["jobId"])["created"] == 12
    log = stack.workers.log_path.read_text()
    assert "count: must be a whole number" in log and "job 999999 does not exist" in log
    assert "followers_login: must be 1 to 32 characters" in log and "no_such_actor" in log
    assert "count: must be from 1" in log and "start: is required" in log
    assert f"user {author}" in log  # the unknown user's unit names the job's real user
    observer = Observer(stack)
    try:  # and the database is consistent: every follower subscribed, every job finished
        assert observer.followers_without_subscription() == 0
        assert observer.finished_jobs() == len(observer.jobs())
    finally:
        observer.close()
