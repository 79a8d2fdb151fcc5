"""End to end, when things go wrong: a broker that is down, workers that are
not running yet, and messages that no producer of ours would send."""

import json
import time
import uuid

import pytest
import requests

from harness import Stack, delete_queues, free_port, publish_raw, queue_depth, wait_for
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
        # The API's relay publishes the committed units at once, with no worker running.
        wait_for(lambda: queue_depth(stack.queue_name) == 4, timeout=5, what="4 units on the queue")
        stack.start_workers()
        job = stack.wait_job(body["jobId"])
        assert (job["status"], job["created"]) == ("done", 35)
        assert queue_depth(stack.queue_name) == 0


def test_with_the_broker_unreachable_jobs_are_accepted_and_start_once_it_answers():
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    env = {"RABBITMQ_URL": closed, "BROKER_TIMEOUT_S": "2", "FOLLOWERS_PER_MESSAGE": "5", "OUTBOX_SWEEP_MS": "200"}
    with Stack("e2e_nobroker", env=env, threads=2) as stack:
        stack.reset()
        delete_queues(stack.queue_name)  # reset() cannot reach RabbitMQ through the closed port
        stack.start_api()
        author = create_user(stack, "author")
        accepted = [submit_async(stack, author, f"x{i}", 10)["jobId"] for i in range(3)]
        health = stack.get("/health")
        assert health.status_code == 200, health.text  # PostgreSQL answers: the API takes work
        body = health.json()
        assert (body["status"], body["database"]) == ("degraded", "ok") and body["broker"].startswith("down")
        assert body["outbox"]["pending"] == 6 and body["outbox"]["oldestAgeSeconds"] >= 0
        assert stack.get(f"/api/v1/jobs/{accepted[0]}").json()["status"] == "queued"
        # The synchronous path needs no broker.
        response = stack.post("/api/v1/add-followers", json={"userId": author, "followersLogin": "x", "count": 5})
        assert response.json() == {"created": 5, "skipped": 0}

        # RabbitMQ is reachable again (the stack is restarted with the right URL):
        # the relay publishes the backlog, and every accepted job is done.
        stack.api.stop()
        del stack.env["RABBITMQ_URL"]
        stack.start()
        for job_id in accepted:
            assert stack.wait_job(job_id)["status"] == "done"
        assert stack.get("/health").json()["outbox"] == {"pending": 0, "oldestAgeSeconds": None}


def test_above_the_outbox_limit_the_api_answers_503_with_retry_after():
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    env = {"RABBITMQ_URL": closed, "BROKER_TIMEOUT_S": "1", "FOLLOWERS_PER_MESSAGE": "1", "OUTBOX_MAX_PENDING": "5",
           "API_WORKERS": "1"}
    with Stack("e2e_backlog", env=env, api_workers=1) as stack:
        stack.reset()
        stack.start_api()
        author = create_user(stack, "author")
        submit_async(stack, author, "first", 6)  # 6 messages wait: over the limit of 5
        time.sleep(1.1)  # the API counts the backlog at most once a second
        response = stack.post("/api/v1/add-followers", json={"userId": author, "followersLogin": "more", "count": 1,
                                                             "async": 1})
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert response.json()["error"] == "too many messages waiting"
        assert "more than 5 messages wait in the outbox" in response.json()["description"]
        # The synchronous path still works: it needs no outbox.
        response = stack.post("/api/v1/add-followers", json={"userId": author, "followersLogin": "now", "count": 2})
        assert response.status_code == 200


@pytest.fixture(scope="module")
def stack():
    with Stack("e2e_bad", env={"FOLLOWERS_PER_MESSAGE": "5"}, threads=2) as stack:
        stack.reset()
        stack.start()
        yield stack


