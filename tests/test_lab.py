"""Every lab scenario in every mode, for real: the naive mode must reproduce
the original's failure and the robust mode must solve it, as judged from the
database, the queues and the workers' events."""

import subprocess
import sys

import pytest

from harness import ROOT, Stack, publish_raw, queue_depth, wait_for
from lab.scenarios import SCENARIOS
from tests.e2e_helpers import create_user, submit_async

# Every test here starts the real processes (or a browser): -m 'not slow' skips them.
pytestmark = pytest.mark.slow

EXPECTED = {"naive": "REPRODUCED", "robust": "SOLVED"}
RUNS = [(scenario, mode) for scenario in SCENARIOS for mode in scenario.modes]


@pytest.mark.parametrize("scenario, mode", RUNS, ids=[f"{s.name}-{m}" for s, m in RUNS])
def test_scenario_verdict(lab_run, scenario, mode):
    result = lab_run(scenario.name, mode)
    assert result.verdict == EXPECTED[mode], f"{result.observed} (logs: artifacts/logs/test_lab/)"
    seen = result.seen
    if mode == "robust":
        # Nothing lost, nothing doubled: the counts a user would check.
        poisoned = 1 if scenario.name == "poison" else 0
        killed = 5 if scenario.name == "killer" else 0
        assert seen["created"] == seen["requested"] - poisoned - killed
        assert seen["unique_violations"] == 0 and seen["lost"] == 0


def dlq(stack, *args):
    result = subprocess.run(
        [sys.executable, "-m", "ops", "dlq", "--queue", stack.queue_name, *args],
        cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=60,
    )
    return result.returncode, result.stdout + result.stderr


def test_dead_letters_can_be_listed_and_replayed_after_a_fix():
    env = {"FOLLOWERS_PER_MESSAGE": "5", "FAULT_RAISE_ON_LOGIN": "fan_#7", "MAX_RETRIES": "0",
           "PASSWORD_HASH_COST": "1024"}
    with Stack("test_dlq", env=env, threads=2, api_token="dlq-secret", workers_module="lab.workers") as stack:
        stack.reset()
        stack.start()
        author = create_user(stack, "author")
        job = submit_async(stack, author, "fan", 15)
        state = stack.wait_job(job["jobId"])
        assert state["status"] == "failed" and state["messages"]["failed"] == 1
        assert "InjectedFault: injected error on follower fan_#7" in state["errors"][0]
        publish_raw(stack.queue_name, b"{not json")
        wait_for(lambda: queue_depth(f"{stack.queue_name}.XQ") == 2, timeout=20, what="2 dead letters")

        code, out = dlq(stack, "list")
        assert code == 0 and "2 dead letters" in out
        assert "injected error on follower fan_#7" in out and "not a Dramatiq message" in out

        # The fix is deployed: workers without the fault. Replay the unit, purge the garbage.
        stack.workers.stop()
        stack.env.pop("FAULT_RAISE_ON_LOGIN")
        stack.start_workers()
        code, out = dlq(stack, "replay", "--all")
        assert code == 1 and "replay needs --token equal to API_TOKEN" in out  # API_TOKEN is set: bulk changes need it
        code, out = dlq(stack, "replay", "--all", "--token", "dlq-secret")
        assert code == 1 and "replayed 1" in out and "purge it" in out  # the undecodable one cannot be replayed
        state = stack.wait_job(job["jobId"], statuses=("done",))
        assert (state["created"], state["messages"]["failed"], state["errors"]) == (15, 0, [])
        code, out = dlq(stack, "purge", "--all", "--token", "dlq-secret")
        assert code == 0 and "purged 1" in out
        assert queue_depth(f"{stack.queue_name}.XQ") == 0
