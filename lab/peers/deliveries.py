"""The lab's record of each delivery a peer's worker runs (``peer_deliveries``):
a row when it starts, so that a worker that dies under it leaves it
``running``, and its end with an outcome. The peers' counterpart of our
workers' ``message_events``; its rows read the same way (lab.peers.observe).

The table is the lab's, made by the compare runner in the stack's database,
outside db/schema.py: production never has it.
"""

import logging
import os
import threading

from peewee import PeeweeException

from db import database

logger = logging.getLogger("followers.lab.peers.deliveries")

TABLE = """
CREATE TABLE IF NOT EXISTS peer_deliveries (
    id BIGSERIAL PRIMARY KEY,
    message_id TEXT NOT NULL,
    user_id INTEGER,
    followers_login TEXT,
    first INTEGER,
    count INTEGER,
    pid INTEGER NOT NULL,
    thread TEXT NOT NULL,
    redelivered BOOLEAN NOT NULL,
    started TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    ended TIMESTAMPTZ,
    outcome TEXT NOT NULL DEFAULT 'running',
    error TEXT
)"""


def create_table(cursor):
    """An empty ``peer_deliveries`` (``cursor``: any DB-API cursor on the stack's database)."""
    cursor.execute(TABLE)
    cursor.execute("TRUNCATE peer_deliveries")


def started(message_id, user_id, followers_login, count, first, redelivered):
    """Record a delivery's start; returns its row id, or None if it could not be recorded."""
    try:
        with database.connection_context():
            cursor = database.execute_sql(
                "INSERT INTO peer_deliveries (message_id, user_id, followers_login, count, first, pid, thread,"
                " redelivered) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (str(message_id), user_id, followers_login, count, first, os.getpid(),
                 threading.current_thread().name, bool(redelivered)),
            )
            return cursor.fetchone()[0]
    except PeeweeException as error:  # the lab's bookkeeping never fails the unit
        logger.warning("could not record a delivery: %r", error)
        return None


def ended(row_id, outcome, error=None):
    if row_id is None:
        return
    try:
        with database.connection_context():
            database.execute_sql(
                "UPDATE peer_deliveries SET ended = clock_timestamp(), outcome = %s, error = %s WHERE id = %s",
                (outcome, None if error is None else f"{type(error).__name__}: {error}", row_id),
            )
    except PeeweeException as failure:
        logger.warning("could not record a delivery's end: %r", failure)
