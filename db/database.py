"""The one PostgreSQL database object every model and process shares.

Nothing connects at import: gunicorn and ``dramatiq`` fork their workers after
importing the code, and a connection must never cross a fork. Each thread
takes a connection from the pool when it first runs a query.
"""

import re
import time

import psycopg2.extensions
from peewee import Psycopg2Adapter
from playhouse.db_url import parse
from playhouse.pool import PooledPostgresqlDatabase

import settings


def connect_params(url=None):
    """Keyword arguments for psycopg2 from a ``postgresql://`` URL."""
    return parse(url or settings.DATABASE_URL, unquote_password=True, unquote_user=True)


class Prepared:
    """A statement that PostgreSQL parses and plans once per connection, then
    only executes. Written with ``%(name)s`` parameters like any other;
    ``types`` names each parameter's SQL type, in order.

    Worth it for a long statement run once per message: for the unit
    statement, parsing and planning cost twice its execution."""

    def __init__(self, name, sql, **types):
        self.name = name
        self.parameters = list(types)
        number = {parameter: index for index, parameter in enumerate(self.parameters, 1)}
        body = re.sub(r"%\((\w+)\)s", lambda match: f"${number[match.group(1)]}", sql)
        self.prepare = f"PREPARE {name} ({', '.join(types.values())}) AS {body}"
        self.execute = f"EXECUTE {name} ({', '.join(['%s'] * len(types))})"


class PreparingConnection(psycopg2.extensions.connection):
    """A psycopg2 connection that knows which statements it has prepared (a
    prepared statement lives as long as its session, transactions or not)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prepared = set()


class BoundedConnectAdapter(Psycopg2Adapter):
    """Peewee's psycopg2 adapter, bounding a new connection under gevent as
    libpq's ``connect_timeout`` bounds it elsewhere. libpq applies that
    timeout only while it blocks; under the API's gevent worker psycopg2
    connects without blocking (psycogreen's wait callback, gunicorn.conf.py),
    and a PostgreSQL that accepted and never answered held the request
    forever (tests/test_database.py). Only the creation of a connection is
    bounded, as libpq bounds it: taking one from the pool costs nothing
    more. gevent is imported only then: the workers never load it."""

    def connect(self, db, **params):
        if psycopg2.extensions.get_wait_callback() is None:
            return super().connect(db, **params)
        import gevent

        seconds = params.get("connect_timeout")  # None: unbounded, as libpq without it
        with gevent.Timeout(seconds, psycopg2.OperationalError(f"PostgreSQL did not answer within {seconds} s")):
            return super().connect(db, **params)


class PostgresqlPool(PooledPostgresqlDatabase):
    """Peewee's pool, pinging a connection on check-out only when it has sat
    unused for a second or more. Peewee pings (``SELECT 1``) on every
    check-out: one round trip of a unit's few, paid to guard against a
    PostgreSQL restart that a busy connection meets at once anyway (its
    statement fails, psycopg2 marks it closed, the pool drops it, and the
    caller's error handling takes over: a unit is retried, a request gets a
    503). An idle connection is still checked before use."""

    PING_AFTER_IDLE_S = 1.0
    psycopg2_adapter = BoundedConnectAdapter

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._returned_at = {}  # connection key -> time it came back to the pool

    def _is_closed(self, conn):
        if conn.closed:
            return True
        returned_at = self._returned_at.get(self.conn_key(conn), 0)
        if time.monotonic() - returned_at < self.PING_AFTER_IDLE_S:
            return self._adapter.txn_status(conn) == self._adapter.txn_unknown
        return super()._is_closed(conn)

    def _close(self, conn, close_conn=False):
        self._returned_at[self.conn_key(conn)] = time.monotonic()
        super()._close(conn, close_conn)

    def execute_prepared(self, statement, params):
        """Run a ``Prepared`` statement with ``params`` (a dict), preparing it
        first on this thread's connection if it has not been yet."""
        conn = self.connection()
        if statement.name not in conn.prepared:
            self.execute_sql(statement.prepare)
            conn.prepared.add(statement.name)
        return self.execute_sql(statement.execute, [params[name] for name in statement.parameters])


database = PostgresqlPool(
    **connect_params(),
    max_connections=settings.DATABASE_MAX_CONNECTIONS,
    # Without a timeout a full pool raises MaxConnectionsExceeded at once.
    timeout=10,
    # Drop connections idle for 5 minutes, so a restarted PostgreSQL heals.
    stale_timeout=300,
    connect_timeout=5,
    connection_factory=PreparingConnection,
    application_name="followers",
    # A query stuck on a lock or a runaway plan is cancelled, not waited on forever.
    options=f"-c statement_timeout={settings.STATEMENT_TIMEOUT_MS}",
)

