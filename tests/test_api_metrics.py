"""GET /metrics: request counts and latencies by route template and status,
summed over gunicorn's worker processes, and jobs by status from the
database."""

import collections
import re

import pytest

import followers
from db import Job, JobUnit
from harness import Stack
from jobs import cancel_job, create_job
from tests.e2e_helpers import create_user, unique


def samples(text, name):
    """{labels string: value} of one metric in Prometheus text format."""
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


# --- Jobs by status, in the database ---------------------------------------


def test_count_by_status_derives_each_status_as_to_dict_does(db):
    user = followers.create_user(unique("m"), "pw", 1)
    counts = (30, 30, 30, 30, 30, 0, 20, 30)
    jobs = [create_job(user.id, unique("j"), count, unit_size=10) for count in counts]
    # 0: queued, no unit; 1: running; 2: done; 3: running, a unit dead-lettered; 4: failed (stored);
    # 5: nothing to do (done); 6: finished with one failed unit of two (failed); 7: cancelled while running.
    JobUnit.create(job=jobs[1], unit=0, status="done")
    for unit in range(3):
        JobUnit.create(job=jobs[2], unit=unit, status="done")
    JobUnit.create(job=jobs[3], unit=0, status="failed", error="x")
    Job.update(status="failed").where(Job.id == jobs[4].id).execute()
    JobUnit.create(job=jobs[6], unit=0, status="done")
    JobUnit.create(job=jobs[6], unit=1, status="failed", error="x")
    JobUnit.create(job=jobs[7], unit=0, status="done")
    cancel_job(jobs[7].id)
    expected = collections.Counter(job.to_dict()["status"] for job in Job.select())
    assert Job.count_by_status() == dict(expected)
    assert expected == {"queued": 1, "running": 2, "done": 2, "failed": 2, "cancelled": 1}


# --- Live ------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack():
    with Stack("metrics", env={"PASSWORD_HASH_COST": "1024"}, api_workers=2) as stack:
        stack.reset()
        stack.start_api()
        yield stack


@pytest.mark.slow  # the API as a gunicorn process
def test_requests_are_counted_by_route_template_and_status_across_workers(stack):
    user_id = create_user(stack, unique("m"))
    for _ in range(20):
        assert stack.get(f"/api/v1/users/{user_id}").status_code == 200
    for _ in range(5):
        assert stack.get("/api/v1/users/999999").status_code == 404
    stack.get("/no/such/thing")
    # Whichever worker answers the scrape, it reports the sum of both.
    scrapes = [stack.get("/metrics") for _ in range(6)]
    assert scrapes[0].headers["Content-Type"].startswith("text/plain")
    for scrape in scrapes:
        counts = samples(scrape.text, "followers_http_requests_total")
        assert counts['method="GET",route="/api/v1/users/{user_id}",status="200"'] == 20
        assert counts['method="GET",route="/api/v1/users/{user_id}",status="404"'] == 5
        assert counts['method="GET",route="unmatched",status="404"'] == 1
        assert counts['method="POST",route="/api/v1/users",status="201"'] == 1
        latency = samples(scrape.text, "followers_http_request_duration_seconds_count")
        assert latency['method="GET",route="/api/v1/users/{user_id}",status="200"'] == 20
    assert len({scrape.text.count("\n") > 0 for scrape in scrapes}) == 1


@pytest.mark.slow  # the API as a gunicorn process
def test_a_refused_body_counts_under_its_route(stack):
    stack.post("/api/v1/add-followers", data="x" * 70_000, headers={"Content-Type": "application/json"})
    counts = samples(stack.get("/metrics").text, "followers_http_requests_total")
    assert counts['method="POST",route="/api/v1/add-followers",status="413"'] >= 1


@pytest.mark.slow  # the API as a gunicorn process
def test_jobs_by_status_come_from_the_database(stack):
    # No workers run here: an async job stays queued.
    user_id = create_user(stack, unique("m"))
    response = stack.post("/api/v1/add-followers", json={"userId": user_id, "followersLogin": unique("q"),
                                                         "count": 5, "async": 1})
    assert response.status_code == 202
    jobs = samples(stack.get("/metrics").text, "followers_jobs")
    assert jobs['status="queued"'] >= 1
    assert set(jobs) == {'status="queued"', 'status="running"', 'status="done"', 'status="failed"',
                         'status="cancelled"'}


@pytest.mark.slow  # the API as a gunicorn process
def test_the_metrics_folder_is_emptied_when_gunicorn_starts(stack):
    assert samples(stack.get("/metrics").text, "followers_http_requests_total")
    stack.api.stop()
    stack.start_api()
    counts = samples(stack.get("/metrics").text, "followers_http_requests_total")
    # Only what happened since the restart: the readiness probe and this scrape's neighbours.
    assert all(not key.startswith('method="GET",route="/api/v1/users/{user_id}"') for key in counts), counts
