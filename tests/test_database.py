"""db/database.py's pool where the API runs it: under gevent, with
psycopg2 waiting through gevent (gunicorn.conf.py's psycogreen)."""

import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT

UNDER_GEVENT = """
from gevent import monkey
monkey.patch_all()
from psycogreen.gevent import patch_psycopg
patch_psycopg()
import time
import gevent
from peewee import OperationalError
from db.database import database

ticks = []
ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.05)) for _ in range(1000)])
started = time.monotonic()
try:
    database.connect()
    print("connected")
except OperationalError as error:
    print(f"{time.monotonic() - started:.1f} {len(ticks)} {error}")
"""


@pytest.mark.slow  # waits out the 5 s connect timeout
def test_a_postgresql_that_never_answers_fails_the_connection_after_its_timeout():
    """libpq ignores connect_timeout when it does not block, as under
    gevent: without the pool's own bound the connection waited forever."""
    silent = socket.socket()  # accepts connections (the kernel's backlog), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"postgresql://nobody@127.0.0.1:{silent.getsockname()[1]}/nothing?sslmode=disable"
    try:
        result = subprocess.run(
            [sys.executable, "-c", UNDER_GEVENT], cwd=ROOT, env={"DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=30,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("the connection to a silent PostgreSQL never gave up") from None
    finally:
        silent.close()
    assert result.returncode == 0, result.stderr
    seconds, ticks, message = result.stdout.split(" ", 2)
    assert 4 <= float(seconds) < 10, result.stdout  # connect_timeout is 5 s
    assert "did not answer within 5 s" in message
    assert int(ticks) > 10, "other greenlets stopped while the connection waited"
