"""Run a scenario for real: reset its database and queues, start the API and
supervised workers with the scenario's settings, send the original's requests
over HTTP, wait (showing progress) for the queue to drain or the window to
close, observe, stop everything, and judge."""

import os
import random
import secrets
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass

import requests

from harness import Stack

from .observe import Observer
from .scenarios import COMMON_ENV, send_bad_messages

#: How long "nothing queued, nothing running" must hold to count as drained:
#: longer than the longest retry backoff (MAX_BACKOFF_MS) plus the second a
#: worker may take to move a delayed message back to the work queue.
SETTLE_S = 2.0


@dataclass
class Result:
    scenario: str
    original: str
    mode: str
    expected: str
    observed: str
    verdict: str
    seen: dict
    events: list  # rows of Observer.events()
    worker_exits: list  # (time, exit code) of each exit of the dramatiq main process
    process_exits: dict  # worker process pid -> time it was seen gone
    started: float  # time.time() of the first request


def log(text):
    print(text, file=sys.stderr, flush=True)


def run(scenario, mode_name, *, progress=True, stack_name="lab"):
    """Run one scenario in one mode on the stack ``stack_name`` (its database
    ``followers_<name>``, queue ``<name>_add_followers``)."""
    mode = scenario.modes[mode_name]
    missing = [tool for tool in scenario.needs_tools if not shutil.which(tool)]
    if missing:
        log(f"--- {scenario.name} ({scenario.original}), {mode_name}: SKIPPED, this machine has no {missing[0]}")
        seen = {"drain_s": None}
        return Result(scenario.name, scenario.original, mode_name, mode.expected,
                      f"not run: it needs {', '.join(missing)} (a local RabbitMQ)", "SKIPPED", seen, [], [], {},
                      time.time())
    env = {**COMMON_ENV, **scenario.env, **mode.env}
    stack = Stack(
        stack_name,
        env=env,
        processes=mode.processes,
        threads=mode.threads,
        supervise=True,
        stop_timeout=3,
        api_token=secrets.token_urlsafe(16),  # the lab drives the API as a client with a token would
        app=mode.app,
        workers_module=mode.workers,
    )
    log(f"--- {scenario.name} ({scenario.original}), {mode_name}: {scenario.title}")
    try:
        stack.reset(fresh=False)
        stack.start_api()
        if scenario.needs_workers:
            stack.start_workers()
            stack.wait_workers_ready()
        return _drive_and_judge(scenario, mode_name, mode, stack, progress)
    finally:
        stack.stop()


def _drive_and_judge(scenario, mode_name, mode, stack, progress):
    observer = Observer(stack)
    stop_killing = threading.Event()
    killer = None
    if mode.kill_every:
        killer = threading.Thread(target=_kill_workers, args=(stack, mode.kill_every, stop_killing), daemon=True)
    try:
        started = time.time()
        users, requested, http_errors = {}, 0, 0
        if killer:
            killer.start()
        for index, (user_login, followers_login, count, is_async) in enumerate(mode.requests or scenario.requests):
            if index in scenario.disturbances:
                action = scenario.disturbances[index]
                log(f"    {time.time() - started:4.0f} s  {action.__doc__.strip()}")
                action()
            if user_login not in users:
                response = stack.post("/api/v1/users", json={"login": user_login, "password": "pw", "age": 30})
                users[user_login] = response.json()["id"]
            try:
                response = stack.post(
                    "/api/v1/add-followers",
                    data={"userId": users[user_login], "followersLogin": followers_login, "count": count,
                          "async": is_async},
                )
                http_errors += response.status_code >= 400
            except requests.ConnectionError:  # the API process died under the request
                http_errors += 1
            requested += count
            time.sleep(scenario.pace)
        for action in scenario.finally_:
            action()
        send_bad_messages(scenario, stack.queue_name)
        drain_s = _wait_drained(observer, stack, mode.window, started, progress, stop_killing if killer else None)
        stop_killing.set()
        seen = _observe(observer, stack, users.values(), requested, http_errors, drain_s)
        seen["kills"] = stack.kills
        verdict, observed = scenario.judge(mode_name, seen)
        return Result(scenario.name, scenario.original, mode_name, mode.expected, observed, verdict, seen,
                      observer.events(), list(stack.worker_exits), dict(stack.process_exits), started)
    finally:
        stop_killing.set()
        for action in scenario.finally_:
            action()
        observer.close()


