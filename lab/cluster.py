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

``lab compare --cluster`` runs the same scenario with other columns: the
peers (lab/peers/cluster.py) beside our quorum stack (lab/cluster_sides.py
says what a side is).
"""

import sys
import threading
import time
from dataclasses import dataclass

import psycopg2

from db.database import connect_params
from harness import queue_depth

from .cluster_sides import FOLLOWERS_PER_REQUEST, OurSide
from .rabbit_nodes import LabCluster


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


def log(text):
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


# --- The load, and watching it -----------------------------------------------


def send_load(side, stop, interval):
    number = 0
    while not stop.is_set():
        side.send(number)
        number += 1
        stop.wait(interval)


class Progress:
    """Samples each side's units in PostgreSQL, and the longest time work
    waited with no unit finishing."""

    def __init__(self, sides):
        self.sides = sides
        self.sampled_at = float("-inf")  # when the last sample began
        self.conns = {side.name: self._connect(side) for side in sides}

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
                accepted = list(side.accepted)
            with self.conns[side.name].cursor() as cursor:
                done, failed, total = side.progress(cursor, accepted)
            if done > side.done_units or done + failed >= total:
                side.last_progress = now
            side.longest_stall = max(side.longest_stall, now - side.last_progress)
            side.done_units, side.failed_units, side.total_units = done, failed, total

    def watch(self, stop, interval=0.25):
        while not stop.wait(interval):
            self.sample()

    def cursor(self, side):
        return self.conns[side.name].cursor()

    def close(self):
        for conn in self.conns.values():
            conn.close()


# --- The run -------------------------------------------------------------------


def our_sides(queue_types):
    """Starters of our stacks, one a queue type: classic is expected to
    reproduce the loss, quorum to solve it."""
    return [lambda cluster, queue_type=queue_type: OurSide.start(
        cluster, queue_type, expect="REPRODUCED" if queue_type == "classic" else "SOLVED")
        for queue_type in queue_types]


def run_cluster(*, queue_types=("classic", "quorum"), timing=None, sides=None, header="queue type"):
    """Returns (report lines, passed, what each side saw, verdicts).
    ``sides`` (starters, each taking the cluster and returning a started
    Side) replaces our stacks on ``queue_types``: lab compare's columns."""
    timing = timing or Timing()
    starters = sides or our_sides(queue_types)
    started = time.monotonic()
    cluster = LabCluster(log=log)
    sides = []
    progress = None
    try:
        cluster.start()
        for start in starters:
            sides.append(start(cluster))
            log(f"{sides[-1].name}: started on the three nodes (logs: {sides[-1].stack.log_dir})")
        progress = Progress(sides)
        stop_load, stop_watch = threading.Event(), threading.Event()
        threads = [threading.Thread(target=send_load, args=(side, stop_load, timing.request_interval), daemon=True)
                   for side in sides]
        threads.append(threading.Thread(target=progress.watch, args=(stop_watch,), daemon=True))
        for thread in threads:
            thread.start()
        log(f"load: an async request of {FOLLOWERS_PER_REQUEST} followers every {timing.request_interval:g} s "
            f"to each of {', '.join(side.name for side in sides)}")
        outages = _outages(cluster, sides, timing)
        stop_load.set()
        for thread in threads[:-1]:
            thread.join(35)
        log("load stopped; waiting for the accepted work to finish")
        _drain(sides, progress, timing)
        stop_watch.set()
        threads[-1].join(5)
        progress.sample()
        lines, passed, seen, verdicts = _report(sides, progress, outages, time.monotonic() - started, header)
        for side in sides:
            if seen[side.name]["lost"]:
                lines += _where_left(cluster, side, progress)
        return lines, passed, seen, verdicts
    finally:
        if progress is not None:
            progress.close()
        for side in sides:
            side.stop()
        cluster.destroy()
        log(f"stopped every process of the run and the lab nodes ({cluster.logs_dir} keeps their logs)")


