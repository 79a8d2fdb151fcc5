"""python -m lab compare: the lab's scenarios against three implementations
of the original's consumer, judged alike.

A row is a scenario (lab.scenarios), a column an implementation: bare
Dramatiq and Celery (lab.peers) and our robust workers (lab.runner's robust
mode). Every cell runs for real on its own database and queues, with the
settings, processes, threads, requests and faults of the scenario's robust
mode, and is judged by its row's judge from the same facts: created of
requested, duplicate runs, units lost, dead letters, worker crashes, the
drain, requests refused. One verdict a cell: SOLVED or FAILED.

``intake`` (§3: our API SIGKILLed between its commit and its publish) is
measured where each intake can be killed: a peer's has no commit before
its publishes, so its process is SIGKILLed between two of them (as often
as ours, ``FAULT_API_KILL_PERCENT``), and a new one takes the next
request. The row asks that no request be left half done.

``--cluster`` adds `lab cluster`'s scenario (lab/cluster.py): one lab
cluster, every column on it side by side (lab/peers/cluster.py says each
peer's queues), the same node stopped and SIGKILLed under the same load,
each judged as the quorum side is: every request taken is done whole,
nothing doubled, dead-lettered or refused.

Adding a row: add a ``Row(name, judge)`` to ROWS, where ``name`` is a lab
scenario and ``judge`` takes the cell's Facts and returns (solved, text).
The peers' runner already honours a scenario's ``disturbances``, ``pace``,
``finally_`` and its robust mode's ``kill_every`` (read with getattr, so
this module works with or without them).
"""

import dataclasses
from dataclasses import dataclass
from importlib.metadata import version

import pika
import psycopg2

import settings
from db.database import connect_params
from harness import database_url, queue_depth, wait_for

from .cluster import Timing, our_sides, run_cluster
from .peers.cluster import peer_sides, side_name
from .peers.runner import Peer, run_peer
from .runner import log, run
from .scenarios import BY_NAME, HARD_LIMIT_S

#: The longest a cell waits for its queue to drain (a row's own robust
#: window when shorter): a peer that never drains costs this much.
DEFAULT_WINDOW_S = 30


@dataclass(frozen=True)
class Implementation:
    key: str
    label: str


IMPLEMENTATIONS = [
    Implementation("dramatiq", f"bare Dramatiq {version('dramatiq')}"),
    Implementation("celery", f"Celery {version('celery')}"),
    Implementation("ours", "ours (robust)"),
]
BY_KEY = {implementation.key: implementation for implementation in IMPLEMENTATIONS}


@dataclass
class Facts:
    """What one cell observed, the same for every implementation."""

    requested: int
    created: int
    duplicates: int  # deliveries that ran committed work again (the unique login refused them)
    lost: int  # units neither done nor dead-lettered once nothing ran
    dead: int  # messages in the dead-letter queue
    crashes: int  # worker processes that died under a delivery
    refused: int  # requests the intake refused
    drain_s: float | None  # None: never drained within the window
    window_s: float
    inversions: int
    busy_processes: int
    others_done: int  # requests without a fault that were fully created...
    others: int  # ...of this many
    partial: int  # requests with some of their followers and not all, once nothing ran
    longest_hold_s: float | None  # the longest one delivery held a worker slot; None: still holding

    def summary(self):
        drain = f"drained in {self.drain_s} s" if self.drain_s is not None else f"never drained ({self.window_s:g} s)"
        return (f"{self.created} of {self.requested} created; {self.duplicates} duplicate runs; "
                f"{self.lost} lost; {self.dead} dead-lettered; {self.crashes} worker crashes; {drain}; "
                f"{self.refused} requests refused")


# --- The judges: one a row, the same for every column ------------------------

def _done(f):
    return f.drain_s is not None and f.lost == 0 and f.refused == 0


def judge_redelivery(f):
    solved = (_done(f) and f.created == f.requested and f.duplicates == 0 and f.dead == 0
              and f.crashes > 0)  # without a crash the fault did not fire: nothing was shown
    return solved, "exactly the requested followers, no unit run twice, nothing dead-lettered"


def judge_swallow(f):
    return _done(f) and f.created == f.requested and f.dead == 0, "every unit created after its failures"


def judge_killer(f):
    limit = HARD_LIMIT_S + 5
    solved = (_done(f) and f.others_done == f.others and f.dead == 1 and f.longest_hold_s is not None
              and f.longest_hold_s <= limit)
    held = "never freed" if f.longest_hold_s is None else f"{f.longest_hold_s:.1f} s"
    return solved, (f"others {f.others_done}/{f.others} done; killer dead-lettered; "
                    f"longest slot hold {held} (<= {limit} s)")


