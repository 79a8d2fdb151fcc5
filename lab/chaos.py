"""python -m lab chaos: several failures at once, and nothing lost.

Starts the API and supervised ``dramatiq actors --processes 2``, submits a
mix of sync and async jobs for several users while it SIGKILLs a random
worker process every few seconds, restarts RabbitMQ once and PostgreSQL
once; then waits for every accepted job to finish and counts.

It restarts the machine's own RabbitMQ and PostgreSQL (``rabbitmqctl``,
``pg_ctlcluster``): run it where nothing else needs them for a minute.
"""

import os
import random
import secrets
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from harness import Stack, wait_for

from .observe import Observer

CHAOS_ENV = {
    "FOLLOWERS_PER_MESSAGE": "5",  # many small units: many in flight at every kill
    "FAULT_UNIT_DELAY_MS": "50",  # units take a while: kills and outages land mid-work
    "MAX_RETRIES": "20",  # enough to outlast each outage...
    "MIN_BACKOFF_MS": "200",
    "MAX_BACKOFF_MS": "2000",  # ...without waiting long after it
    "PASSWORD_HASH_COST": "1024",
    "BROKER_TIMEOUT_S": "3",
}


@dataclass
class Tally:
    accepted: dict = field(default_factory=dict)  # job id -> (user id, followers requested)
    sync_created: int = 0
    refused: int = 0  # requests answered 503 during an outage (nothing accepted, retried)
    kills: int = 0
    outages: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def log(text):
    print(text, flush=True)


# --- Outages -------------------------------------------------------------


def restart_rabbitmq():
    if not shutil.which("rabbitmqctl"):
        return "skipped: no rabbitmqctl on this machine"
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=60)
    time.sleep(1)
    subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
    return "survived"


def restart_postgres():
    if not shutil.which("pg_ctlcluster") or not Path("/etc/postgresql").is_dir():
        return "skipped: no pg_ctlcluster on this machine"
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True, capture_output=True, timeout=120,
    )
    return "survived"


# --- The load --------------------------------------------------------------


def _post_until_accepted(stack, path, body, tally, deadline):
    """What a client does during an outage: retry a 503 until accepted."""
    while time.time() < deadline:
        try:
            response = stack.post(path, data=body, timeout=30)
        except requests.RequestException:
            response = None
        if response is not None and response.status_code < 500:
            return response
        with tally.lock:
            tally.refused += 1
        time.sleep(1)
    raise RuntimeError(f"{path} never accepted {body} (log: {stack.api.log_path})")


def submit_jobs(stack, users, jobs, interval, tally, deadline, stop):
    """Requests spread over the run, so that every outage meets work."""
    for number in range(jobs):
        if stop.is_set():
            return
        user = users[number % len(users)]
        count = random.randint(50, 400)
        is_async = number % 4 != 3  # one request in four is synchronous
        body = {"userId": user, "followersLogin": f"chaos{number}", "count": count, "async": int(is_async)}
        response = _post_until_accepted(stack, "/api/v1/add-followers", body, tally, deadline)
        with tally.lock:
            if is_async:
                tally.accepted[response.json()["jobId"]] = (user, count)
            else:
                tally.sync_created += response.json()["created"]
                tally.accepted[f"sync{number}"] = (user, count)
        stop.wait(interval)


def kill_workers(stack, interval, tally, stop):
    while not stop.wait(interval):
        children = stack.workers.children() if stack.workers else []
        if children:
            os.kill(random.choice(children), signal.SIGKILL)
            with tally.lock:
                tally.kills += 1


# --- The run ---------------------------------------------------------------


