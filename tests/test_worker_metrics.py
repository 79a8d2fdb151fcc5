"""The workers serve Dramatiq's Prometheus metrics when WORKER_METRICS is on."""

import pytest
import requests

from harness import Stack, free_port, wait_for
from tests.e2e_helpers import create_user, submit_async

# Every test here starts the real processes (or a browser): -m 'not slow' skips them.
pytestmark = pytest.mark.slow


def test_workers_expose_message_counts(tmp_path):
    port = free_port()
    env = {"WORKER_METRICS": "1", "dramatiq_prom_port": str(port), "dramatiq_prom_host": "127.0.0.1",
           "dramatiq_prom_db": str(tmp_path / "prom"), "PASSWORD_HASH_COST": "1024"}
    with Stack("test_metrics", env=env, processes=2, threads=2) as stack:
        stack.reset()
        stack.start()
        author = create_user(stack, "author")
        job = submit_async(stack, author, "m", 3000)
        stack.wait_job(job["jobId"])

        def scrape():
            try:
                text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except requests.RequestException:
                return None
            lines = [line for line in text.splitlines()
                     if line.startswith("dramatiq_messages_total") and 'actor_name="add_followers"' in line]
            return sum(float(line.split()[-1]) for line in lines) or None

        assert wait_for(scrape, timeout=15, what=f"worker metrics on :{port}") == job["messages"]


def test_one_json_line_per_unit_with_log_format_json():
    import json

    with Stack("test_jsonlog", env={"LOG_FORMAT": "json", "FOLLOWERS_PER_MESSAGE": "4",
                                    "PASSWORD_HASH_COST": "1024"}, threads=2) as stack:
        stack.reset()
        stack.start()
        author = create_user(stack, "author")
        job = submit_async(stack, author, "j", 10)
        stack.wait_job(job["jobId"])
        stack.workers.stop()
        lines = [json.loads(line) for line in stack.workers.log_path.read_text().splitlines()
                 if line.startswith("{")]
        units = sorted(line["unit"] for line in lines if line["job"] == job["jobId"])
        assert units == [0, 1, 2]
        assert all(line["outcome"] == "done" and line["attempt"] == 1 and line["ms"] >= 0 for line in lines)
