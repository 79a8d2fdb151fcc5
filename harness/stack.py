"""One isolated instance of the service: gunicorn and ``dramatiq actors`` on
a database, a queue and a port of their own.

Used by the lab, the benchmark and the end-to-end tests, which all run the
processes a user would run and kill them for real when a test or a scenario
is about failure.
"""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pika
import requests

import settings

from .processes import BIN, ROOT, Process, free_port, wait_for
from .rabbitmq import consumer_count, delete_queues


def database_url(name):
    """settings.DATABASE_URL with another database name."""
    parts = urlsplit(settings.DATABASE_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


class Stack:
    """The API and the workers of one isolated instance of the service.

    Parameters:
      name(str): Names the database (``followers_<name>``), the queue
        (``<name>_add_followers``) and the log folder.
      env(dict): Settings for both processes (see settings.py).
      processes(int): Worker processes (``dramatiq --processes``).
      threads(int): Threads per worker process.
      supervise(bool): Restart ``dramatiq`` whenever it exits, as compose's
        restart policy would.
      log_dir(Path): Where the processes' output goes (emptied first).
      api_workers(int): gunicorn worker processes; None: API_WORKERS as
        settings.py (or the environment) has it.
      api_token(str): Sets API_TOKEN and sends it with every request made
        through ``post`` and ``get``.
      app(str): What gunicorn serves (the lab serves its own apps).
      workers_module(str): What ``dramatiq`` imports (the lab's workers add
        their middleware to the production actors).
    """

    def __init__(
        self,
        name,
        *,
        env=None,
        processes=2,
        threads=8,
        supervise=False,
        log_dir=None,
        api_workers=None,
        stop_timeout=15,
        api_token=None,
        app="api:app",
        workers_module="actors",
    ):
        # Two checkouts on one machine (STACK_PREFIX) never share a database or a queue.
        name = f"{settings.STACK_PREFIX}{name}"
        self.name = name
        self.api_token = api_token
        self.app = app
        self.workers_module = workers_module
        self.stop_timeout = stop_timeout
        self.worker_exits = []  # (time.time(), exit code) of each dramatiq exit seen by the supervisor
        self.process_exits = {}  # worker process pid -> time.time() the supervisor saw it gone
        self.port = free_port()
        self.processes = processes
        self.threads = threads
        self.supervise = supervise
        self.api_workers = api_workers
        self.log_dir = Path(log_dir or ROOT / "artifacts" / "logs" / name)
        for old_log in self.log_dir.glob("*.log"):  # a log holds this stack's run only
            old_log.unlink()
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(f"followers_{name}"),
            "QUEUE_NAME": f"{name}_add_followers",
            "API_BIND": f"127.0.0.1:{self.port}",
            **({"API_WORKERS": str(api_workers)} if api_workers else {}),
            "PYTHONUNBUFFERED": "1",
            # Instances running side by side would fight over port 9191.
            "WORKER_METRICS": "0",
            **({"API_TOKEN": api_token} if api_token else {}),
            **(env or {}),
        }
        self.api = None
        self.workers = None
        self.worker_restarts = 0
        self.kills = 0  # worker processes a test or scenario SIGKILLed
        self._stopping = threading.Event()
        self._supervisor = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def queue_name(self):
        return self.env["QUEUE_NAME"]

    @property
    def database_url(self):
        return self.env["DATABASE_URL"]

    @property
    def rabbitmq_url(self):
        return self.env.get("RABBITMQ_URL") or settings.RABBITMQ_URL

    # --- Set-up ----------------------------------------------------------

    def reset(self, *, fresh=True):
        """An empty database and empty queues for this stack: dropped and
        created anew, or (``fresh=False``, faster) emptied in place."""
        if fresh:
            self._run_python("-c", "import db.schema as s; s.drop_database(); s.set_up()")
        else:
            self._run_python("-c", "import db.schema as s; s.set_up(); s.truncate_all()")
        try:
            delete_queues(self.queue_name, url=self.rabbitmq_url)
        except pika.exceptions.AMQPConnectionError:
            pass  # a stack whose broker is down (on purpose) has no queue to empty

    def _run_python(self, *args):
        result = subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60
        )
        if result.returncode:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    # --- Processes -------------------------------------------------------

    def start_api(self):
        self.api = Process("api", [str(BIN / "gunicorn"), self.app], env=self.env, log_path=self.log_dir / "api.log")
        self.api.start()
        wait_for(self._api_answers, timeout=30, what=f"the API on {self.url} (log: {self.api.log_path})")
        return self

    def _api_answers(self):
        if not self.api.alive:
            raise RuntimeError(f"gunicorn exited:\n{self.api.log_tail()}")
        try:
            return requests.get(f"{self.url}/health", timeout=5).status_code in (200, 503)
        except (requests.ConnectionError, requests.Timeout):
            return False  # still booting (a busy machine boots slowly)

    def start_workers(self):
        argv = [
            str(BIN / "dramatiq"),
            self.workers_module,
            "--processes",
            str(self.processes),
            "--threads",
            str(self.threads),
        ]
        self.workers = Process("workers", argv, env=self.env, log_path=self.log_dir / "workers.log").start()
        if self.supervise and self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise, daemon=True)
            self._supervisor.start()
        return self

    def wait_workers_ready(self, timeout=30):
        """Wait until every worker process consumes the queue."""
        return wait_for(
            lambda: consumer_count(self.queue_name, url=self.rabbitmq_url) >= self.processes,
            timeout=timeout,
            what=f"{self.processes} worker processes consuming {self.queue_name} (log: {self.log_dir}/workers.log)",
        )

    def _supervise(self):
        children = set()
        while not self._stopping.wait(0.1):
            if self.workers is None:
                continue
            now_children = set(self.workers.children())
            for pid in children - now_children:
                self.process_exits[pid] = time.time()
            children = now_children
            if not self.workers.alive:
                self.worker_exits.append((time.time(), self.workers.popen.returncode))
                self.workers.stop(timeout=1)  # reap what is left of the group
                self.worker_restarts += 1
                self.workers.start()

    def start(self):
        self.start_api()
        self.start_workers()
        self.wait_workers_ready()
        return self

    def stop(self):
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        for process in (self.workers, self.api):
            if process is not None:
                process.stop(self.stop_timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # --- HTTP ------------------------------------------------------------

    def _headers(self, kwargs):
        headers = dict(kwargs.pop("headers", None) or {})
        if self.api_token:
            headers.setdefault("Authorization", f"Bearer {self.api_token}")
        return headers

    def post(self, path, **kwargs):
        return requests.post(
            f"{self.url}{path}", timeout=kwargs.pop("timeout", 120), headers=self._headers(kwargs), **kwargs
        )

    def get(self, path, **kwargs):
        return requests.get(
            f"{self.url}{path}", timeout=kwargs.pop("timeout", 30), headers=self._headers(kwargs), **kwargs
        )

    def wait_job(self, job_id, *, timeout=120, statuses=("done", "failed"), progress=None):
        def finished():
            job = self.get(f"/api/v1/jobs/{job_id}").json()
            return job if job["status"] in statuses else None

        return wait_for(finished, timeout=timeout, what=f"job {job_id} to finish", interval=0.1, progress=progress)
