"""A three-node RabbitMQ cluster of the lab's own, run from the installed
``rabbitmq-server`` beside the machine's own node, which it never touches.

Each node has its own name (``<STACK_PREFIX>lab<i>@localhost``), AMQP and
distribution ports, config, data, logs and PID file under a folder of the
run (``run_dir()``, in the system's temporary folder, since the nodes run as
the ``rabbitmq`` user, who may not be able to reach into a checkout under
a private folder: a clone in ``mktemp -d`` failed to boot its nodes), whose
logs are kept in ``artifacts/cluster/`` when the run ends, and an Erlang
cookie of its own: no lab node can
even talk to the machine's ``rabbit@localhost``, let alone join it. Every
``rabbitmqctl`` call names a lab node, and ``_ctl`` refuses any other name.
The nodes join each other by classic config peer discovery: the first
boots alone, the others list it and join it as they boot.

Debian's ``/usr/sbin`` wrappers switch to the ``rabbitmq`` user and read
its home (its cookie, ``/etc/rabbitmq/rabbitmq-env.conf``, which names the
machine's node), so the lab runs the scripts behind them,
``/usr/lib/rabbitmq/bin``, as that user itself (as root), with a home and
a ``RABBITMQ_CONF_ENV_FILE`` of its own; the directories belong to it.
"""

import hashlib
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import settings
from harness import ROOT, wait_for

SCRIPTS = Path("/usr/lib/rabbitmq/bin")
BOOT_TIMEOUT_S = 90  # ~10 s on an idle machine; much more on 2 busy cores


def _script(name):
    path = SCRIPTS / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed: apt-get install rabbitmq-server (the lab cluster needs it)")
    return found


