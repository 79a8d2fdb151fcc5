"""python -m lab cluster: a RabbitMQ node lost under load, classic queues
against quorum queues.

Starts a three-node RabbitMQ cluster of the lab's own (lab/rabbit_nodes.py),
then one stack per queue type (API and supervised workers, all given the
three URLs), their queues declared through the first node (which so leads
the quorum queue and hosts the classic one). Both stacks take continuous
async load while the lab stops the node leading the work queue, brings it
back, SIGKILLs the Erlang VM of the node that leads it next, and brings
that back. Then it waits for the accepted jobs to finish and judges from
what a user would check: the jobs and followers in PostgreSQL, the
dead-letter queue, the answers to the requests.

The same outages hit both stacks at the same moments, side by side.
Everything started is stopped at the end, the lab nodes included; the
machine's own RabbitMQ is never touched.
"""

import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import psycopg2
import requests

from db.database import connect_params
from harness import ROOT, Stack, queue_depth

from .rabbit_nodes import LabCluster

CLUSTER_ENV = {
    "FOLLOWERS_PER_MESSAGE": "5",
    "FAULT_UNIT_DELAY_MS": "30",  # units take a while: every outage meets some in flight
    "PASSWORD_HASH_COST": "1024",
    "MAX_RETRIES": "20",
    "MIN_BACKOFF_MS": "200",
    "MAX_BACKOFF_MS": "2000",
    "BROKER_TIMEOUT_S": "3",
}
FOLLOWERS_PER_REQUEST = 20  # 4 units


@dataclass
class Timing:
    """Seconds of each phase. ``short()`` is the test's."""

    warmup: float = 6
    down: float = 6  # a node stays down this long before it is started again
    between: float = 4
    tail: float = 5
    request_interval: float = 0.25
    settle: float = 12  # no progress for this long after the load: what is left is stuck
    drain_limit: float = 60

    @classmethod
    def short(cls):
        return cls(warmup=4, down=3, between=2, tail=3, request_interval=0.3, settle=12, drain_limit=40)


@dataclass
class Side:
    """One queue type under load: its stack and what its client saw."""

    queue_type: str
    stack: Stack
    users: list = field(default_factory=list)
    accepted: dict = field(default_factory=dict)  # job id -> followers requested
    refused: int = 0
    refusals: list = field(default_factory=list)  # the first few, to show
    done_units: int = 0
    total_units: int = 0
    failed_units: int = 0
    last_progress: float = field(default_factory=time.monotonic)
    longest_stall: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def log(text):
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


# --- The load, and watching it -----------------------------------------------


def send_load(side, stop, interval):
    number = 0
    while not stop.is_set():
        user = side.users[number % len(side.users)]
        body = {"userId": user, "followersLogin": f"{side.queue_type[:2]}{number}", "count": FOLLOWERS_PER_REQUEST,
                "async": 1}
        try:
            response = side.stack.post("/api/v1/add-followers", data=body, timeout=30)
            status, text = response.status_code, response.text[:200]
        except requests.RequestException as error:
            status, text = None, repr(error)
        with side.lock:
            if status == 202:
                side.accepted[response.json()["jobId"]] = FOLLOWERS_PER_REQUEST
            else:
                side.refused += 1
                if len(side.refusals) < 3:
                    side.refusals.append(f"{status}: {text}")
        number += 1
        stop.wait(interval)


class Progress:
    """Samples each side's units in PostgreSQL, and the longest time work
    waited with no unit finishing."""

    def __init__(self, sides):
        self.sides = sides
        self.sampled_at = float("-inf")  # when the last sample began
        self.conns = {side.queue_type: self._connect(side) for side in sides}

    @staticmethod
    def _connect(side):
        conn = psycopg2.connect(**connect_params(side.stack.database_url))
        conn.autocommit = True
        return conn

    def sample(self):
        now = time.monotonic()
        self.sampled_at = now
        for side in self.sides:
            with side.lock:
                job_ids = list(side.accepted)
            with self.conns[side.queue_type].cursor() as cursor:
                cursor.execute("SELECT coalesce(sum(units), 0) FROM jobs WHERE id = ANY(%s)", (job_ids,))
                total = cursor.fetchone()[0]
                cursor.execute(
                    "SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'failed') "
                    "FROM job_units WHERE job_id = ANY(%s)",
                    (job_ids,),
                )
                done, failed = cursor.fetchone()
            if done > side.done_units or done + failed >= total:
                side.last_progress = now
            side.longest_stall = max(side.longest_stall, now - side.last_progress)
            side.done_units, side.failed_units, side.total_units = done, failed, total

    def watch(self, stop, interval=0.25):
        while not stop.wait(interval):
            self.sample()

    def followers(self, side):
        with self.conns[side.queue_type].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM subscriptions WHERE author_id = ANY(%s)", (side.users,))
            return cursor.fetchone()[0]

    def close(self):
        for conn in self.conns.values():
            conn.close()


# --- The run -------------------------------------------------------------------


