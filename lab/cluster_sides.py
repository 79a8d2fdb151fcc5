"""The stacks that `lab cluster` puts under load, one a column: ours, on
classic or quorum queues (here), or a peer's (lab/peers/cluster.py, for
``lab compare --cluster``). Each sends a request, and reads from its own
database what a user would check: how far the accepted work got, what it
created, and where what is left is.
"""

import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import requests

from harness import ROOT, Stack

FOLLOWERS_PER_REQUEST = 20  # 4 units
CLUSTER_ENV = {
    "FOLLOWERS_PER_MESSAGE": "5",
    "FAULT_UNIT_DELAY_MS": "30",  # units take a while: every outage meets some in flight
    "PASSWORD_HASH_COST": "1024",
    "MAX_RETRIES": "20",
    "MIN_BACKOFF_MS": "200",
    "MAX_BACKOFF_MS": "2000",
    "BROKER_TIMEOUT_S": "3",
}


@dataclass
class Side:
    """One column under load: its stack, what its client saw, its progress.

    ``expect`` is the verdict it should earn: SOLVED (nothing lost, doubled,
    dead-lettered or refused) or REPRODUCED (classic queues: work stranded
    or lost while its node is down)."""

    name: str
    stack: Stack
    expect: str = "SOLVED"
    users: list = field(default_factory=list)
    accepted: dict = field(default_factory=dict)  # what the client was told was taken -> followers requested
    refused: int = 0
    refusals: list = field(default_factory=list)  # the first few, to show
    done_units: int = 0
    total_units: int = 0
    failed_units: int = 0
    last_progress: float = field(default_factory=time.monotonic)
    longest_stall: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, number):
        """Send request ``number``; record it accepted or refused."""
        key, refusal = self.submit(number)
        with self.lock:
            if key is not None:
                self.accepted[key] = FOLLOWERS_PER_REQUEST
            else:
                self.refused += 1
                if len(self.refusals) < 3:
                    self.refusals.append(refusal)

    def stop(self):
        self.stack.stop()


class OurSide(Side):
    """Our API and supervised workers, on the queue type it is named after."""

    @classmethod
    def start(cls, cluster, queue_type, *, expect):
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
        side = cls(queue_type, stack, expect=expect)
        for number in range(2):
            response = stack.post("/api/v1/users", json={"login": f"cluster_user{number}", "password": "pw", "age": 30})
            side.users.append(response.json()["id"])
        return side

    def submit(self, number):
        body = {"userId": self.users[number % len(self.users)], "followersLogin": f"{self.name[:2]}{number}",
                "count": FOLLOWERS_PER_REQUEST, "async": 1}
        try:
            response = self.stack.post("/api/v1/add-followers", data=body, timeout=30)
        except requests.RequestException as error:
            return None, repr(error)
        if response.status_code == 202:
            return response.json()["jobId"], None
        return None, f"{response.status_code}: {response.text[:200]}"

    def progress(self, cursor, accepted):
        """(units done, units failed, units in all) of the accepted jobs."""
        cursor.execute("SELECT coalesce(sum(units), 0) FROM jobs WHERE id = ANY(%s)", (list(accepted),))
        total = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'failed') "
            "FROM job_units WHERE job_id = ANY(%s)",
            (list(accepted),),
        )
        done, failed = cursor.fetchone()
        return done, failed, total

    def created(self, cursor):
        cursor.execute("SELECT count(*) FROM subscriptions WHERE author_id = ANY(%s)", (self.users,))
        return cursor.fetchone()[0]

    def duplicated(self, cursor, created, expected):
        return max(0, created - expected)

    def requests_done(self, cursor):
        cursor.execute(
            """
            SELECT count(*) FROM jobs j WHERE j.id = ANY(%s)
              AND j.units = (SELECT count(*) FROM job_units u WHERE u.job_id = j.id AND u.status = 'done')
            """,
            (list(self.accepted),),
        )
        return cursor.fetchone()[0]

    def where_left(self, cursor):
        """Where the units that did not finish are: for a run that left some,
        so that its log says what to look at."""
        cursor.execute(
            """
            SELECT count(*), count(*) FILTER (WHERE NOT j.enqueued),
                   coalesce(sum(j.units - (SELECT count(*) FROM job_units u WHERE u.job_id = j.id)), 0)
            FROM jobs j WHERE j.id = ANY(%s)
              AND j.units > (SELECT count(*) FROM job_units u WHERE u.job_id = j.id AND u.status = 'done')
            """,
            (list(self.accepted),),
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
        return (f"{jobs} jobs unfinished ({unsplit} not yet split), {units} units not done; "
                f"{outbox} messages still in the outbox; {redelivered} messages redelivered (most starts: {most}); "
                f"{waiting} transactions idle in transaction (the oldest {longest:.0f} s)")

    def resent(self):
        """Relay batches RabbitMQ nacked or did not confirm (sent again), from the logs."""
        logs = "".join(path.read_text(errors="replace") for path in (self.stack.log_dir / "api.log",
                                                                      self.stack.log_dir / "workers.log")
                       if path.exists())
        return logs.count("messages of the batch (nack)") + logs.count("RabbitMQ did not confirm")
