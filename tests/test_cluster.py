"""python -m lab cluster, shortened: a three-node RabbitMQ cluster of the
lab's own loses the node leading the work queue (stopped), then the next
leader (SIGKILLed), under continuous async load. Classic queues lose or
strand work while their node is down; quorum queues lose, double and
refuse nothing. Afterwards no lab node runs, and the machine's own RabbitMQ
is alone in its cluster as before."""

import json
import os
import shutil
import subprocess

import pytest

from lab.cluster import Timing, run_cluster
from lab.rabbit_nodes import SCRIPTS, run_dir

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (SCRIPTS / "rabbitmq-server").exists() and not shutil.which("rabbitmq-server"),
    reason="needs an installed rabbitmq-server (apt-get install rabbitmq-server)",
)]


def lab_nodes_running():
    """Erlang VMs whose home is the lab cluster's folder (its cookie's)."""
    home = f"-home {run_dir()} ".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ")
        except OSError:
            continue
        if b"beam" in cmdline and home in cmdline:
            found.append(pid)
    return found


def machine_node_members():
    if not shutil.which("rabbitmqctl"):
        return None
    result = subprocess.run(["rabbitmqctl", "cluster_status", "--formatter", "json"], capture_output=True,
                            text=True, timeout=60)
    return json.loads(result.stdout)["disk_nodes"] if result.returncode == 0 else None


def test_a_node_lost_under_load_strands_classic_queues_and_not_quorum_ones():
    before = machine_node_members()
    lines, passed, seen, verdicts = run_cluster(timing=Timing.short())
    print("\n".join(lines))
    assert verdicts == {"classic": "REPRODUCED", "quorum": "SOLVED"}, "\n".join(lines)
    quorum, classic = seen["quorum"], seen["classic"]
    assert quorum["accepted"] > 20 and quorum["done"] == quorum["accepted"]
    assert (quorum["lost"], quorum["duplicated"], quorum["refused"], quorum["dead"]) == (0, 0, 0, 0)
    assert classic["lost"] > 0 or classic["stall"] >= classic["first_down"] / 2
    assert passed
    assert lab_nodes_running() == []
    assert machine_node_members() == before