def run_cluster(*, queue_types=("classic", "quorum"), timing=None):
    """Returns (report lines, passed, what each side saw, verdicts)."""
    timing = timing or Timing()
    started = time.monotonic()
    cluster = LabCluster(log=log)
    sides = []
    progress = None
    try:
        cluster.start()
        for queue_type in queue_types:
            sides.append(_start_side(cluster, queue_type))
        progress = Progress(sides)
        stop_load, stop_watch = threading.Event(), threading.Event()
        threads = [threading.Thread(target=send_load, args=(side, stop_load, timing.request_interval), daemon=True)
                   for side in sides]
        threads.append(threading.Thread(target=progress.watch, args=(stop_watch,), daemon=True))
        for thread in threads:
            thread.start()
        log(f"load: an async request of {FOLLOWERS_PER_REQUEST} followers every {timing.request_interval:g} s "
            f"to each of {', '.join(side.queue_type for side in sides)}")
        outages = _outages(cluster, sides, timing)
        stop_load.set()
        for thread in threads[:-1]:
            thread.join(35)
        log("load stopped; waiting for the accepted jobs to finish")
        _drain(sides, progress, timing)
        stop_watch.set()
        threads[-1].join(5)
        progress.sample()
        lines, passed, seen, verdicts = _report(sides, progress, outages, time.monotonic() - started)
        for side in sides:
            if seen[side.queue_type]["lost"]:
                lines += _where_left(cluster, side, progress)
        return lines, passed, seen, verdicts
    finally:
        if progress is not None:
            progress.close()
        for side in sides:
            side.stack.stop()
        cluster.destroy()
        log(f"stopped every process of the run and the lab nodes ({cluster.dir} keeps their logs)")


def _start_side(cluster, queue_type):
    stack = Stack(
        f"cluster_{queue_type}",
        env={**CLUSTER_ENV, "RABBITMQ_URL": cluster.urls, "QUEUE_TYPE": queue_type},
        processes=2, threads=2, api_workers=1, supervise=True, stop_timeout=3,
        api_token=secrets.token_urlsafe(16),
        workers_module="lab.workers",  # the production actors, with the lab's fault middleware (the unit delay)
    )
    stack.reset(fresh=False)
    # Declared through the first node: it leads the quorum queue, hosts the classic one.
    subprocess.run(
        [sys.executable, "-m", "actors.topology", "declare"], cwd=ROOT, check=True, capture_output=True,
        env={**stack.env, "RABBITMQ_URL": cluster.nodes[0].url}, timeout=60,
    )
    stack.start()
    side = Side(queue_type, stack)
    for number in range(2):
        response = stack.post("/api/v1/users", json={"login": f"cluster_user{number}", "password": "pw", "age": 30})
        side.users.append(response.json()["id"])
    log(f"{queue_type}: API {stack.url} and 2 supervised worker processes on the three nodes")
    return side


def _leader(cluster, sides):
    """The node leading the work queue: the quorum one's if there is one."""
    side = next((side for side in sides if side.queue_type == "quorum"), sides[0])
    return cluster.queue_home(side.stack.queue_name)


def _outages(cluster, sides, timing):
    """Stop the leader, bring it back, SIGKILL the next leader, bring it
    back; returns (what, node, seconds down) of each."""
    outages = []
    time.sleep(timing.warmup)
    first = _leader(cluster, sides) or cluster.nodes[0]
    outages.append(_outage(cluster, first, "stopped", first.stop, timing))
    time.sleep(timing.between)
    second = _leader(cluster, sides)
    if second is None or second is first:
        second = next(node for node in cluster.nodes if node is not first)
    outages.append(_outage(cluster, second, "SIGKILLed", second.kill, timing))
    time.sleep(timing.tail)
    return outages


def _outage(cluster, node, what, action, timing):
    went = time.monotonic()
    log(f"{node.name} (leads the work queue): {what}")
    action()
    time.sleep(timing.down)
    log(f"{node.name}: starting again")
    node.start()
    node.wait_up()
    down = time.monotonic() - went
    log(f"{node.name}: back after {down:.1f} s")
    return what, node.name, down


def _drain(sides, progress, timing):
    """Until every side's accepted jobs finished, or made no progress for
    ``timing.settle`` seconds (what is left then is stuck or lost). Judged
    on samples taken after the load stopped: an older one may not count the
    last jobs accepted yet."""
    stopped = time.monotonic()
    deadline = stopped + timing.drain_limit
    last_report = 0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if progress.sampled_at <= stopped:
            time.sleep(0.1)
            continue
        waiting = [s for s in sides if s.done_units + s.failed_units < s.total_units
                   and now - s.last_progress < timing.settle]
        if not waiting:
            return
        if now - last_report >= 2:
            last_report = now
            log("    " + "  ".join(f"{s.queue_type}: {s.done_units + s.failed_units}/{s.total_units} units"
                                   for s in sides))
        time.sleep(0.5)


# --- The verdict -----------------------------------------------------------------