def test_malformed_messages_are_dead_lettered_and_good_ones_still_complete(stack):
    author = create_user(stack, unique("a"))
    first = submit_async(stack, author, "ok", 5)
    stack.wait_job(first["jobId"])
    good = {"job_id": first["jobId"], "unit": 0}
    bad_bodies = [
        b"{not json",
        b"\xff\xfe binary",
        json.dumps({"userId": 1, "followerLogin": "x", "count": 1}).encode(),  # the original's format
        dramatiq_message(stack.queue_name, kwargs={**good, "unit": "zero"}),
        dramatiq_message(stack.queue_name, kwargs={**good, "job_id": 999999}),
        dramatiq_message(stack.queue_name, kwargs={**good, "unit": 99}),  # a unit the job does not have
        dramatiq_message(stack.queue_name, kwargs={**good, "unit": -1}),
        dramatiq_message(stack.queue_name, kwargs={"job_id": first["jobId"]}),
        dramatiq_message(stack.queue_name, kwargs={**good, "user_id": author, "start": 0}),  # the old shape
        dramatiq_message(stack.queue_name, args=[1, 2]),
        dramatiq_message(stack.queue_name, actor="no_such_actor", kwargs=good),
        dramatiq_message(stack.queue_name, kwargs={**good, "pad": "a" * 1_000_000}),  # a 1 MB body
        dramatiq_message(stack.queue_name, actor="split_job", kwargs={"job_id": 999999}),
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
    assert "unit: must be a whole number" in log and "job 999999 does not exist" in log
    assert f"job {first['jobId']} has units 0..0; the message asks for unit 99" in log and "no_such_actor" in log
    assert "unit: is required" in log and "user_id: is not a known field" in log
    # The messages that lied about the good job left its counts as they were.
    state = stack.get(f"/api/v1/jobs/{first['jobId']}").json()
    assert (state["status"], state["messages"], state["created"]) == ("done", {"total": 1, "done": 1, "failed": 0}, 5)
    observer = Observer(stack)
    try:  # and the database is consistent: every follower subscribed, every job finished
        assert observer.followers_without_subscription() == 0
        assert observer.finished_jobs() == len(observer.jobs())
    finally:
        observer.close()


@pytest.fixture(scope="module")
def ordered_stack():
    """Ordered users; the unit holding follower stuck_#0 is dead-lettered at once."""
    env = {"FOLLOWERS_PER_MESSAGE": "2", "ORDERED_PER_USER": "1", "FAULT_RAISE_ON_LOGIN": "stuck_#0",
           "MAX_RETRIES": "0"}
    with Stack("e2e_ordered", env=env, threads=2, workers_module="lab.workers") as stack:
        stack.reset()
        stack.start()
        yield stack


def test_a_finished_ordered_unit_delivered_again_runs_once_and_sends_nothing(ordered_stack):
    """The chain of an ordered user cannot fork: a duplicate of a done unit
    (what a redelivery after a crash is) runs, finds its unit done, and
    sends no successor, so nothing after it runs again."""
    stack = ordered_stack
    author = create_user(stack, "author")
    jobs = [submit_async(stack, author, f"o{i}", 6)["jobId"] for i in range(4)]  # 4 jobs x 3 units
    for job_id in jobs:
        assert stack.wait_job(job_id)["status"] == "done"
    observer = Observer(stack)
    try:
        def runs():
            return observer._value("SELECT count(*) FROM message_events WHERE actor_name = 'add_followers'")

        wait_for(lambda: runs() == 12, timeout=10, what="12 unit runs")
        for unit in (0, 1):  # the first job's first units, long done
            publish_raw(stack.queue_name, dramatiq_message(stack.queue_name, kwargs={"job_id": jobs[0],
                                                                                   "unit": unit}))
        wait_for(lambda: runs() == 14, timeout=10, what="the 2 duplicates to run")
        time.sleep(1.5)  # a forked chain would keep running now
        assert runs() == 14 and observer.ready() == 0
        assert observer.unexplained_runs() == 2  # the two duplicates, and nothing after them
    finally:
        observer.close()


def held_by_a_dead_letter(stack, name, count):
    """A new user's ordered job of ``count`` followers whose unit 0 (it
    holds stuck_#0) is dead-lettered, and the user's next ordered job,
    waiting behind it. Returns their ids."""
    author = create_user(stack, name)
    stuck = submit_async(stack, author, "stuck", count)["jobId"]
    after = submit_async(stack, author, f"after_{name}", 4)["jobId"]
    wait_for(lambda: stack.get(f"/api/v1/jobs/{stuck}").json()["messages"]["failed"] == 1, timeout=20,
             what="unit 0 of the stuck job dead-lettered")
    time.sleep(1)  # the next job would have started by now
    assert stack.get(f"/api/v1/jobs/{after}").json()["status"] == "queued"
    return stuck, after


@pytest.mark.parametrize("count, status", [(6, "running"), (2, "failed")])  # units left, or none
def test_cancelling_the_ordered_job_a_dead_letter_holds_lets_the_users_next_job_run(ordered_stack, count, status):
    """Order first: a dead-lettered unit holds its user's next jobs until it
    is replayed. Cancelling its job is the other way out: the next job runs."""
    stack = ordered_stack
    stuck, after = held_by_a_dead_letter(stack, f"held{count}", count)
    held = stack.get(f"/api/v1/jobs/{stuck}").json()
    assert (held["status"], held["cancellable"]) == (status, True)
    cancelled = requests.delete(f"{stack.url}/api/v1/jobs/{stuck}", timeout=10)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    job = stack.wait_job(after, timeout=20)
    assert (job["status"], job["created"]) == ("done", 4)
    assert stack.get(f"/api/v1/jobs/{stuck}").json()["created"] == 0


def test_purging_the_dead_letter_of_an_ordered_unit_runs_the_rest_of_its_job_then_the_users_next(ordered_stack):
    """The other way out: the purged unit is given up, and the rest goes on
    without it, as an unordered job's other units do."""
    stack = ordered_stack
    stuck, after = held_by_a_dead_letter(stack, "purger", 6)  # unit 0 of 3
    letter, = [item for item in stack.get("/api/v1/dead-letters").json()["items"] if item["jobId"] == stuck]
    purged = requests.delete(f"{stack.url}/api/v1/dead-letters/{letter['messageId']}", timeout=30)
    assert purged.status_code == 200, purged.text
    job = stack.wait_job(after, timeout=20)
    assert (job["status"], job["created"]) == ("done", 4)
    held = stack.get(f"/api/v1/jobs/{stuck}").json()
    assert (held["status"], held["created"], held["messages"]) == ("failed", 4, {"total": 3, "done": 2, "failed": 1})
