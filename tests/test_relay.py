"""The outbox relay against the real PostgreSQL, with publishers that stand
in for RabbitMQ: what it sends, what it keeps when the broker fails, that
two relays never send one row twice, and that a relay killed in the middle
of a publish loses nothing."""

import subprocess
import sys
import threading
import time

import pytest

from actors.publishing import BrokerUnavailable
from actors.relay import Relay
from db import Outbox
from tests.conftest import ROOT


class Recorder:
    """A publisher that keeps what it was given."""

    def __init__(self, *, fail=False, delay=0.0):
        self.fail = fail
        self.delay = delay
        self.sent = []
        self.lock = threading.Lock()

    def publish(self, messages):
        messages = list(messages)
        if self.fail:
            raise BrokerUnavailable("RabbitMQ is unreachable: test")
        time.sleep(self.delay)
        with self.lock:
            self.sent.extend(message.kwargs["n"] for message in messages)
        return len(messages)


def fill(count):
    for n in range(count):
        Outbox.add("q", "add_followers", {"n": n})


def relay_with(publisher, batch_size=10):
    return Relay(publisher=publisher, batch_size=batch_size, sweep_interval=60)


def test_a_relay_publishes_every_row_in_order_and_empties_the_outbox(db):
    fill(25)
    publisher = Recorder()
    assert relay_with(publisher).drain() == 25
    assert publisher.sent == list(range(25))
    assert Outbox.backlog() == (0, None)


def test_with_the_broker_down_the_rows_stay_and_go_out_later(db):
    fill(5)
    relay = relay_with(Recorder(fail=True))
    with pytest.raises(BrokerUnavailable):
        relay.drain()
    pending, age = Outbox.backlog()
    assert pending == 5 and age >= 0
    relay.publisher = Recorder()
    assert relay.drain() == 5 and relay.publisher.sent == list(range(5))


def test_only_the_relays_own_commit_skips_the_disk_flush(db):
    def synchronous_commit():
        return db.execute_sql("SHOW synchronous_commit").fetchone()[0]

    fill(1)
    with db.atomic():
        assert len(Outbox.claim(10)) == 1
        assert synchronous_commit() == "off"  # losing this deletion only sends the row again
    # The same pooled connection next commits a request's job: that commit
    # must wait for the disk again, since a 202 promises it.
    assert synchronous_commit() == "on"


def test_two_relays_never_send_a_row_twice(db):
    fill(200)
    publisher = Recorder(delay=0.01)
    relays = [relay_with(publisher, batch_size=7) for _ in range(2)]
    threads = [threading.Thread(target=relay.drain) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(publisher.sent) == list(range(200))  # each row once, by one relay or the other


KILLED_MID_PUBLISH = """
import os, signal
from actors.relay import Relay
class Dies:
    def publish(self, messages):
        list(messages)  # handed over to RabbitMQ, say; then the process is killed before the commit
        os.kill(os.getpid(), signal.SIGKILL)
Relay(publisher=Dies(), batch_size=100, sweep_interval=60).drain()
"""


def test_a_relay_killed_in_the_middle_of_a_publish_loses_nothing(db):
    fill(30)
    result = subprocess.run([sys.executable, "-c", KILLED_MID_PUBLISH], cwd=ROOT, timeout=60)  # the tests' database
    assert result.returncode == -9
    assert Outbox.backlog()[0] == 30  # its claim died with it
    publisher = Recorder()
    assert relay_with(publisher, batch_size=100).drain() == 30  # sent again: a duplicate, never a loss
    assert publisher.sent == list(range(30))


class Batches(Recorder):
    """A publisher that keeps each batch's size and when it came."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def publish(self, messages):
        count = super().publish(messages)
        self.batches.append((count, time.monotonic()))
        return count


def relay_sends(publisher, rows):
    """Wait until ``publisher`` has been given ``rows`` rows in all."""
    deadline = time.monotonic() + 5
    while sum(count for count, _ in publisher.batches) < rows and time.monotonic() < deadline:
        time.sleep(0.01)


def commit_one_every(seconds, count, relay):
    """Commit a row and wake the relay, as a request does, ``count`` times;
    returns when each woke it."""
    woken = []
    for _ in range(count):
        fill(1)
        woken.append(time.monotonic())
        relay.wake()
        time.sleep(seconds)
    return woken


def test_a_busy_relay_lingers_so_that_rows_share_a_batch(db):
    publisher = Batches()
    # No sweep during the suite: this relay's thread outlives the test.
    relay = Relay(publisher=publisher, batch_size=100, sweep_interval=3600, linger=0.3)
    fill(3)  # rows come faster than batches go: the next batch waits for more
    woken = time.monotonic()
    relay.wake()
    time.sleep(0.05)
    commit_one_every(0.02, 5, relay)  # while it lingers
    relay_sends(publisher, 8)
    publisher.fail = True  # from now on, nothing this relay claims is kept
    (first, first_at), (second, second_at) = publisher.batches
    assert first == 3 and first_at - woken < 0.2  # it was idle: at once
    assert second == 5 and second_at - first_at >= 0.3 - 0.05  # busy: one batch, after the linger
    assert Outbox.backlog() == (0, None)


def test_a_relay_sending_one_row_at_a_time_does_not_linger(db):
    publisher = Batches()
    relay = Relay(publisher=publisher, batch_size=100, sweep_interval=3600, linger=0.3)
    woken = commit_one_every(0.1, 3, relay)  # sequential requests: each hand-off at once
    relay_sends(publisher, 3)
    publisher.fail = True
    assert [count for count, _ in publisher.batches] == [1, 1, 1]
    assert all(sent_at - woke < 0.1 for (_, sent_at), woke in zip(publisher.batches, woken, strict=True))
