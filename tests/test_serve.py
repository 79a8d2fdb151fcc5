"""``./run serve`` as a user runs it (on this test's own database, queue and
ports): nginx in front (or gunicorn alone, nginx turned off), a worker pool
that heals when a worker process is killed, a graceful stop that answers
every request in flight, and nothing left running however it is stopped
(Ctrl-C, SIGTERM, the API dying)."""

import os
import signal
import threading
import time

import pytest
import requests

from harness import ROOT, Process, Stack, consumer_count, free_port, wait_for
from tests.e2e_helpers import unique
from tests.edge_helpers import client

pytestmark = pytest.mark.slow

ADD = "/api/v1/add-followers"


def children(pid):
    try:
        return [int(child) for child in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def descendants(pid):
    """Every process under ``pid``, at any depth."""
    return [found for child in children(pid) for found in (child, *descendants(child))]


def command_line(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] != "Z"


class Serve:
    """``./run serve`` in a session of its own (as in a terminal, where a
    Ctrl-C goes to the foreground process group), its output in a log."""

    def __init__(self, stack):
        self.stack = stack
        self.process = Process("serve", [str(ROOT / "run"), "serve"], env=stack.env,
                               log_path=stack.log_dir / "serve.log")

    def start(self, **env):
        """Start it, with ``env`` beside the stack's environment."""
        self.process.env = {**self.stack.env, **env}
        self.log_offset = self.process.log_path.stat().st_size if self.process.log_path.exists() else 0
        self.process.start()
        wait_for(self._ready, timeout=90, progress=lambda waited: None,
                 what=f"./run serve to answer on {self.stack.url} (log: {self.process.log_path})")
        return self

    def _ready(self):
        if not self.process.alive:
            raise RuntimeError(f"./run serve exited:\n{self.process.log_tail()}")
        try:
            healthy = requests.get(f"{self.stack.url}/health", timeout=5).status_code == 200
        except requests.RequestException:
            return False
        return healthy and consumer_count(self.stack.queue_name) >= 2

    @property
    def pid(self):
        return self.process.popen.pid

    def log(self):
        return self.process.log_path.read_bytes()[self.log_offset:].decode(errors="replace")

    def child(self, word):
        """The supervisor's child whose command line has ``word``."""
        found = [pid for pid in children(self.pid) if word in command_line(pid)]
        assert len(found) == 1, (word, found)
        return found[0]

    def wait_exit(self, timeout=60):
        return self.process.popen.wait(timeout)

    def kill_everything(self):
        """What a failed test left: every process under ./run serve."""
        for pid in [self.pid, *descendants(self.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.stop(timeout=1)


@pytest.fixture(scope="module")
def stack():
    stack = Stack("serve", env={"PASSWORD_HASH_COST": "1024"})
    # Clients reach nginx on the stack's port; gunicorn listens on another.
    stack.env["LISTEN"] = f"127.0.0.1:{stack.port}"
    stack.env["API_BIND"] = f"127.0.0.1:{free_port()}"
    stack.reset()
    return stack


@pytest.fixture
def serve(stack):
    serve = Serve(stack)
    yield serve
    serve.kill_everything()


def create_user(stack):
    response = client("127.0.0.2").post(f"{stack.url}/api/v1/users", json={"login": unique("s"), "password": "pw",
                                                                              "age": 1})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def submit(stack, address, user_id, count):
    """An async add-followers from its own address (nginx limits each)."""
    response = client(address).post(f"{stack.url}{ADD}", json={"userId": user_id, "followersLogin": unique("j"),
                                                                "count": count, "async": 1}, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["jobId"], count


def assert_all_done(stack, jobs):
    for job_id, count in jobs:
        job = stack.wait_job(job_id, timeout=60)
        assert (job["status"], job["created"], job["messages"]["failed"]) == ("done", count, 0), job


def test_a_killed_worker_process_is_replaced_and_jobs_complete(stack, serve):
    serve.start()
    log = serve.log()
    assert f"API:         http://{stack.env['LISTEN']}/health  (nginx, in front of gunicorn on " \
           f"{stack.env['API_BIND']}" in log, log
    assert requests.get(f"{stack.url}/health").headers["Server"] == "nginx"
    user_id = create_user(stack)
    jobs = [submit(stack, f"127.0.4.{i}", user_id, 3000) for i in range(1, 4)]

    dramatiq = serve.child("dramatiq")
    victim = descendants(dramatiq)[0]
    os.kill(victim, signal.SIGKILL)
    jobs += [submit(stack, f"127.0.4.{i}", user_id, 2000) for i in range(4, 6)]
    wait_for(lambda: not alive(dramatiq), timeout=30, what="dramatiq to stop its other worker process and exit")
    wait_for(lambda: consumer_count(stack.queue_name) >= 2 and serve.child("dramatiq") != dramatiq, timeout=30,
             what=f"./run serve to start the workers again (log: {serve.process.log_path})")
    assert "the workers exited" in serve.log()
    assert_all_done(stack, jobs)

    # Ctrl-C in the terminal: SIGINT to the foreground process group.
    everything = descendants(serve.pid)
    os.killpg(serve.pid, signal.SIGINT)
    assert serve.wait_exit() == 0
    assert [pid for pid in everything if alive(pid)] == []
    assert "stopping everything: SIGINT" in serve.log()


def test_sigterm_answers_requests_in_flight_and_accepted_jobs_complete_after_a_restart(stack, serve):
    serve.start()
    user_id = create_user(stack)
    jobs = [submit(stack, "127.0.5.1", user_id, 40_000)]  # the workers are busy with it at the SIGTERM
    answers = {}  # address -> status or the exception, of the requests in flight
    accepted = []  # async jobs answered 202 while the stop was coming
    sent_sigterm = threading.Event()
    failures_after_sigterm = []
    unexpected = []

    def sync_add(address):
        try:
            response = client(address).post(f"{stack.url}{ADD}", json={"userId": user_id, "count": 8000,
                                                                        "followersLogin": unique("y")}, timeout=60)
            answers[address] = (response.status_code, response.json())
        except requests.RequestException as error:
            answers[address] = error

    def async_loop():
        for index in range(1, 250):
            try:
                response = client(f"127.0.6.{index}").post(f"{stack.url}{ADD}", timeout=30, json={
                    "userId": user_id, "followersLogin": unique("a"), "count": 500, "async": 1})
            except requests.ConnectionError as error:
                (failures_after_sigterm if sent_sigterm.is_set() else unexpected).append(error)
                return
            if response.status_code != 202:
                unexpected.append((response.status_code, response.text))
                return
            accepted.append((response.json()["jobId"], 500))
            time.sleep(0.02)

    threads = [threading.Thread(target=sync_add, args=(f"127.0.5.{i}",)) for i in range(2, 6)]
    threads.append(threading.Thread(target=async_loop))
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # the synchronous requests are in gunicorn by now
    everything = descendants(serve.pid)
    sent_sigterm.set()
    os.kill(serve.pid, signal.SIGTERM)
    for thread in threads:
        thread.join(90)
    assert serve.wait_exit() == 0, serve.log()[-3000:]
    assert [pid for pid in everything if alive(pid)] == [], [command_line(pid) for pid in everything if alive(pid)]

    # Each request in flight got its real answer, none a 502 or a reset.
    assert answers == {f"127.0.5.{i}": (200, {"created": 8000, "skipped": 0}) for i in range(2, 6)}, answers
    assert unexpected == []
    assert accepted and failures_after_sigterm, "the stop came while the client was still sending"
    print(f"\n{len(accepted)} async jobs accepted before the stop; the last refused: {failures_after_sigterm[0]!r}")

    # Every accepted job, the one the workers were in the middle of included,
    # completes once ./run serve is back.
    serve.start()
    assert_all_done(stack, jobs + accepted)

    # The API dying stops everything too.
    everything = descendants(serve.pid)
    os.kill(serve.child("gunicorn"), signal.SIGKILL)
    assert serve.wait_exit() == 1
    assert [pid for pid in everything if alive(pid)] == []
    assert "stopping everything: gunicorn exited (killed by SIGKILL)" in serve.log()


def test_with_nginx_turned_off_gunicorn_serves_on_listen_alone_and_says_what_that_exposes(stack, serve):
    """What a machine without nginx gets (this one has it: ``./run tests``
    installs it), and what SERVE_NGINX=0 asks for: gunicorn on LISTEN,
    nothing on API_BIND, jobs done, and a Ctrl-C that stops everything."""
    serve.start(SERVE_NGINX="0")
    log = serve.log()
    assert f"API:         http://{stack.env['LISTEN']}/health  (gunicorn alone: SERVE_NGINX is off)" in log, log
    assert "warning: without nginx a few slow clients can stall the API" in log
    assert not [pid for pid in children(serve.pid) if "nginx" in command_line(pid)]
    assert requests.get(f"{stack.url}/health").headers["Server"].startswith("gunicorn")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{stack.env['API_BIND']}/health", timeout=5)
    user_id = create_user(stack)
    assert_all_done(stack, [submit(stack, "127.0.7.1", user_id, 500)])

    everything = descendants(serve.pid)
    os.killpg(serve.pid, signal.SIGINT)
    assert serve.wait_exit() == 0
    assert [pid for pid in everything if alive(pid)] == []
    assert "stopping everything: SIGINT" in serve.log()
