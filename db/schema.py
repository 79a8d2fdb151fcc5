"""Create the database and bring its schema up to date; safe to run again.

Every table is created with ``safe=True`` (IF NOT EXISTS), so a second run
changes nothing. A later change to an existing table goes in ``UPGRADES`` as
an idempotent statement (``ADD COLUMN IF NOT EXISTS`` and the like).
"""

import contextlib
import logging

import psycopg2
from psycopg2 import sql

from .database import connect_params, database
from .idempotency import IdempotencyKey
from .messages import MESSAGE_MODELS
from .models import MODELS, FollowerCount
from .outbox import Outbox
from .units import JOB_MODELS
from .workers import WORKER_MODELS

ALL_MODELS = MODELS + JOB_MODELS + MESSAGE_MODELS + WORKER_MODELS + [Outbox, IdempotencyKey]


def _rename_column(table, old, new):
    """An idempotent RENAME COLUMN (PostgreSQL has no IF EXISTS for it)."""
    return f"""
        DO $$ BEGIN
            IF EXISTS (SELECT 1 FROM information_schema.columns
                       WHERE table_schema = current_schema() AND table_name = '{table}' AND column_name = '{old}')
            THEN ALTER TABLE {table} RENAME COLUMN {old} TO {new};
            END IF;
        END $$"""

logger = logging.getLogger(__name__)

#: Idempotent statements that bring an older schema up to date, in order.
UPGRADES = [
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS ordered BOOLEAN NOT NULL DEFAULT FALSE",
    "DROP INDEX IF EXISTS subscriptions_author_id",  # redundant with (author_id, follower_id)
    # One word for the unit of work: unit (it was also "chunk" and "message").
    _rename_column("job_units", "chunk", "unit"),
    _rename_column("jobs", "chunk_size", "unit_size"),
    _rename_column("jobs", "messages", "units"),
    _rename_column("message_events", "chunk", "unit"),
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS enqueued BOOLEAN NOT NULL DEFAULT TRUE",
    # Follower counts came after subscriptions: count those made before, once
    # (while the table is empty); from then on, the statements that
    # subscribe keep the counts themselves.
    f"""DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM follower_counts) THEN {FollowerCount.RECOUNT}; END IF;
    END $$""",
    "ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS job_id INTEGER",
    _rename_column("dead_letters", "chunk", "unit"),
    "ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS unit INTEGER",
    # What a page of one status starts from (db/job_listing.py, PAGE_CANDIDATES_SQL).
    # Units are written failed, and jobs marked cancelled or failed, rarely:
    # those indexes stay small. Jobs still 'queued' in their column are the
    # ones in flight, and the few finished since a reader last settled them
    # (Job.settle); each costs one index entry, made by its INSERT.
    "CREATE INDEX IF NOT EXISTS job_units_failed ON job_units (job_id) WHERE status = 'failed'",
    "CREATE INDEX IF NOT EXISTS jobs_cancelled_or_failed ON jobs (id) WHERE status IN ('cancelled', 'failed')",
    "CREATE INDEX IF NOT EXISTS jobs_unsettled ON jobs (id) WHERE status = 'queued'",
    # Its place is taken by jobs_cancelled_or_failed: settled jobs ('done') are not in it.
    "DROP INDEX IF EXISTS jobs_marked",
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS turn_passed BOOLEAN NOT NULL DEFAULT FALSE",
]


@contextlib.contextmanager
def _maintenance_cursor(url):
    """A cursor on the server's maintenance database, in autocommit, and the
    name of the database in ``url``: CREATE and DROP DATABASE cannot run in
    a transaction, nor in the database they act on."""
    params = connect_params(url)
    name = params.pop("database")
    conn = psycopg2.connect(dbname="postgres", connect_timeout=5, **params)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            yield cursor, name
    finally:
        conn.close()


def create_database(url=None):
    """Create the database named in the URL if it does not exist yet.
    Returns True when it was created."""
    with _maintenance_cursor(url) as (cursor, name):
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cursor.fetchone():
            return False
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def drop_database(url=None):
    """Drop the database named in the URL (tests and the lab reset theirs)."""
    with _maintenance_cursor(url) as (cursor, name):
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def create_schema():
    with database.connection_context():
        with database.atomic():
            database.create_tables(ALL_MODELS, safe=True)
            for statement in UPGRADES:
                database.execute_sql(statement)


def truncate_all():
    """Empty every table (tests and the lab start each run from nothing)."""
    tables = ", ".join(model._meta.table_name for model in ALL_MODELS)
    with database.connection_context():
        database.execute_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


def set_up(url=None):
    created = create_database(url)
    create_schema()
    return created