def judge_prefetch(f):
    solved = _done(f) and f.inversions == 0 and f.busy_processes >= 2 and f.created == f.requested
    return solved, f"{f.inversions} order inversions (0 wanted); {f.busy_processes} processes busy (2+ wanted)"


def judge_poison(f):
    solved = _done(f) and f.dead == 1 and f.created == f.requested - 1
    return solved, "the poison dead-lettered, every other follower created"


def judge_intake(f):
    # Not _done: a killed intake answers nothing, ours as a peer's (refused).
    solved = f.drain_s is not None and f.lost == 0 and f.partial == 0 and f.others_done > 0
    return solved, (f"{f.partial} of {f.others} requests half done (0 wanted: a request the intake took is "
                    f"done whole); {f.others_done} complete")


def judge_outage(f):
    solved = _done(f) and f.created == f.requested
    return solved, "every request taken while RabbitMQ was down, and every follower created once it was back"


@dataclass(frozen=True)
class Row:
    name: str  # a lab scenario
    judge: object  # Facts -> (solved, what it asks)


ROWS = [
    Row("redelivery", judge_redelivery),
    Row("swallow", judge_swallow),
    Row("killer", judge_killer),
    Row("prefetch", judge_prefetch),
    Row("poison", judge_poison),
    Row("intake", judge_intake),
    Row("outage", judge_outage),
]
ROW_BY_NAME = {row.name: row for row in ROWS}


@dataclass
class Cell:
    row: Row
    implementation: Implementation
    result: object  # lab.runner.Result, its verdict and observed text this cell's
    facts: Facts
    verdict: str
    observed: str


def run_cell(row, implementation, *, window=DEFAULT_WINDOW_S, progress=True, stack_prefix="compare"):
    scenario = BY_NAME[row.name]
    robust = scenario.modes["robust"]
    window = min(window, robust.window)
    stack_name = f"{stack_prefix}_{implementation.key}"
    if implementation.key == "ours":
        scenario = dataclasses.replace(scenario, modes={**scenario.modes,
                                                        "robust": dataclasses.replace(robust, window=window)})
        result = run(scenario, "robust", progress=progress, stack_name=stack_name)
        lab_verdict = result.verdict
    else:
        peer = Peer(implementation.key, implementation.label)
        result, lab_verdict = run_peer(peer, scenario, window=window, progress=progress, stack_name=stack_name), None
    facts = facts_of(scenario, result, window, stack_name)
    solved, asks = row.judge(facts)
    verdict = "SOLVED" if solved else "FAILED"
    observed = f"{asks}: {facts.summary()}"
    if lab_verdict and lab_verdict != verdict:
        observed += f" (the lab's own robust judge says {lab_verdict})"
    result = dataclasses.replace(result, mode=implementation.label, expected=asks, observed=facts.summary(),
                                 verdict=verdict, seen={**result.seen, "window_s": window, "drain_s": facts.drain_s})
    return Cell(row, implementation, result, facts, verdict, observed)


def facts_of(scenario, result, window, stack_name):
    seen = result.seen
    drain_s = seen["drain_s"]
    if drain_s is not None:
        # A worker process seen gone after the last delivery is still work
        # under way (Celery's pool notices a dead process seconds later).
        exits = [at - result.started for at in result.process_exits.values()]
        drain_s = round(max([drain_s, *exits]), 1)
    requests = (scenario.modes["robust"].requests or scenario.requests)
    others = [r for r in requests if r[2] != int(scenario.env.get("FAULT_SLEEP_WHEN_COUNT", 0))]
    return Facts(
        requested=seen["requested"], created=seen["created"], duplicates=seen["unique_violations"],
        lost=seen["lost"], dead=seen["dead"], crashes=seen["crashes"], refused=seen["http_errors"],
        drain_s=drain_s, window_s=window, inversions=seen["inversions"], busy_processes=seen["busy_processes"],
        others=len(others), **_requests_created(stack_name, others),
        longest_hold_s=_longest_hold(result),
    )


