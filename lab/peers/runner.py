"""Run a lab scenario against a peer, for real: reset the peer's database
and queues, start its workers (supervised, as ours are), feed the
scenario's requests to its intake, wait for the queue to drain or the
window to close (showing progress), observe, stop everything.

What the peer gets is what our robust workers get in that scenario: the
same settings (faults, limits, backoff scale), processes and threads, the
same supervisor, the same requests and the same disturbances.
"""

import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import psycopg2

from db.database import connect_params
from harness import BIN, ROOT, Process, Stack, consumer_count, wait_for
from lab.runner import Result, log
from lab.scenarios import COMMON_ENV

from .deliveries import create_table
from .observe import PeerObserver

#: As the lab's runner: "nothing queued, nothing running" must hold this long...
SETTLE_S = 2.0
#: ...or this long while some unit is neither done nor dead-lettered: a peer
#: may hold a message unacked and unstarted for a while (Celery keeps a
#: retry whose countdown is over until its pool has a process for it, seen
#: at 2.3 s while the pool replaced a dead one), and RabbitMQ's ready count
#: does not show it. Work truly lost is then called lost a few seconds later.
UNACCOUNTED_SETTLE_S = 6.0
INTAKE_TIMEOUT_S = 60


@dataclass(frozen=True)
class Peer:
    name: str  # as lab.peers.intake knows it
    label: str

    def argv(self, stack):
        if self.name == "dramatiq":
            return [str(BIN / "dramatiq"), "lab.peers.bare_dramatiq",
                    "--processes", str(stack.processes), "--threads", str(stack.threads)]
        # Celery's prefork pool runs one task per process, and only there can
        # its hard time limit kill a task: as many processes as our workers
        # have threads in all, so that both run as many units at once.
        return [str(BIN / "celery"), "-A", "lab.peers.celery_app", "worker", "--pool", "prefork",
                "--concurrency", str(stack.processes * stack.threads), "--queues", stack.queue_name,
                "--hostname", f"{stack.name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
                "--loglevel", "INFO"]

    def consumers(self, stack):
        """Consumers of the queue once every worker is up."""
        return stack.processes if self.name == "dramatiq" else 1


class PeerStack(Stack):
    """A Stack whose workers are a peer's, under the same supervisor."""

    def __init__(self, peer, name, **options):
        super().__init__(name, **options)
        self.peer = peer

    def start(self):
        """The lab's delivery table, then the peer's workers, consuming (a
        peer has no API: its intake is lab.peers.intake, started apart)."""
        connection = psycopg2.connect(**connect_params(self.database_url))
        try:
            with connection, connection.cursor() as cursor:
                create_table(cursor)
        finally:
            connection.close()
        self.start_workers()
        self.wait_workers_ready()
        return self

    def start_workers(self):
        self.workers = Process("workers", self.peer.argv(self), env=self.env,
                               log_path=self.log_dir / "workers.log").start()
        if self.supervise and self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise, daemon=True)
            self._supervisor.start()
        return self

    def wait_workers_ready(self, timeout=45):
        wanted = self.peer.consumers(self)
        return wait_for(lambda: consumer_count(self.queue_name, url=self.rabbitmq_url) >= wanted, timeout=timeout,
                        what=f"{self.peer.label} consuming {self.queue_name} (log: {self.log_dir}/workers.log)")


class Intake:
    """The peer's producer, in a process of its own (see lab.peers.intake)."""

    def __init__(self, peer, stack):
        self.log_path = stack.log_dir / "intake.log"
        with open(self.log_path, "ab") as log_file:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "lab.peers.intake", peer.name], cwd=ROOT, env=stack.env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, text=True,
            )

    def send(self, user, followers, count):
        self.popen.stdin.write(json.dumps({"user": user, "followers": followers, "count": count}) + "\n")
        self.popen.stdin.flush()
        ready, _, _ = select.select([self.popen.stdout], [], [], INTAKE_TIMEOUT_S)
        line = self.popen.stdout.readline() if ready else ""
        if not line:
            try:
                exited = self.popen.wait(5)  # its output closed: it is gone, or going
            except subprocess.TimeoutExpired:
                exited = None
            if exited == -signal.SIGKILL:
                return None  # killed mid-request (the intake row's fault): no answer, as a dropped connection
            raise RuntimeError(f"the peer's intake did not answer (log: {self.log_path})")
        return json.loads(line)

    def close(self):
        try:
            self.popen.stdin.close()
            self.popen.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.popen.kill()
            self.popen.wait(5)


