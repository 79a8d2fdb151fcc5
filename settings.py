"""Every setting of the service, read from the environment once, at import.

This is the only module that reads the environment (Dramatiq's own
``dramatiq_*`` variables excepted). The defaults work on a developer machine
with PostgreSQL and RabbitMQ on 127.0.0.1; tests and the lab override them by
setting the variables before they start a process.
"""

import os
import re
import tempfile
from urllib.parse import urlsplit


def _int(name, default):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"setting {name}={raw!r} is not a whole number") from None


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _bool(name, default):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value not in _TRUE + _FALSE:
        # A typo must not turn a setting off unseen.
        raise SystemExit(f"setting {name}={raw!r} is neither true ({', '.join(_TRUE)}) nor false ({', '.join(_FALSE)})")
    return value in _TRUE


def _str(name, default):
    return os.environ.get(name) or default


def _choice(name, default, choices):
    value = _str(name, default).strip().lower()
    if value not in choices:
        raise SystemExit(f"setting {name}={value!r} must be one of {', '.join(choices)}")
    return value


# --- Connections -------------------------------------------------------------

DATABASE_URL = _str("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/followers")
#: One URL, or the nodes of a cluster separated by ``;``: every process
#: connects to whichever node answers and moves on when its node dies.
RABBITMQ_URL = _str("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
#: RabbitMQ's management HTTP API, where the API reads queue depths, rates
#: and consumers (GET /api/v1/queues). Its user and password are
#: RABBITMQ_URL's unless this URL has its own. Default: RABBITMQ_URL's host
#: (the first of several), port 15672.
RABBITMQ_MANAGEMENT_URL = _str(
    "RABBITMQ_MANAGEMENT_URL", f"http://{urlsplit(RABBITMQ_URL.split(';')[0]).hostname or '127.0.0.1'}:15672"
)
#: Dramatiq also declares ``<QUEUE_NAME>.DQ`` (delays) and ``<QUEUE_NAME>.XQ``
#: (dead letters). Tests and the lab use their own name so they never touch a
#: developer's running instance.
QUEUE_NAME = _str("QUEUE_NAME", "add_followers")
#: ``quorum``: the three queues are quorum queues, replicated on every node of
#: a cluster, with a broker-side delivery limit and at-least-once dead
#: letters (RabbitMQ 3.10 or later). ``classic``: Dramatiq's own, on one node.
#: Changing it on existing queues: ``python -m actors.topology migrate``.
QUEUE_TYPE = _choice("QUEUE_TYPE", "quorum", ("quorum", "classic"))
#: Connections each process keeps open to PostgreSQL (one per thread in use).
DATABASE_MAX_CONNECTIONS = _int("DATABASE_MAX_CONNECTIONS", 20)

# --- Add followers -----------------------------------------------------------

#: The synchronous path adds followers in statements of this many rows,
#: on this many connections at once (PostgreSQL uses a core for each).
SYNC_STATEMENT_ROWS = _int("SYNC_STATEMENT_ROWS", 5000)
SYNC_PARALLELISM = _int("SYNC_PARALLELISM", 2)
#: Followers one message (one unit of work) adds. 1 reproduces the original's
#: §7 (a message per follower); a value >= count reproduces its §3.
FOLLOWERS_PER_MESSAGE = _int("FOLLOWERS_PER_MESSAGE", 1000)
MAX_FOLLOWERS_PER_REQUEST = _int("MAX_FOLLOWERS_PER_REQUEST", 100_000)
#: A job of more messages than this is split by a worker (one ``split_job``
#: message), so that the API answers at once whatever the count.
MAX_MESSAGES_PUBLISHED_INLINE = _int("MAX_MESSAGES_PUBLISHED_INLINE", 20)
#: Messages published, then confirmed by RabbitMQ, at once (one round trip
#: per batch); also the outbox rows a relay claims at once.
PUBLISH_BATCH_SIZE = _int("PUBLISH_BATCH_SIZE", 1000)

# --- The outbox ----------------------------------------------------------------

#: How often each process's relay looks at the outbox when nothing woke it
#: (rows a dead process left behind, a backlog after a RabbitMQ outage).
OUTBOX_SWEEP_MS = _int("OUTBOX_SWEEP_MS", 1000)
#: A busy relay (its last batch carried more than one row) starts a batch at
#: most this long after its previous one: the rows committed meanwhile go
#: out together. A batch's claim, confirm and commit cost the same whatever
#: its size (a batch of 1 row ~400 us of CPU, of 10 rows ~70 us a row); a
#: relay sending a row at a time sends each at once.
OUTBOX_LINGER_MS = _int("OUTBOX_LINGER_MS", 5)
#: Above this many unsent messages (RabbitMQ down for long), the API answers
#: 503 with Retry-After instead of letting the outbox grow without bound.
OUTBOX_MAX_PENDING = _int("OUTBOX_MAX_PENDING", 100_000)
#: How long the first answer to a request with an Idempotency-Key is kept.
IDEMPOTENCY_KEY_TTL_H = _int("IDEMPOTENCY_KEY_TTL_H", 24)

# --- Workers -----------------------------------------------------------------

#: Retries of a failing unit before it is dead-lettered, with exponential
#: backoff between MIN_BACKOFF_MS and MAX_BACKOFF_MS.
MAX_RETRIES = _int("MAX_RETRIES", 5)
MIN_BACKOFF_MS = _int("MIN_BACKOFF_MS", 1000)
MAX_BACKOFF_MS = _int("MAX_BACKOFF_MS", 30_000)
#: Soft limit of one unit: Dramatiq's TimeLimit raises inside the actor.
TIME_LIMIT_MS = _int("TIME_LIMIT_MS", 60_000)
#: Hard limit of one unit: a unit still running this long (blocked in a
#: sleep, a socket, a C call that TimeLimit cannot interrupt) gets its worker
#: process killed, which frees the slot; 0 turns it off.
HARD_TIME_LIMIT_MS = _int("HARD_TIME_LIMIT_MS", 120_000)
#: Deliveries of one message that may start before it is dead-lettered; they
#: are counted in PostgreSQL, so a worker crash cannot reset them (quorum
#: queues also get a broker-side limit one delivery above). 0 = off.
MAX_DELIVERIES = _int("MAX_DELIVERIES", 3)
#: Apply the units of each user in publish order (users still run in
#: parallel); takes effect for jobs created while it is set.
ORDERED_PER_USER = _bool("ORDERED_PER_USER", False)
#: Seconds between the heartbeats each worker process writes (0: none); a
#: process silent for 3 intervals shows as gone in GET /api/v1/workers.
HEARTBEAT_INTERVAL_S = _int("HEARTBEAT_INTERVAL_S", 5)
#: PostgreSQL cancels any statement that runs longer than this.
STATEMENT_TIMEOUT_MS = _int("STATEMENT_TIMEOUT_MS", 30_000)

# --- Passwords ---------------------------------------------------------------

#: scrypt cost (N). 2**14 is the stdlib's recommendation for interactive use.
PASSWORD_HASH_COST = _int("PASSWORD_HASH_COST", 2**14)

# --- API ---------------------------------------------------------------------

#: Where clients connect: nginx under ``./run serve`` (gunicorn itself when
#: nginx is not installed). Rendered into deploy/nginx.conf.template.
LISTEN = _str("LISTEN", "127.0.0.1:8000")
#: gunicorn's own address, behind nginx.
API_BIND = _str("API_BIND", "127.0.0.1:8001")
#: Whether ``./run serve`` puts nginx in front of gunicorn when nginx is
#: installed; false serves gunicorn alone on LISTEN (a proxy of your own in
#: front, say).
SERVE_NGINX = _bool("SERVE_NGINX", True)
#: Peers whose X-Forwarded-For (the client's address) and X-Forwarded-Proto
#: gunicorn believes, comma-separated addresses or networks, "*" for any:
#: the proxy only (gunicorn reads the same variable).
FORWARDED_ALLOW_IPS = _str("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
#: gunicorn worker processes. One, on 2 cores that PostgreSQL, RabbitMQ and
#: the workers share: a second process adds a second relay (smaller
#: batches) and switching, not a core nobody else needs (with threads, 1 x 8
#: beat 2 x 4: docs/benchmark.md). About the cores it may have to itself, on
#: an API host of its own.
API_WORKERS = _int("API_WORKERS", 1)
#: Connections one gunicorn worker serves at once (its gevent worker's
#: ``worker_connections``), each on a greenlet: a request mostly waits for a
#: disk flush (PostgreSQL's commit) or a round trip. Beyond it, connections
#: wait in the listen backlog. Each request in flight holds one of the
#: process's DATABASE_MAX_CONNECTIONS, waiting up to 10 s for one when all
#: are taken.
API_WORKER_CONNECTIONS = _int("API_WORKER_CONNECTIONS", 100)

#: Request bodies larger than this are refused with 413.
MAX_BODY_BYTES = _int("MAX_BODY_BYTES", 64 * 1024)
#: Seconds a relay (or /health) waits for RabbitMQ before giving up on it.
BROKER_TIMEOUT_S = _int("BROKER_TIMEOUT_S", 5)

# --- API: authentication, metrics --------------------------------------------

#: When set, POST /api/v1/add-followers needs ``Authorization: Bearer <token>``
#: (401 without it). Unset: open, the developer default.
API_TOKEN = _str("API_TOKEN", "")
#: Where gunicorn's worker processes keep their Prometheus metrics (emptied
#: when gunicorn starts). The default is per bind address, so that two
#: instances on one machine never share it.
API_METRICS_DIR = _str(
    "API_METRICS_DIR",
    os.path.join(tempfile.gettempdir(), "followers-api-metrics-" + re.sub(r"[^\w.-]", "_", API_BIND)),
)

#: How long a console login lasts (seconds).
CONSOLE_SESSION_S = _int("CONSOLE_SESSION_S", 12 * 3600)
#: Where the console finds the lab's HTML reports (``python -m lab compare``
#: and ``python -m lab all`` write them there): its Lab page links them.
LAB_REPORTS_DIR = _str("LAB_REPORTS_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts", "lab"))

# --- Logging -----------------------------------------------------------------

LOG_LEVEL = _str("LOG_LEVEL", "INFO")
#: Workers serve Dramatiq's Prometheus metrics (port: dramatiq_prom_port, 9191).
WORKER_METRICS = _bool("WORKER_METRICS", True)
#: "json" makes the workers' per-unit lines JSON objects; anything else, key=value text.
LOG_FORMAT = _str("LOG_FORMAT", "text")

# --- The harness (tests, lab, bench) -----------------------------------------

#: Prefix of the database and queue names of every stack the harness starts,
#: so that two checkouts on one machine can run their tests side by side.
STACK_PREFIX = _str("STACK_PREFIX", "")

# --- The lab (python -m lab) ---------------------------------------------------
# Read only by the lab's own worker and API modules (lab/workers, lab/apps),
# which the lab runs in place of the production ones; the production code
# never reads them. Each is off at 0 or empty.

FAULT_CRASH_AFTER_COMMIT = _bool("FAULT_CRASH_AFTER_COMMIT", False)  # on a unit's first delivery
FAULT_FAIL_FIRST_ATTEMPTS = _int("FAULT_FAIL_FIRST_ATTEMPTS", 0)  # raise before the effect
FAULT_SLEEP_WHEN_COUNT = _int("FAULT_SLEEP_WHEN_COUNT", 0)  # a unit of this many followers...
FAULT_SLEEP_S = _int("FAULT_SLEEP_S", 1000)  # ...blocks in time.sleep this long
FAULT_CRASH_ON_LOGIN = _str("FAULT_CRASH_ON_LOGIN", "")  # os._exit on this follower login
FAULT_RAISE_ON_LOGIN = _str("FAULT_RAISE_ON_LOGIN", "")  # exception on this follower login
FAULT_UNIT_DELAY_MS = _int("FAULT_UNIT_DELAY_MS", 0)  # every unit takes this much longer
#: Percent of async requests whose API process is SIGKILLed between the
#: commit of the job and the hand-off of its messages.
FAULT_API_KILL_PERCENT = _int("FAULT_API_KILL_PERCENT", 0)