def _requests_created(stack_name, requests):
    """How many of ``requests`` have every follower (``others_done``), and
    how many some but not all (``partial``), read from the cell's database."""
    name = f"followers_{settings.STACK_PREFIX}{stack_name}"
    connection = psycopg2.connect(**connect_params(database_url(name)))
    try:
        with connection.cursor() as cursor:
            complete = partial = 0
            for user_login, followers_login, count, _ in requests:
                cursor.execute(
                    """
                    SELECT count(*) FROM subscriptions s
                    JOIN users a ON a.id = s.author_id JOIN users f ON f.id = s.follower_id
                    WHERE a.login = %s AND f.login = ANY(%s)
                    """,
                    (user_login, [f"{followers_login}_#{i}" for i in range(count)]),
                )
                created = cursor.fetchone()[0]
                complete += created == count
                partial += 0 < created < count
            return {"others_done": complete, "partial": partial}
    finally:
        connection.close()


def _longest_hold(result):
    """The longest time one delivery held its worker slot: to its end, or
    to its process's death (at the latest when the queue drained, as nothing
    ran then); None if one still held it when the window closed."""
    drained_at = None if result.seen["drain_s"] is None else result.started + result.seen["drain_s"]
    longest = 0.0
    for event in result.events:
        pid, started, ended = event[4], event[7], event[8]
        end = float(ended) if ended is not None else result.process_exits.get(pid, drained_at)
        if end is None:
            return None
        longest = max(longest, end - float(started))
    return longest


def run_compare(rows, implementations, *, window=DEFAULT_WINDOW_S, progress=True, stack_prefix="compare"):
    return [_run_cell_once_more_if_the_broker_went(row, implementation, window=window, progress=progress,
                                                   stack_prefix=stack_prefix)
            for row in rows for implementation in implementations]


def _run_cell_once_more_if_the_broker_went(row, implementation, **options):
    """A cell whose run lost RabbitMQ itself (someone restarted the machine's
    broker: the chaos and outage runs do) measured nothing: run it again
    once RabbitMQ answers."""
    try:
        return run_cell(row, implementation, **options)
    except pika.exceptions.AMQPConnectionError as error:
        log(f"    RabbitMQ went away during {row.name} / {implementation.label} ({error!r}): "
            "waiting for it, then running the cell again")
        wait_for(_rabbitmq_answers, timeout=300, what="RabbitMQ to answer again", interval=2)
        return run_cell(row, implementation, **options)


def _rabbitmq_answers():
    try:
        queue_depth("amq.rabbitmq.log")  # any passive declare: an AMQP round trip
        return True
    except pika.exceptions.AMQPConnectionError:
        return False


@dataclass
class ClusterRow:
    """``lab cluster`` with every column side by side: its table, and a
    verdict with what was seen for each implementation's key."""

    lines: list
    verdicts: dict  # implementation key -> "SOLVED" | "FAILED"
    observed: dict  # implementation key -> text


def run_cluster_row(implementations, *, short=False):
    peers = [implementation for implementation in implementations if implementation.key != "ours"]
    ours = BY_KEY["ours"] in implementations
    starters = peer_sides(peers) + (our_sides(["quorum"]) if ours else [])
    columns = [(peer.key, side_name(peer.key, peer.label)) for peer in peers] + (
        [("ours", "quorum")] if ours else [])  # each side's name in lab cluster's table
    log(f"--- cluster: a RabbitMQ node lost under load, {', '.join(i.label for i in implementations)} side by side")
    lines, _, seen, verdicts = run_cluster(sides=starters, timing=Timing.short() if short else None,
                                           header="implementation")
    row = ClusterRow(lines, {}, {})
    for key, name in columns:
        f = seen[name]
        row.verdicts[key] = "SOLVED" if verdicts[name] == "SOLVED" else "FAILED"
        row.observed[key] = (f"{f['done']} of {f['accepted']} requests taken done whole; {f['lost']} units "
                             f"lost or stuck; {f['duplicated']} duplicate runs; {f['dead']} dead-lettered; "
                             f"{f['refused']} requests refused; longest without progress {f['stall']:.1f} s")
    return row


def matrix_text(cells):
    """The verdict matrix, then what each cell observed, as text."""
    rows = list(dict.fromkeys(cell.row for cell in cells))
    columns = list(dict.fromkeys(cell.implementation for cell in cells))
    by_place = {(cell.row.name, cell.implementation.key): cell for cell in cells}
    header = ["scenario", *(column.label for column in columns)]
    lines = [[f"{row.name} {BY_NAME[row.name].original}",
              *(by_place[(row.name, column.key)].verdict if (row.name, column.key) in by_place else ""
                for column in columns)] for row in rows]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in [header, *lines]]
    text.insert(1, "  ".join("-" * width for width in widths))
    text.append("")
    text += [f"{cell.row.name} · {cell.implementation.label}: {cell.verdict}\n    {cell.observed}" for cell in cells]
    return "\n".join(text)