def run_peer(peer, scenario, *, window, progress=True, stack_name=None):
    """Run ``scenario`` with the settings of its robust mode against ``peer``;
    returns a lab.runner.Result whose verdict the caller gives."""
    mode = scenario.modes["robust"]
    # Classic queues on one node, as every row was measured (a quorum queue
    # is what a cluster calls for: lab.peers.cluster gives Celery one there).
    env = {**COMMON_ENV, "QUEUE_TYPE": "classic", **scenario.env, **mode.env}
    stack = PeerStack(peer, stack_name or f"compare_{peer.name}", env=env,
                      processes=mode.processes, threads=mode.threads, supervise=True, stop_timeout=3)
    log(f"--- {scenario.name} ({scenario.original}), {peer.label}: {scenario.title}")
    try:
        stack.reset(fresh=False)
        stack.start()
        return _drive(peer, scenario, mode, stack, window, progress)
    finally:
        stack.stop()


def _drive(peer, scenario, mode, stack, window, progress):
    observer = PeerObserver(stack)
    intake = Intake(peer, stack)
    stop_killing = threading.Event()
    kills = []
    try:
        started = time.time()
        killing = bool(getattr(mode, "kill_every", 0))
        if killing:  # the same worker kills as our robust mode gets
            threading.Thread(target=_kill_workers, args=(stack, mode.kill_every, stop_killing, kills),
                             daemon=True).start()
        units, user_ids, requested, refused = [], set(), 0, 0
        requests = mode.requests or scenario.requests
        for index, (user, followers, count, _async) in enumerate(requests):
            action = getattr(scenario, "disturbances", {}).get(index)
            if action:
                log(f"    {time.time() - started:4.0f} s  {action.__doc__.strip()}")
                action()
            answer = intake.send(user, followers, count)
            requested += count
            if answer is None:  # the intake was killed: a new one, as a supervisor would start
                refused += 1
                intake.close()
                intake = Intake(peer, stack)
                continue
            user_ids.add(answer["userId"])
            units += [(answer["userId"], followers, first, n) for first, n in answer["units"]]
            refused += answer["refused"] is not None
            time.sleep(getattr(scenario, "pace", 0))
        for action in getattr(scenario, "finally_", []):
            action()
        drain_s = _wait_drained(observer, stack, units, window, started, progress,
                                stop_killing if killing else None)
        stop_killing.set()
        complete, dead = observer.complete_units(units), observer.dead_units()
        accounted = set(complete) | {tuple(unit) for unit in dead if unit}
        seen = {
            "requested": requested,
            "created": observer.followers_created(user_ids),
            "http_errors": refused,
            "units": len(units),
            "units_done": len(complete),
            "lost": sum(1 for unit in units if unit not in accounted) if drain_s is not None else 0,
            "dead": observer.dead_lettered(),
            "unique_violations": observer.unique_violations(),
            "inversions": observer.order_inversions(user_ids),
            "busy_processes": observer.worker_pids(),
            "crashes": observer.worker_crashes(),
            "kills": len(kills),
            "drain_s": drain_s,
            "window_s": window,
        }
        return Result(scenario.name, scenario.original, peer.label, "", "", "", seen, observer.events(),
                      list(stack.worker_exits), dict(stack.process_exits), started)
    finally:
        stop_killing.set()
        for action in getattr(scenario, "finally_", []):
            action()
        intake.close()
        observer.close()


def _kill_workers(stack, interval, stop, kills):
    """SIGKILL a random worker process every ``interval`` seconds."""
    while not stop.wait(interval):
        children = stack.workers.children() if stack.workers else []
        if children:
            try:
                os.kill(random.choice(children), signal.SIGKILL)
                kills.append(time.time())
            except ProcessLookupError:
                pass


def _all_accounted(observer, units):
    """Every unit done or in the dead-letter queue."""
    dead = {tuple(unit) for unit in observer.dead_units() if unit}
    return len(set(observer.complete_units(units)) | (dead & set(units))) == len(set(units))


def _wait_drained(observer, stack, units, window, started, progress, stop_killing):
    """Seconds until drained (the last delivery's end), or None if the window
    closed first. Worker kills (``stop_killing``, None without them) stop
    once every unit is accounted for, as in our own runner
    (lab.runner._wait_drained)."""
    last_report = 0
    while True:
        now = time.time()
        if stop_killing is not None and units and not stop_killing.is_set() and _all_accounted(observer, units):
            stop_killing.set()
        last_exit = max(stack.process_exits.values(), default=0)
        idle = observer.seconds_since_activity()
        # Before the first delivery starts, "nothing running" means nothing yet.
        if (idle is not None or not units) and now - last_exit >= SETTLE_S and observer.drained(SETTLE_S):
            quiet = min(now - last_exit, float(idle or 0))
            if quiet >= UNACCOUNTED_SETTLE_S or _all_accounted(observer, units):
                return round(now - float(idle or 0) - started, 1)
        if now - started > window:
            return None
        if progress and now - last_report >= 1:
            last_report = now
            log(f"    {now - started:4.0f} s  units done {len(observer.complete_units(units))}/{len(units)}"
                f"  queued {observer.ready()}  dead-lettered {observer.dead_lettered()}"
                f"  worker crashes {observer.worker_crashes()}")
        time.sleep(0.2)
