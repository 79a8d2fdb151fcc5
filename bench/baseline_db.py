"""The baselines' own database, with the service's schema (same tables, same
indexes), so that a baseline and the service write the same rows."""

import os
import subprocess
import sys

import psycopg2
from peewee import PostgresqlDatabase

from db import database as service_database
from db.database import connect_params
from db.models import Subscription, User
from harness import ROOT

# The baselines in Peewee use the service's own models, bound to this database.
database = PostgresqlDatabase(None)


def reset(url):
    """Drop and re-create the database at ``url`` with the service's schema."""
    result = subprocess.run(
        [sys.executable, "-c", "import db.schema as s; s.drop_database(); s.set_up()"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode:
        raise RuntimeError(f"could not set up the baselines' database {url}:\n{result.stderr}")


def connect(url):
    """Bind the models to the database at ``url`` and return a psycopg2
    connection to it too (for the baselines below Peewee). The service's
    own database object (``db.database``, a pool) points there as well,
    for row (1s), which runs the service's sync code in this process."""
    database.init(**connect_params(url))
    database.bind([User, Subscription])
    service_database.init(**connect_params(url))
    return psycopg2.connect(**connect_params(url))


def close():
    """Close the Peewee baselines' connection and the service pool's."""
    database.close()
    service_database.close_all()


def create_author(conn, login):
    with conn, conn.cursor() as cursor:
        cursor.execute(
            "INSERT INTO users (login, password, age, is_active) VALUES (%s, 'x', 30, TRUE) RETURNING id", (login,)
        )
        return cursor.fetchone()[0]


def insert_follower(cursor, author_id, login, password_hash, age):
    """One follower as a per-message consumer adds it: the user, skipped if
    its login exists, then its subscription (two statements; the caller
    commits). The pika and bare-Dramatiq baselines share it, so that they
    differ only in how messages reach them."""
    cursor.execute(
        "INSERT INTO users (login, password, age, is_active) VALUES (%s, %s, %s, TRUE)"
        " ON CONFLICT (login) DO NOTHING RETURNING id",
        (login, password_hash, age),
    )
    row = cursor.fetchone()
    if row:
        cursor.execute("INSERT INTO subscriptions (author_id, follower_id) VALUES (%s, %s)", (author_id, row[0]))