def run_chaos(*, duration=60, jobs=40, users=4, kill_interval=4.0, stack_name="chaos", outages=True):
    """Returns (report lines, passed)."""
    stack = Stack(
        stack_name,
        env=CHAOS_ENV,
        processes=2,
        threads=4,
        supervise=True,
        stop_timeout=3,
        api_token=secrets.token_urlsafe(16),
        workers_module="lab.workers",  # the production actors, with the lab's fault middleware
    )
    tally = Tally()
    started = time.time()
    try:
        stack.reset(fresh=False)
        stack.start()
        user_ids = []
        for number in range(users):
            response = stack.post("/api/v1/users", json={"login": f"chaos_user{number}", "password": "pw",
                                                         "age": 30})
            user_ids.append(response.json()["id"])
        stop = threading.Event()
        deadline = started + duration + 120
        threads = [
            threading.Thread(
                target=submit_jobs,
                args=(stack, user_ids, jobs, 0.85 * duration / jobs, tally, deadline, stop),
                daemon=True,
            ),
            threading.Thread(target=kill_workers, args=(stack, kill_interval, tally, stop), daemon=True),
        ]
        for thread in threads:
            thread.start()
        if outages:
            observer = Observer(stack)
            try:
                _timed(started + duration / 3, "RabbitMQ restart", restart_rabbitmq, tally, observer)
                _timed(started + 2 * duration / 3, "PostgreSQL restart", restart_postgres, tally, observer)
            finally:
                observer.close()
        threads[0].join(max(1, deadline - time.time()))
        _sleep_until(started + duration)
        stop.set()
        threads[1].join(5)
        log("chaos over; waiting for every accepted job to finish")
        observer = Observer(stack)
        try:
            drain = _wait_finished(stack, observer, tally, timeout=180)
            return _report(stack, observer, tally, drain, time.time() - started)
        finally:
            observer.close()
    finally:
        stack.stop()


def _sleep_until(moment):
    time.sleep(max(0, moment - time.time()))


def _timed(moment, name, action, tally, observer):
    _sleep_until(moment)
    busy = sum(1 for _, _, total, done, failed in observer.jobs() if done + failed < total)
    log(f"{time.strftime('%H:%M:%S')} {name}, {busy} jobs unfinished...")
    outcome = action()
    log(f"{time.strftime('%H:%M:%S')} {name}: {outcome}")
    tally.outages.append((name, f"{outcome} ({busy} jobs unfinished when it began)"))


def _wait_finished(stack, observer, tally, timeout):
    started = time.time()
    job_ids = [job_id for job_id in tally.accepted if isinstance(job_id, int)]

    def finished():
        rows = {job_id: (total, done, failed) for job_id, _, total, done, failed in observer.jobs()}
        waiting = [j for j in job_ids if sum(rows[j][1:]) < rows[j][0]]
        return not waiting

    def progress(waited):
        rows = {job_id: (total, done, failed) for job_id, _, total, done, failed in observer.jobs()}
        left = sum(1 for j in job_ids if sum(rows[j][1:]) < rows[j][0])
        log(f"    {waited:4.0f} s  jobs still running {left}/{len(job_ids)}  worker restarts {stack.worker_restarts}")

    try:
        wait_for(finished, timeout=timeout, what="every accepted job to finish", interval=0.5, progress=progress)
    except TimeoutError:
        return None
    return time.time() - started


def _report(stack, observer, tally, drain, elapsed):
    rows = {job_id: (total, done, failed) for job_id, _, total, done, failed in observer.jobs()}
    job_ids = [job_id for job_id in tally.accepted if isinstance(job_id, int)]
    done = sum(1 for j in job_ids if rows[j][1] == rows[j][0])
    failed = sum(1 for j in job_ids if rows[j][2])
    expected = sum(count for _, count in tally.accepted.values())
    created = observer.followers_created({user for user, _ in tally.accepted.values()})
    lost = sum(rows[j][0] - rows[j][1] - rows[j][2] for j in job_ids)
    orphans = observer.followers_without_subscription()
    dead = observer.dead_lettered()
    passed = (drain is not None and done == len(job_ids) and created == expected and lost == 0
              and dead == 0 and orphans == 0)
    lines = [
        f"jobs done/failed        {done}/{failed} of {len(job_ids)} async jobs accepted "
        f"(+{len(tally.accepted) - len(job_ids)} sync requests; {tally.refused} requests refused during outages)",
        f"followers exp./created  {expected}/{created}",
        f"duplicates              {max(0, created - expected)}",
        f"lost units              {lost}",
        f"dead-lettered           {dead}",
        f"orphan followers        {orphans} (users of a request without their subscription)",
        f"worker kills (SIGKILL)  {tally.kills}; dramatiq restarts {stack.worker_restarts}",
        *(f"{name:<23} {outcome}" for name, outcome in tally.outages),
        f"time to drain           {'never' if drain is None else f'{drain:.1f} s'} (whole run {elapsed:.0f} s)",
        f"verdict                 {'PASSED' if passed else 'FAILED'}",
    ]
    return lines, passed
