"""``./run serve``: nginx, the API and the workers as one command in the
foreground (``python -m deploy.supervisor``, after ``python -m db``).

- nginx, when installed (and ``SERVE_NGINX`` is not off), listens on
  ``LISTEN`` and hands complete requests to gunicorn on ``API_BIND``
  (deploy/nginx.conf.template). Without nginx, gunicorn listens on
  ``LISTEN`` itself, and a warning says what that exposes.
- ``dramatiq actors --processes 2`` is started again whenever it exits: when
  any worker process dies (a hard time limit, a crash, a kill), Dramatiq
  stops them all, and restarting is a supervisor's job, as compose's restart
  policy or systemd's ``Restart=always`` does elsewhere. The pause before a
  restart grows while it keeps failing at once.
- Stopping this process in any way stops everything it started: SIGTERM,
  SIGINT (Ctrl-C), SIGHUP, or gunicorn or nginx exiting on their own. Each
  child runs in a session of its own, so a Ctrl-C reaches this process only,
  which stops the children in order: nginx stops accepting and answers what
  it has (SIGQUIT), then gunicorn does the same (SIGTERM), while the workers
  finish their current units or hand them back to RabbitMQ (SIGTERM). What
  still runs after ``STOP_TIMEOUT_S`` is killed; a second Ctrl-C kills at
  once. Were this process killed outright, the kernel sends each child a
  SIGTERM (``PR_SET_PDEATHSIG``).
"""

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import settings
from deploy import nginx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKERS_ARGV = [str(BIN / "dramatiq"), "actors", "--processes", "2"]
#: How long each stage of a stop may take before it is killed (gunicorn's
#: graceful_timeout and nginx's worker_shutdown_timeout are 30 s).
STOP_TIMEOUT_S = 35
#: Restart pauses of the workers: from the first to the longest.
RESTART_PAUSE_S = (1, 30)
#: A run at least this long counts as healthy: the pause starts over.
HEALTHY_RUN_S = 30
PR_SET_PDEATHSIG = 1


def say(text):
    print(f"\033[1m==> {text}\033[0m", flush=True)


def describe_exit(code):
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


class Child:
    """One command, in a session of its own, its output on ours."""

    def __init__(self, name, argv, *, env, stop_signal=signal.SIGTERM):
        self.name = name
        self.argv = argv
        self.env = env
        self.stop_signal = stop_signal
        self.popen = None
        self.started = None

    def start(self):
        parent = os.getpid()
        libc = ctypes.CDLL(None, use_errno=True)

        def die_with_parent():
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the supervisor died before prctl
                os.kill(os.getpid(), signal.SIGTERM)

        self.popen = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, start_new_session=True, preexec_fn=die_with_parent
        )
        self.started = time.monotonic()
        return self

    @property
    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self):
        return self.popen.poll()

    def ask_to_stop(self):
        """The graceful stop signal, to the command itself (it tells its own
        processes, as systemd's KillMode=mixed does)."""
        if self.alive:
            self.popen.send_signal(self.stop_signal)

    def kill_group(self):
        """SIGKILL whatever is left of its session, the command gone or not."""
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.poll()


class Supervisor:
    def __init__(self):
        self.stop_reason = None
        self.hurry = False
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.nginx = None
        if settings.SERVE_NGINX and nginx.find():
            if settings.LISTEN == settings.API_BIND:
                raise SystemExit(f"LISTEN and API_BIND are both {settings.LISTEN}: nginx and gunicorn need one each")
            run_dir = ROOT / "artifacts" / "serve" / ("nginx-" + settings.LISTEN.replace(":", "_").strip("[]"))
            argv = nginx.prepare(run_dir, listen=settings.LISTEN, upstream=settings.API_BIND)
            self.nginx = Child("nginx", argv, env=env, stop_signal=signal.SIGQUIT)
            self.nginx_log = run_dir / "access.log"
            api_env = env
        else:
            api_env = {**env, "API_BIND": settings.LISTEN}
        self.api = Child("gunicorn", [str(BIN / "gunicorn"), "api:app"], env=api_env)
        self.workers = Child("workers", WORKERS_ARGV, env=env)
        self.quick_exits = 0  # exits in a row, each soon after its start
        self.restart_at = None

    # --- Signals -------------------------------------------------------------

    def on_signal(self, signum, frame):
        if self.stop_reason is None:
            self.stop_reason = signal.Signals(signum).name
        else:
            self.hurry = True  # a second Ctrl-C: no more waiting

    # --- Running -------------------------------------------------------------

    def run(self):
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self.on_signal)
        self.announce()
        self.workers.start()
        self.api.start()
        if self.nginx:
            self.nginx.start()
        failed = None
        while self.stop_reason is None:
            failed = next((child for child in (self.api, self.nginx) if child and not child.alive), None)
            if failed:
                self.stop_reason = f"{failed.name} exited ({describe_exit(failed.returncode)})"
                break
            self.heal_workers()
            time.sleep(0.1)
        say(f"stopping everything: {self.stop_reason}")
        self.stop()
        return 1 if failed else 0

    def announce(self):
        say("starting the workers: dramatiq actors --processes 2, restarted whenever it exits")
        if self.nginx:
            say(f"API:         http://{settings.LISTEN}/health  (nginx, in front of gunicorn on {settings.API_BIND};"
                " try the curl examples in README.md)")
            say(f"nginx:       access log {self.nginx_log.relative_to(ROOT)}")
        else:
            why = "nginx is not installed" if settings.SERVE_NGINX else "SERVE_NGINX is off"
            say(f"API:         http://{settings.LISTEN}/health  (gunicorn alone: {why})")
            say("warning: without nginx a few slow clients can stall the API; install it (Debian: apt-get install"
                " nginx) and ./run serve puts it in front, unless SERVE_NGINX is off (docs/deploying.md)")
        say(f"Console:     http://{settings.LISTEN}/console  (the token is API_TOKEN, when it is set)")
        say("RabbitMQ UI: http://127.0.0.1:15672  (guest/guest on a developer machine)")
        say("Ctrl-C stops everything.")

    def heal_workers(self):
        if self.workers.alive:
            return
        now = time.monotonic()
        if self.restart_at is None:
            ran = now - self.workers.started
            self.workers.kill_group()  # worker processes Dramatiq left behind, if any
            self.quick_exits = 1 if ran >= HEALTHY_RUN_S else self.quick_exits + 1
            pause = min(RESTART_PAUSE_S[0] * 2 ** (self.quick_exits - 1), RESTART_PAUSE_S[1])
            say(f"the workers exited ({describe_exit(self.workers.returncode)}) after {ran:.0f} s;"
                f" restarting them in {pause} s")
            self.restart_at = now + pause
        elif now >= self.restart_at:
            self.restart_at = None
            self.workers.start()

    # --- Stopping ------------------------------------------------------------

    def stop(self):
        self.workers.ask_to_stop()
        if self.nginx:
            self.nginx.ask_to_stop()
            self.wait(self.nginx)
        self.api.ask_to_stop()
        self.wait(self.api)
        self.wait(self.workers)
        for child in (self.nginx, self.api, self.workers):
            if child:
                child.kill_group()
        say("stopped")

    def wait(self, child):
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while child.alive and not self.hurry and time.monotonic() < deadline:
            time.sleep(0.05)
        if child.alive:
            say(f"{child.name} did not stop in time: killing it")
        child.kill_group()


def main():
    return Supervisor().run()


if __name__ == "__main__":
    sys.exit(main())
