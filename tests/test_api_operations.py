"""The operator API against a real gunicorn and real workers: the jobs list
and cancel, dead letters listed, replayed and purged, the queues and the
workers' heartbeats; every answer as openapi.json says, every error a clean
JSON 4xx. The tests run in file order on one stack: API only first (jobs
stay queued), then with workers, whose processes the last test kills."""

import os
import signal

import pika
import pytest
import requests

import settings
from harness import Stack, queue_depth, wait_for
from tests.api_helpers import TOKEN, assert_clean_4xx, assert_conforms
from tests.conftest import require_broker_figures
from tests.e2e_helpers import create_user, submit_async, unique

JOBS, JOB = "/api/v1/jobs", "/api/v1/jobs/{job_id}"
DEAD, PURGE, REPLAY = "/api/v1/dead-letters", "/api/v1/dead-letters/{message_id}", \
    "/api/v1/dead-letters/{message_id}/replay"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NO_AUTH = {"Authorization": ""}  # the stack sends the token unless told otherwise


@pytest.fixture(scope="module")
def stack():
    env = {"PASSWORD_HASH_COST": "1024", "FOLLOWERS_PER_MESSAGE": "5", "HEARTBEAT_INTERVAL_S": "1",
           "FAULT_RAISE_ON_LOGIN": "bad_#2", "MAX_RETRIES": "0"}
    with Stack("ops_api", env=env, threads=2, api_token=TOKEN, workers_module="lab.workers") as stack:
        stack.reset()
        stack.start_api()
        yield stack


@pytest.fixture(scope="module")
def user_id(stack):
    return create_user(stack, unique("ops"))


def ids(response):
    return [job["id"] for job in response.json()["items"]]


# --- Jobs (no workers yet: every job stays queued) -------------------------------


def test_jobs_are_listed_newest_first_a_keyset_page_at_a_time(stack, user_id):
    other = create_user(stack, unique("ops"))
    mine = [submit_async(stack, user_id, unique("l"), 7)["jobId"] for _ in range(5)]
    theirs = submit_async(stack, other, unique("l"), 3)["jobId"]
    first = stack.get(f"{JOBS}?limit=2&userId={user_id}")
    assert_conforms(first, JOBS)
    assert ids(first) == mine[::-1][:2] and first.json()["nextCursor"] == mine[3]
    second = stack.get(f"{JOBS}?limit=2&userId={user_id}&cursor={first.json()['nextCursor']}")
    third = stack.get(f"{JOBS}?limit=2&userId={user_id}&cursor={second.json()['nextCursor']}")
    assert ids(second) + ids(third) == mine[::-1][2:] and third.json()["nextCursor"] is None
    everyone = stack.get(JOBS).json()
    assert everyone["items"][0]["id"] == theirs and everyone["items"][0] == stack.get(f"{JOBS}/{theirs}").json()
    assert ids(stack.get(f"{JOBS}?status=queued&userId={other}")) == [theirs]
    assert ids(stack.get(f"{JOBS}?status=done&userId={user_id}")) == []


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=abc", "status=finished", "cursor=0",
                                   "cursor=-3", "cursor=" + "9" * 30, "userId=x", "userId=0", "limit=1&limit=2",
                                   "status=done&status=failed"])
def test_a_bad_jobs_query_is_400_naming_the_field(stack, query):
    body = assert_clean_4xx(stack.get(f"{JOBS}?{query}"), 400, JOBS)
    assert list(body["fields"]) == [query.split("=")[0]]


def test_cancel_needs_the_token(stack, user_id):
    job_id = submit_async(stack, user_id, unique("c"), 10)["jobId"]
    for headers in (NO_AUTH, {"Authorization": "Bearer wrong"}):
        response = requests.delete(f"{stack.url}{JOBS}/{job_id}", headers=headers, timeout=10)
        assert_clean_4xx(response, 401, JOB)
    assert stack.get(f"{JOBS}/{job_id}").json()["status"] == "queued"