def _kill_workers(stack, interval, stop):
    """SIGKILL a random worker process every ``interval`` seconds."""
    while not stop.wait(interval):
        children = stack.workers.children() if stack.workers else []
        if children:
            try:
                os.kill(random.choice(children), signal.SIGKILL)
                stack.kills += 1
            except ProcessLookupError:
                pass


def _wait_drained(observer, stack, window, started, progress, stop_killing):
    """Seconds until drained, or None if the window closed first.

    Worker kills (``stop_killing``, None without them) stop once every job
    has finished: a kill after the work tests nothing, and kills every
    ``kill_every`` (1.5 s) never leave the SETTLE_S quiet that drained
    needs (a suite run waited 30 s for a gap)."""
    last_report = 0
    while True:
        now = time.time()
        if stop_killing is not None and not stop_killing.is_set() and observer.all_jobs_finished():
            stop_killing.set()
        # A worker that just died has messages on their way back to the
        # queue, and a restart under way: not drained yet.
        last_exit = max(stack.process_exits.values(), default=0)
        if now - last_exit >= SETTLE_S and observer.drained(SETTLE_S):
            idle = observer.seconds_since_activity()
            return round(now - float(idle or 0) - started, 1)
        if now - started > window:
            return None
        if progress and now - last_report >= 1:
            last_report = now
            log(
                f"    {now - started:4.0f} s  jobs finished {observer.finished_jobs()}/{len(observer.jobs())}"
                f"  queued {observer.ready()}  units in flight {observer.units_in_flight()}"
                f"  dead-lettered {observer.dead_lettered()}"
                f"  worker restarts {stack.worker_restarts}"
            )
        time.sleep(0.2)


def _observe(observer, stack, user_ids, requested, http_errors, drain_s):
    jobs = observer.jobs()
    events = observer.events()
    return {
        "requested": requested,
        "created": observer.followers_created(user_ids),
        "http_errors": http_errors,
        "jobs": len(jobs),
        "jobs_units": sum(total for _, _, total, _, _ in jobs),
        "jobs_done": sum(1 for _, _, total, done, _ in jobs if done == total),
        "jobs_stuck": sum(1 for _, _, total, done, failed in jobs if done + failed < total),
        "jobs_requested": observer.jobs_requested(),
        "unexplained_runs": observer.unexplained_runs(),
        "failed_runs": observer.failed_runs(),
        "lost": observer.units_unaccounted() if drain_s is not None else 0,
        "dead": observer.dead_lettered(),
        "unique_violations": observer.unique_violations(),
        "inversions": observer.order_inversions(user_ids),
        "busy_processes": observer.worker_pids(),
        "crashes": observer.worker_crashes(),
        "drain_s": drain_s,
        "slot_freed_s": _slot_freed(events, stack.process_exits),
    }


def _slot_freed(events, process_exits):
    """Longest time from the start of a delivery that its worker process did
    not survive to that process's end (the killer's slot coming free)."""
    waits = [
        process_exits[pid] - float(started)
        for _, _, _, _, pid, _, _, started, ended, outcome, _ in events
        if outcome == "running" and ended is None and pid in process_exits
    ]
    return max(waits) if waits else None


def table(results):
    """The verdict table, as text."""
    header = ("scenario", "mode", "expected", "observed", "drain", "verdict")
    rows = [
        (
            f"{r.scenario} {r.original}",
            r.mode,
            r.expected,
            r.observed,
            "never" if r.seen["drain_s"] is None else f"{r.seen['drain_s']} s",
            r.verdict,
        )
        for r in results
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