def run_dir():
    """Where this checkout's lab nodes keep their files while they run."""
    checkout = hashlib.sha1(str(ROOT).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"{settings.STACK_PREFIX}followers-lab-cluster-{checkout}"


def _lab_ports(count):
    """``count`` distinct free ports below the kernel's ephemeral range.

    A node keeps its ports across a restart, and while it is down any
    client's outgoing connection could take an ephemeral port as its own
    (and ports picked one at a time may even repeat), after which the node
    cannot listen again: seen once as ``eaddrinuse``, with another lab
    node's listener answering in its place. Below the ephemeral range only
    a listener can take a port. All are held open until all are found."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    held = []
    try:
        for port in range(random.randrange(20000, max(20001, low - 2000)), low):
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
            if len(held) == count:
                return [sock.getsockname()[1] for sock in held]
        raise RuntimeError(f"no {count} free ports below {low} for the lab nodes")
    finally:
        for sock in held:
            sock.close()


def _answers(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class LabNode:
    def __init__(self, cluster, index, ports):
        self.cluster = cluster
        self.name = f"{cluster.prefix}lab{index}@localhost"
        self.short = self.name.split("@")[0]
        self.amqp_port, self.dist_port = ports
        self.dir = cluster.dir / self.short
        self.popen = None

    @property
    def url(self):
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def logs(self):
        """Where its logs are kept once the run ends."""
        return self.cluster.logs_dir / self.short

    def keep_logs(self):
        if (self.dir / "log").exists():
            shutil.copytree(self.dir / "log", self.logs)
        if (self.dir / "server.out").exists():
            self.logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.dir / "server.out", self.logs / "server.out")

    @property
    def pid_file(self):
        return self.dir / "rabbitmq.pid"

    def write_files(self, seeds):
        (self.dir / "mnesia").mkdir(parents=True, exist_ok=True)
        (self.dir / "log").mkdir(exist_ok=True)
        lines = [
            # Debian's /etc/rabbitmq/rabbitmq.conf pins 5672: this file replaces it.
            f"listeners.tcp.local = 127.0.0.1:{self.amqp_port}",
            "cluster_formation.peer_discovery_backend = classic_config",
            *(f"cluster_formation.classic_config.nodes.{i} = {seed}" for i, seed in enumerate(seeds, 1)),
            "log.file.level = info",
        ]
        (self.dir / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        (self.dir / "enabled_plugins").write_text("[].\n")  # no management UI: no port of its own to pick
        (self.dir / "rabbitmq-env.conf").write_text("# the lab's: Debian's names the machine's node\n")

    def env(self):
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.cluster.dir),  # the lab's cookie, not the machine node's
            "LANG": "C.UTF-8",
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),  # absent: none
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    # --- Life and death --------------------------------------------------

    def start(self):
        log = open(self.dir / "server.out", "ab")
        self.popen = subprocess.Popen(
            [_script("rabbitmq-server")], env=self.env(), cwd=self.dir, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, **self.cluster.as_owner,
        )
        log.close()

    @property
    def up(self):
        return _answers(self.amqp_port)

    def wait_up(self, timeout=BOOT_TIMEOUT_S):
        def booted():
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited while booting; see {self.logs}")
            return self.up and self.beam_pid() is not None  # its own VM answering, not another listener

        wait_for(booted, timeout=timeout, what=f"{self.name} to boot (logs: {self.logs})", interval=0.3)

    def beam_pid(self):
        """The PID of this node's Erlang VM while it runs, else None (a PID
        file outlives a SIGKILL, and its number may be another process's by now)."""
        try:
            pid = int(self.pid_file.read_text().strip())
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if f"RABBITMQ_PID_FILE={self.pid_file}".encode() in environ else None

    def stop(self):
        """Stop the node gracefully (as an operator would); wait for its VM to exit."""
        self.cluster.ctl(self, "stop", str(self.pid_file), timeout=60)
        self._reap()

    def kill(self):
        """SIGKILL the node's Erlang VM, as the OOM killer or a power cut would."""
        pid = self.beam_pid()
        if pid is None:
            raise RuntimeError(f"{self.name} is not running")
        os.kill(pid, signal.SIGKILL)
        self._reap()

    def _reap(self):
        if self.popen is not None:
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                pass

    def destroy(self):
        """Whatever state it is in: nothing of this node left running. Only
        its own processes, by PID: never a process group (Erlang's epmd,
        shared with the machine's node, may have been started under it)."""
        script = self.popen.pid if self.popen is not None and self.popen.poll() is None else None
        for pid in (self.beam_pid(), script):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self._reap()


class LabCluster:
    """Three lab nodes joined to each other only.

    Parameters:
      size(int): Nodes (3).
      log(callable): Progress lines.
    """

    def __init__(self, *, size=3, log=print):
        self.prefix = settings.STACK_PREFIX
        self.dir = run_dir()
        self.logs_dir = ROOT / "artifacts" / "cluster"
        self.log = log
        self.as_owner = self._owner()
        ports = _lab_ports(2 * size)
        self.nodes = [LabNode(self, index, ports[2 * index - 2:2 * index]) for index in range(1, size + 1)]

    @property
    def urls(self):
        """RABBITMQ_URL for the whole cluster."""
        return ";".join(node.url for node in self.nodes)

    def _owner(self):
        """Run the nodes as the rabbitmq user when root (the server refuses
        to own its files as root on Debian), else as whoever runs the lab."""
        if os.geteuid() != 0:
            return {}
        try:
            entry = pwd.getpwnam("rabbitmq")
        except KeyError:
            return {}
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _chown(self, path):
        if self.as_owner:
            for folder, _, files in os.walk(path):
                os.chown(folder, self.as_owner["user"], self.as_owner["group"])
                for name in files:
                    os.chown(os.path.join(folder, name), self.as_owner["user"], self.as_owner["group"])

    def start(self):
        started = time.monotonic()
        shutil.rmtree(self.dir, ignore_errors=True)  # a fresh cluster every run
        self.dir.mkdir(parents=True)
        cookie = self.dir / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)
        seed = self.nodes[0].name
        for node in self.nodes:
            node.write_files([seed])
        self._chown(self.dir)
        self.log(f"starting {self.nodes[0].name} (AMQP :{self.nodes[0].amqp_port}), then the others, which join it")
        self.nodes[0].start()
        self.nodes[0].wait_up()
        for node in self.nodes[1:]:
            node.start()
        for node in self.nodes[1:]:
            node.wait_up()
        members = self.running_members(self.nodes[0])
        if sorted(members) != sorted(node.name for node in self.nodes):
            raise RuntimeError(f"the lab nodes did not form one cluster: {members} (logs: {self.logs_dir})")
        self.log(f"cluster of {len(self.nodes)} nodes up in {time.monotonic() - started:.0f} s: "
                 + ", ".join(f"{node.name} :{node.amqp_port}" for node in self.nodes))
        return self

    def destroy(self):
        """Stop every node, keep their logs in ``logs_dir``, drop their data."""
        for node in self.nodes:
            node.destroy()
        shutil.rmtree(self.logs_dir, ignore_errors=True)
        for node in self.nodes:
            node.keep_logs()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- rabbitmqctl, on lab nodes only ------------------------------------

    def ctl(self, node, *args, timeout=30):
        if node not in self.nodes or not node.name.startswith(f"{self.prefix}lab"):
            raise ValueError(f"refusing to run rabbitmqctl on {node!r}: not a lab node")
        result = subprocess.run(
            [_script("rabbitmqctl"), "-n", node.name, *args], env=node.env(), cwd=self.dir,
            capture_output=True, text=True, timeout=timeout, **self.as_owner,
        )
        if result.returncode:
            raise RuntimeError(f"rabbitmqctl -n {node.name} {' '.join(args)}: {result.stderr or result.stdout}")
        return result.stdout

    def running_members(self, node):
        status = json.loads(self.ctl(node, "cluster_status", "--formatter", "json"))
        return status["running_nodes"]

    def queue_rows(self, queue_name):
        """What each live node says of a queue and its delay and dead-letter
        queues: messages ready and unacknowledged, consumers, leader."""
        for node in self.nodes:
            if not node.up:
                continue
            try:
                rows = json.loads(self.ctl(node, "list_queues", "name", "type", "leader", "messages_ready",
                                           "messages_unacknowledged", "consumers", "--formatter", "json"))
            except RuntimeError:
                continue
            return [row for row in rows if row["name"].startswith(queue_name)]
        return []

    def queue_home(self, queue_name):
        """The node that leads a quorum queue, or hosts a classic one (None
        while that node is down)."""
        for node in self.nodes:
            if not node.up:
                continue
            rows = json.loads(self.ctl(node, "list_queues", "--local", "name", "type", "leader", "--formatter", "json"))
            for row in rows:
                if row["name"] == queue_name:
                    if row["type"] == "quorum":
                        return next((n for n in self.nodes if n.name == row["leader"]), None)
                    return node
        return None