def _leader(cluster, sides):
    """The node leading the work queue: our quorum stack's if there is one,
    else the first quorum side's, else where the first side's queue is."""
    quorum = [side for side in sides if side.stack.env.get("QUEUE_TYPE") != "classic"]
    side = next((side for side in quorum if isinstance(side, OurSide)), quorum[0] if quorum else sides[0])
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
            log("    " + "  ".join(f"{s.name}: {s.done_units + s.failed_units}/{s.total_units} units"
                                   for s in sides))
        time.sleep(0.5)


# --- The verdict -----------------------------------------------------------------


def _judge(side, seen):
    if side.expect == "REPRODUCED":
        reproduced = seen["lost"] > 0 or seen["refused"] > 0 or seen["stall"] >= seen["first_down"] / 2
        return "REPRODUCED" if reproduced else "FAILED"
    solved = (seen["lost"] == 0 and seen["duplicated"] == 0 and seen["refused"] == 0 and seen["dead"] == 0
              and seen["done"] == seen["accepted"] > 0)
    return "SOLVED" if solved else "FAILED"


def _observe(side, progress, first_down):
    expected = sum(side.accepted.values())
    with progress.cursor(side) as cursor:
        created = side.created(cursor)
        duplicated = side.duplicated(cursor, created, expected)
        done = side.requests_done(cursor)
    return {
        "resent": side.resent(),
        "accepted": len(side.accepted),
        "done": done,
        "lost": side.total_units - side.done_units - side.failed_units,
        "duplicated": duplicated,
        "dead": side.failed_units + queue_depth(f"{side.stack.queue_name}.XQ", url=side.stack.rabbitmq_url),
        "refused": side.refused,
        "stall": side.longest_stall,
        "first_down": first_down,
    }


def _where_left(cluster, side, progress):
    with progress.cursor(side) as cursor:
        lines = [f"{side.name}: {side.where_left(cursor)}"]
    for row in cluster.queue_rows(side.stack.queue_name):
        lines.append(f"{side.name}:   {row['name']} ({row['type']}, leader {row.get('leader') or '-'}): "
                     f"{row['messages_ready']} ready, {row['messages_unacknowledged']} unacked, "
                     f"{row['consumers']} consumers")
    return lines


def _report(sides, progress, outages, elapsed, header):
    first_down = outages[0][2]
    seen = {side.name: _observe(side, progress, first_down) for side in sides}
    verdicts = {side.name: _judge(side, seen[side.name]) for side in sides}
    rows = [
        ("requests accepted", "accepted", "{}"),
        ("requests done", "done", "{}"),
        ("units lost or stuck", "lost", "{}"),
        ("followers duplicated", "duplicated", "{}"),
        ("dead-lettered", "dead", "{}"),
        ("requests refused", "refused", "{}"),
        ("batches RabbitMQ refused, resent", "resent", "{}"),
        ("longest without progress", "stall", "{:.1f} s"),
    ]
    width = max(len(label) for label, _, _ in rows) + 2
    column = max(14, *(len(side.name) + 2 for side in sides))
    lines = ["", header.ljust(width) + "".join(f"{side.name:>{column}}" for side in sides)]
    for label, key, fmt in rows:
        lines.append(label.ljust(width) + "".join(f"{fmt.format(seen[s.name][key]):>{column}}" for s in sides))
    lines.append("verdict".ljust(width) + "".join(f"{verdicts[s.name]:>{column}}" for s in sides))
    lines.append("")
    lines += [f"{what:<10} {node}, down {down:.1f} s" for what, node, down in outages]
    for side in sides:
        for refusal in side.refusals:
            lines.append(f"{side.name} refused: {refusal}")
    lines.append(f"whole run {elapsed:.0f} s; wanted: "
                 + ", ".join(f"{side.name} {side.expect}" for side in sides)
                 + " (REPRODUCED: stuck or lost while its node is down; SOLVED: nothing lost or doubled, "
                 "intake never refused)")
    passed = all(verdicts[s.name] == s.expect for s in sides)
    return lines, passed, seen, verdicts
