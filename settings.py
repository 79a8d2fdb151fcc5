"""Every setting of the service, read from the environment once, at import.

This is the only module that reads the environment (Dramatiq's own
``dramatiq_*`` variables excepted). The defaults work on a developer machine
with PostgreSQL and RabbitMQ on 127.0.0.1; tests and the lab override them by
setting the variables before they start a process.
"""

import os


def _int(name, default):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"setting {name}={raw!r} is not a whole number") from None


def _bool(name, default):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _str(name, default):
    return os.environ.get(name) or default


# --- Connections -------------------------------------------------------------

DATABASE_URL = _str("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/followers")
RABBITMQ_URL = _str("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
#: Dramatiq also declares ``<QUEUE_NAME>.DQ`` (delays) and ``<QUEUE_NAME>.XQ``
#: (dead letters). Tests and the lab use their own name so they never touch a
#: developer's running instance.
QUEUE_NAME = _str("QUEUE_NAME", "add_followers")
#: Connections each process keeps open to PostgreSQL (one per thread in use).
DATABASE_MAX_CONNECTIONS = _int("DATABASE_MAX_CONNECTIONS", 20)

# --- Add followers -----------------------------------------------------------

#: Followers one message (one unit of work) adds. 1 reproduces the original's
#: §7 (a message per follower); a value >= count reproduces its §3.
FOLLOWERS_PER_MESSAGE = _int("FOLLOWERS_PER_MESSAGE", 1000)
MAX_FOLLOWERS_PER_REQUEST = _int("MAX_FOLLOWERS_PER_REQUEST", 100_000)
#: A job of more messages than this is split by a worker (one ``split_job``
#: message), so that the API answers at once whatever the count.
MAX_MESSAGES_PUBLISHED_INLINE = _int("MAX_MESSAGES_PUBLISHED_INLINE", 200)
#: Messages published per broker transaction (one round trip per batch).
PUBLISH_BATCH_SIZE = _int("PUBLISH_BATCH_SIZE", 1000)

# --- Workers -----------------------------------------------------------------

#: Retries of a failing unit before it is dead-lettered, with exponential
#: backoff between MIN_BACKOFF_MS and MAX_BACKOFF_MS.
MAX_RETRIES = _int("MAX_RETRIES", 5)
MIN_BACKOFF_MS = _int("MIN_BACKOFF_MS", 1000)
MAX_BACKOFF_MS = _int("MAX_BACKOFF_MS", 30_000)
#: Soft limit of one unit: Dramatiq's TimeLimit raises inside the actor.
TIME_LIMIT_MS = _int("TIME_LIMIT_MS", 60_000)
#: PostgreSQL cancels any statement of a worker that runs longer than this.
STATEMENT_TIMEOUT_MS = _int("STATEMENT_TIMEOUT_MS", 30_000)

# --- Passwords ---------------------------------------------------------------

#: scrypt cost (N). 2**14 is the stdlib's recommendation for interactive use.
PASSWORD_HASH_COST = _int("PASSWORD_HASH_COST", 2**14)

# --- API ---------------------------------------------------------------------

API_BIND = _str("API_BIND", "127.0.0.1:8000")
API_WORKERS = _int("API_WORKERS", 2)

#: Request bodies larger than this are refused with 413.
MAX_BODY_BYTES = _int("MAX_BODY_BYTES", 64 * 1024)
#: Seconds the API waits for RabbitMQ before it answers 503.
BROKER_TIMEOUT_S = _int("BROKER_TIMEOUT_S", 5)

# --- Logging -----------------------------------------------------------------

LOG_LEVEL = _str("LOG_LEVEL", "INFO")