def test_cancel_answers_the_job_cancelled_and_is_idempotent(stack, user_id):
    job_id = submit_async(stack, user_id, unique("c"), 10)["jobId"]
    first = requests.delete(f"{stack.url}{JOBS}/{job_id}", headers=AUTH, timeout=10)
    assert_conforms(first, JOB)
    assert first.json()["status"] == "cancelled" and first.json()["created"] == 0
    again = requests.delete(f"{stack.url}{JOBS}/{job_id}", headers=AUTH, timeout=10)
    assert again.status_code == 200 and again.json() == first.json()
    assert ids(stack.get(f"{JOBS}?status=cancelled")) == [job_id]


def test_a_finished_job_is_409_and_an_unknown_one_404(stack, user_id):
    done = submit_async(stack, user_id, unique("z"), 0)["jobId"]  # nothing to do: done at once
    body = assert_clean_4xx(requests.delete(f"{stack.url}{JOBS}/{done}", headers=AUTH, timeout=10), 409, JOB)
    assert body["error"] == "job finished" and f"job {done} is done already" in body["description"]
    assert_clean_4xx(requests.delete(f"{stack.url}{JOBS}/999999", headers=AUTH, timeout=10), 404, JOB)
    assert_clean_4xx(requests.delete(f"{stack.url}{JOBS}/0", headers=AUTH, timeout=10), 404, None)


# --- With workers ------------------------------------------------------------------


def test_the_workers_skip_a_cancelled_jobs_units_without_dead_lettering_them(stack, user_id):
    cancelled = submit_async(stack, user_id, unique("k"), 20)["jobId"]  # 4 units waiting in the queue
    assert requests.delete(f"{stack.url}{JOBS}/{cancelled}", headers=AUTH, timeout=10).status_code == 200
    stack.start_workers()
    stack.wait_workers_ready()
    done = stack.wait_job(submit_async(stack, user_id, unique("k"), 20)["jobId"])
    assert done["status"] == "done" and done["created"] == 20
    wait_for(lambda: queue_depth(stack.queue_name) == 0, timeout=20, what="the queue to drain")
    job = stack.get(f"{JOBS}/{cancelled}").json()
    assert (job["status"], job["created"], job["messages"]["done"]) == ("cancelled", 0, 0)
    assert queue_depth(f"{stack.queue_name}.XQ") == 0 and stack.get(DEAD).json()["total"] == 0
    assert f"job {cancelled} unit 3: the job is cancelled; nothing to do" in stack.workers.log_path.read_text()


def dead_letter(stack, user_id):
    """A job whose unit 0 holds the faulty follower bad_#2: dead-lettered at once (MAX_RETRIES=0)."""
    job = stack.wait_job(submit_async(stack, user_id, "bad", 10)["jobId"])
    assert job["status"] == "failed"
    wait_for(lambda: stack.get(DEAD).json()["total"] == 1, timeout=10, what="the dead letter recorded")
    return job, stack.get(DEAD).json()["items"][0]


def test_dead_letters_are_listed_replayed_and_purged(stack, user_id):
    job, letter = dead_letter(stack, user_id)
    listed = stack.get(f"{DEAD}?limit=10")
    assert_conforms(listed, DEAD)
    assert (letter["jobId"], letter["unit"], letter["actorName"]) == (job["id"], 0, "add_followers")
    assert "injected error on follower bad_#2" in letter["reason"]
    path = f"{DEAD}/{letter['messageId']}"

    assert_clean_4xx(requests.post(f"{stack.url}{path}/replay", headers=NO_AUTH, timeout=10), 401, REPLAY)
    assert_clean_4xx(requests.delete(f"{stack.url}{path}", headers=NO_AUTH, timeout=10), 401, PURGE)
    replayed = requests.post(f"{stack.url}{path}/replay", headers=AUTH, timeout=30)
    assert_conforms(replayed, REPLAY)
    assert replayed.json() == {"success": True, "messageId": letter["messageId"], "action": "replayed"}
    # The fault is still there: the replayed unit runs again and comes back to the dead-letter queue.
    wait_for(lambda: stack.get(DEAD).json()["total"] == 1 and queue_depth(f"{stack.queue_name}.XQ") == 1,
             timeout=20, what="the replayed unit to fail again")
    assert stack.workers.log_path.read_text().count(f"dead-lettered message {letter['messageId']}") == 2

    purged = requests.delete(f"{stack.url}{path}", headers=AUTH, timeout=30)
    assert_conforms(purged, PURGE)
    assert purged.json()["action"] == "purged"
    assert queue_depth(f"{stack.queue_name}.XQ") == 0 and stack.get(DEAD).json()["total"] == 0
    assert_clean_4xx(requests.delete(f"{stack.url}{path}", headers=AUTH, timeout=10), 404, PURGE)
    assert_clean_4xx(requests.post(f"{stack.url}{path}/replay", headers=AUTH, timeout=10), 404, REPLAY)


