"""The service's figures, over HTTP against the real gunicorn and dramatiq
processes of a ``harness.Stack``."""

import itertools
import math
import statistics
import time

from harness import wait_for

from .progress import say
from .raw_http import closed_loop, json_post

#: How often a job is polled (the pika baseline polls its count as often).
POLL_S = 0.05


def p99(values):
    """The 99th percentile of ``values`` by nearest rank (of 100 values, the
    99th smallest), as every latency row of the bench reports it."""
    ordered = sorted(values)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


def expect(response, status, what):
    if response.status_code != status:
        raise RuntimeError(f"{what}: HTTP {response.status_code} (expected {status}): {response.text[:300]}")
    return response.json()


def create_author(stack, login):
    response = stack.post("/api/v1/users", json={"login": login, "password": "bench", "age": 30})
    return expect(response, 201, f"creating user {login!r} on {stack.url}")["id"]


def add_followers_sync(stack, user_id, followers_login, count):
    """One synchronous request; returns the seconds it took."""
    started = time.perf_counter()
    response = stack.post(
        "/api/v1/add-followers",
        json={"userId": user_id, "followersLogin": followers_login, "count": count, "async": 0},
        timeout=300,
    )
    elapsed = time.perf_counter() - started
    body = expect(response, 200, f"sync add-followers count={count}")
    if body["created"] != count:
        raise RuntimeError(f"sync add-followers created {body['created']} of {count}: is {followers_login!r} reused?")
    return elapsed


def add_followers_async(stack, user_id, followers_login, count, timeout=600, on_poll=None):
    """POST an async request and poll its job until done; returns the seconds
    from the POST to the first poll that sees it done."""
    started = time.perf_counter()
    response = stack.post(
        "/api/v1/add-followers",
        json={"userId": user_id, "followersLogin": followers_login, "count": count, "async": 1},
    )
    job_id = expect(response, 202, f"async add-followers count={count}")["jobId"]
    last_report = [started]

    def done():
        job = expect(stack.get(f"/api/v1/jobs/{job_id}"), 200, f"GET job {job_id}")
        if job["status"] == "failed":
            raise RuntimeError(f"job {job_id} failed: {job['errors'][:3]} (logs: {stack.log_dir})")
        if on_poll:
            on_poll()
        now = time.perf_counter()
        if now - last_report[0] >= 2:
            units = job["messages"]
            say(f"    job {job_id}: {job['created']:,}/{count:,} followers, {units['done']}/{units['total']} units")
            last_report[0] = now
        return job["status"] == "done"

    wait_for(done, timeout=timeout, interval=POLL_S, what=f"job {job_id} ({count:,} followers) to be done")
    elapsed = time.perf_counter() - started
    job = stack.get(f"/api/v1/jobs/{job_id}").json()
    if job["created"] != count:
        raise RuntimeError(f"job {job_id} created {job['created']} of {count} followers")
    return elapsed


def async_requests_per_second(stack, user_id, *, seconds, clients, count=10):
    """``clients`` clients POST async requests of ``count`` followers, each
    the next as soon as the last is answered, for ``seconds``; returns
    (accepted requests/s, p99 of their latencies in ms)."""
    request = json_post(stack.url, "/api/v1/add-followers",
                        {"userId": user_id, "followersLogin": "api", "count": count, "async": 1})
    started = time.perf_counter()
    answers = closed_loop(stack.url, itertools.repeat(request), connections=clients, seconds=seconds)
    elapsed = time.perf_counter() - started
    expect_answers(answers, 202, "async add-followers under load", stack)
    return len(answers) / elapsed, p99([answer.ms for answer in answers])


def async_latency(stack, user_id, *, count, requests_count):
    """(p50, p99) in ms of ``requests_count`` sequential async requests of
    ``count`` followers (each accepted job only has to be published)."""
    request = json_post(stack.url, "/api/v1/add-followers",
                        {"userId": user_id, "followersLogin": "big", "count": count, "async": 1})
    answers = closed_loop(stack.url, itertools.repeat(request, requests_count), connections=1)
    expect_answers(answers, 202, f"async add-followers count={count}", stack)
    latencies = [answer.ms for answer in answers]
    return statistics.median(latencies), p99(latencies)


def expect_answers(answers, status, what, stack):
    """``expect`` for the answers of ``closed_loop``: raise on the first
    that is not ``status``."""
    for answer in answers:
        if answer.status != status:
            raise RuntimeError(f"{what}: HTTP {answer.status}: {answer.body[:300]!r} (log: {stack.api.log_path})")


def followers_total(stack, user_id):
    return expect(stack.get(f"/api/v1/users/{user_id}/followers?limit=1"), 200, f"user {user_id}'s followers")["total"]


def small_jobs(stack, user_id, followers_login, *, jobs, clients, wait=True):
    """``jobs`` async requests of one follower each (logins
    ``{followers_login}{k}_#0``), sent over ``clients`` connections as fast as
    the API accepts them; with ``wait``, until every follower is committed (the
    user's follower count, polled). Returns the seconds it took."""
    expected = followers_total(stack, user_id) + jobs if wait else None
    posts = [
        json_post(stack.url, "/api/v1/add-followers",
                  {"userId": user_id, "followersLogin": f"{followers_login}{k}", "count": 1, "async": 1})
        for k in range(jobs)
    ]  # fmt: skip
    started = time.perf_counter()
    expect_answers(closed_loop(stack.url, posts, connections=clients), 202, "1-follower async jobs", stack)
    if wait:
        last_report = [time.perf_counter()]

        def done():
            total = followers_total(stack, user_id)
            if time.perf_counter() - last_report[0] >= 2:
                say(f"    {jobs - (expected - total):,}/{jobs:,} jobs done")
                last_report[0] = time.perf_counter()
            return total >= expected

        wait_for(done, timeout=600, interval=POLL_S, what=f"{jobs:,} 1-follower jobs to be done")
        elapsed = time.perf_counter() - started
        total = followers_total(stack, user_id)
        if total != expected:  # units of one author on 16 threads: the count must stay exact
            raise RuntimeError(f"user {user_id} has a follower count of {total:,}, expected {expected:,}")
        return elapsed
    return time.perf_counter() - started