def _judge(side, seen):
    if side.queue_type == "classic":
        reproduced = seen["lost"] > 0 or seen["refused"] > 0 or seen["stall"] >= seen["first_down"] / 2
        return "REPRODUCED" if reproduced else "FAILED"
    solved = (seen["lost"] == 0 and seen["duplicated"] == 0 and seen["refused"] == 0 and seen["dead"] == 0
              and seen["done"] == seen["accepted"] > 0)
    return "SOLVED" if solved else "FAILED"


def _observe(side, progress, first_down):
    expected = sum(side.accepted.values())
    created = progress.followers(side)
    with progress.conns[side.queue_type].cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FROM jobs j WHERE j.id = ANY(%s)
              AND j.units = (SELECT count(*) FROM job_units u WHERE u.job_id = j.id AND u.status = 'done')
            """,
            (list(side.accepted),),
        )
        done = cursor.fetchone()[0]
    logs = "".join(path.read_text(errors="replace") for path in (side.stack.log_dir / "api.log",
                                                                  side.stack.log_dir / "workers.log") if path.exists())
    return {
        "resent": logs.count("messages of the batch (nack)") + logs.count("RabbitMQ did not confirm"),
        "accepted": len(side.accepted),
        "done": done,
        "lost": side.total_units - side.done_units - side.failed_units,
        "duplicated": max(0, created - expected),
        "dead": side.failed_units + queue_depth(f"{side.stack.queue_name}.XQ", url=side.stack.rabbitmq_url),
        "refused": side.refused,
        "stall": side.longest_stall,
        "first_down": first_down,
    }


def _where_left(cluster, side, progress):
    """Where the units that did not finish are: for a run that left some,
    so that its log says what to look at."""
    with progress.conns[side.queue_type].cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*), count(*) FILTER (WHERE NOT j.enqueued),
                   coalesce(sum(j.units - (SELECT count(*) FROM job_units u WHERE u.job_id = j.id)), 0)
            FROM jobs j WHERE j.id = ANY(%s)
              AND j.units > (SELECT count(*) FROM job_units u WHERE u.job_id = j.id AND u.status = 'done')
            """,
            (list(side.accepted),),
        )
        jobs, unsplit, units = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM outbox")
        outbox = cursor.fetchone()[0]
        cursor.execute("SELECT count(*), coalesce(max(starts), 0) FROM delivery_attempts")
        redelivered, most = cursor.fetchone()
        # A relay holds the rows it claimed until RabbitMQ takes them: a
        # transaction open for long is a relay waiting on the broker.
        cursor.execute(
            "SELECT count(*), coalesce(max(extract(epoch FROM now() - xact_start)), 0) FROM pg_stat_activity "
            "WHERE datname = current_database() AND state = 'idle in transaction'"
        )
        waiting, longest = cursor.fetchone()
    lines = [f"{side.queue_type}: {jobs} jobs unfinished ({unsplit} not yet split), {units} units not done; "
             f"{outbox} messages still in the outbox; {redelivered} messages redelivered (most starts: {most}); "
             f"{waiting} transactions idle in transaction (the oldest {longest:.0f} s)"]
    for row in cluster.queue_rows(side.stack.queue_name):
        lines.append(f"{side.queue_type}:   {row['name']} ({row['type']}, leader {row.get('leader') or '-'}): "
                     f"{row['messages_ready']} ready, {row['messages_unacknowledged']} unacked, "
                     f"{row['consumers']} consumers")
    return lines


def _report(sides, progress, outages, elapsed):
    first_down = outages[0][2]
    seen = {side.queue_type: _observe(side, progress, first_down) for side in sides}
    verdicts = {side.queue_type: _judge(side, seen[side.queue_type]) for side in sides}
    rows = [
        ("jobs accepted (202)", "accepted", "{}"),
        ("jobs done", "done", "{}"),
        ("units lost or stuck", "lost", "{}"),
        ("followers duplicated", "duplicated", "{}"),
        ("dead-lettered", "dead", "{}"),
        ("requests refused", "refused", "{}"),
        ("batches RabbitMQ refused, resent", "resent", "{}"),
        ("longest without progress", "stall", "{:.1f} s"),
    ]
    width = max(len(label) for label, _, _ in rows) + 2
    lines = ["", "queue type".ljust(width) + "".join(f"{side.queue_type:>14}" for side in sides)]
    for label, key, fmt in rows:
        lines.append(label.ljust(width) + "".join(f"{fmt.format(seen[s.queue_type][key]):>14}" for s in sides))
    lines.append("verdict".ljust(width) + "".join(f"{verdicts[s.queue_type]:>14}" for s in sides))
    lines.append("")
    lines += [f"{what:<10} {node}, down {down:.1f} s" for what, node, down in outages]
    for side in sides:
        for refusal in side.refusals:
            lines.append(f"{side.queue_type} refused: {refusal}")
    lines.append(f"whole run {elapsed:.0f} s; expected: classic REPRODUCED (stuck or lost while its node is down), "
                 "quorum SOLVED (nothing lost or doubled, intake never refused)")
    passed = all(verdicts[s.queue_type] in ("REPRODUCED", "SOLVED") for s in sides)
    return lines, passed, seen, verdicts