@pytest.mark.parametrize("message_id", ["nope", "x" * 64, "x" * 65, "%20", "..%2F..", "' OR 1=1 --"])
def test_unknown_dead_letters_are_404(stack, message_id):
    for method, path in (("POST", REPLAY), ("DELETE", PURGE)):
        url = f"{stack.url}{DEAD}/{message_id}" + ("/replay" if method == "POST" else "")
        response = requests.request(method, url, headers=AUTH, timeout=10)
        assert_clean_4xx(response, 404, path if response.json()["error"].startswith("no dead letter") else None)


def test_a_dead_letter_rabbitmq_no_longer_holds_is_404_to_replay_and_can_be_purged(stack, user_id):
    _, letter = dead_letter(stack, user_id)
    connection = pika.BlockingConnection(pika.URLParameters(settings.RABBITMQ_URL))
    connection.channel().queue_purge(f"{stack.queue_name}.XQ")  # purged in RabbitMQ's UI, say
    connection.close()
    path = f"{DEAD}/{letter['messageId']}"
    body = assert_clean_4xx(requests.post(f"{stack.url}{path}/replay", headers=AUTH, timeout=10), 404, REPLAY)
    assert "no longer in" in body["error"]
    assert requests.delete(f"{stack.url}{path}", headers=AUTH, timeout=10).status_code == 200
    assert stack.get(DEAD).json()["total"] == 0


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "offset=-1", "offset=x"])
def test_a_bad_dead_letters_page_is_400(stack, query):
    assert_clean_4xx(stack.get(f"{DEAD}?{query}"), 400, DEAD)


def test_queues_show_rabbitmqs_figures_and_what_postgresql_recorded(stack, user_id):
    dead_letter(stack, user_id)

    def figures():
        answer = stack.get("/api/v1/queues")
        assert_conforms(answer, "/api/v1/queues")
        queue = require_broker_figures(answer.json())["queues"][0]
        # The management API refreshes its figures every few seconds.
        return answer.json() if queue["consumers"] == 2 and queue["deadLettered"] == 1 else None

    answer = wait_for(figures, timeout=20, what="RabbitMQ's figures", interval=0.5)
    queue = answer["queues"][0]
    assert answer["broker"] == {"available": True} and queue["name"] == stack.queue_name
    assert queue["deadLettersRecorded"] == 1 and queue["ready"] == 0
    assert answer["outbox"] == {"pending": 0, "oldestAgeSeconds": None}


def test_workers_report_their_heartbeats_and_a_killed_one_shows_as_gone(stack):
    def workers():
        answer = stack.get("/api/v1/workers")
        assert_conforms(answer, "/api/v1/workers")
        return answer.json()["items"]

    pids = set(stack.workers.children())
    alive = {worker["pid"]: worker for worker in workers() if worker["state"] == "alive"}
    assert set(alive) == pids and len(pids) == 2
    assert all(worker["threads"] == 2 and worker["heartbeatIntervalSeconds"] == 1 for worker in alive.values())
    # Every unit done so far (the jobs above, the replayed one included) counted by one process or the other.
    assert sum(worker["unitsDone"] for worker in alive.values()) >= 4 + 2
    killed = min(pids)
    os.kill(killed, signal.SIGKILL)  # dramatiq then stops the other process gracefully and exits
    states = wait_for(lambda: (lambda found: found if found.get(killed) == "gone" else None)(
        {worker["pid"]: worker["state"] for worker in workers()}), timeout=15, what="the killed worker gone")
    assert states[max(pids)] == "stopped"
