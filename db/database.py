"""The one PostgreSQL database object every model and process shares.

Nothing connects at import: gunicorn and ``dramatiq`` fork their workers after
importing the code, and a connection must never cross a fork. Each thread
takes a connection from the pool when it first runs a query.
"""

from playhouse.db_url import parse
from playhouse.pool import PooledPostgresqlDatabase

import settings


def connect_params(url=None):
    """Keyword arguments for psycopg2 from a ``postgresql://`` URL."""
    return parse(url or settings.DATABASE_URL, unquote_password=True, unquote_user=True)


class PostgresqlPool(PooledPostgresqlDatabase):
    """Peewee's pool, without the ``SELECT 1`` it sends on every check-out
    of an idle connection: that round trip was one of a unit's seven. A
    connection that died meanwhile (PostgreSQL restarted) fails its next
    statement instead; psycopg2 then marks it closed, the pool drops it, and
    the caller's error handling takes over (a worker's unit is retried; the
    API answers 503 once)."""

    def _is_closed(self, conn):
        return bool(conn.closed) or self._adapter.txn_status(conn) == self._adapter.txn_unknown


database = PostgresqlPool(
    **connect_params(),
    max_connections=settings.DATABASE_MAX_CONNECTIONS,
    # Without a timeout a full pool raises MaxConnectionsExceeded at once.
    timeout=10,
    # Drop connections idle for 5 minutes, so a restarted PostgreSQL heals.
    stale_timeout=300,
    connect_timeout=5,
    application_name="followers",
    # A query stuck on a lock or a runaway plan is cancelled, not waited on forever.
    options=f"-c statement_timeout={settings.STATEMENT_TIMEOUT_MS}",
)

