"""Pure unit tests of the group commit that applies a worker process's
units of one job together (actors.unit_batches), with threads standing in
for Dramatiq's worker threads and fake statements."""

import threading
import time

import pytest

from actors.unit_batches import UnitBatches


class Statements:
    """Fake apply_one / apply_many that record their calls; a statement can
    be held "under way" until the test lets it finish."""

    def __init__(self, *, settle=None, fail_many=False, fail_one=()):
        self.calls = []
        self.committed = set()  # units whose statement has returned
        self.hold = threading.Event()
        self.hold.set()
        self.settle = settle  # units apply_many settles (default: all)
        self.fail_many = fail_many
        self.fail_one = set(fail_one)

    def apply_one(self, job_id, unit):
        self.calls.append(("one", job_id, unit))
        self.hold.wait(5)
        if unit in self.fail_one:
            raise ValueError(f"unit {unit} is bad")
        self.committed.add(unit)
        return f"alone {unit}"

    def apply_many(self, job_id, units):
        self.calls.append(("many", job_id, sorted(units)))
        self.hold.wait(5)
        if self.fail_many:
            raise RuntimeError("statement failed")
        settled = [u for u in units if self.settle is None or u in self.settle]
        self.committed.update(settled)
        return {u: f"together {u}" for u in settled}


def run(batches, statements, job_id, unit, results):
    """A worker thread: apply the unit; record what it got and whether its
    unit was committed when it returned (its message would be acked)."""
    try:
        outcome = batches.apply(job_id, unit)
    except Exception as error:  # noqa: BLE001 - recorded for the test to check
        outcome = error
    results[(job_id, unit)] = (outcome, unit in statements.committed)


def start(batches, statements, job_id, unit, results):
    thread = threading.Thread(target=run, args=(batches, statements, job_id, unit, results))
    thread.start()
    return thread


def wait_until_waiting(batches, job_id, count):
    deadline = time.monotonic() + 5
    while len(batches._waiting.get(job_id, [])) < count:
        assert time.monotonic() < deadline, "the units never queued up"
        time.sleep(0.005)


def under_way(statements, *, job_id=1, first=0, more=(1, 2, 3)):
    """Unit ``first`` of the job starts its statement, which is held; the
    ``more`` units come meanwhile; then the statement is let go."""
    batches = UnitBatches(apply_one=statements.apply_one, apply_many=statements.apply_many)
    results = {}
    statements.hold.clear()
    threads = [start(batches, statements, job_id, first, results)]
    deadline = time.monotonic() + 5
    while not statements.calls:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    threads += [start(batches, statements, job_id, unit, results) for unit in more]
    wait_until_waiting(batches, job_id, len(more))
    statements.hold.set()
    for thread in threads:
        thread.join(5)
    assert not any(thread.is_alive() for thread in threads), "a unit never came back"
    return results


def test_a_lone_unit_runs_alone_with_its_own_statement():
    statements = Statements()
    batches = UnitBatches(apply_one=statements.apply_one, apply_many=statements.apply_many)
    assert batches.apply(1, 0) == "alone 0"
    assert batches.apply(1, 1) == "alone 1"
    assert statements.calls == [("one", 1, 0), ("one", 1, 1)]
    assert batches._busy == set() and batches._waiting == {}


def test_units_that_come_during_a_statement_share_the_next_and_each_returns_after_its_commit():
    statements = Statements()
    results = under_way(statements)
    assert statements.calls == [("one", 1, 0), ("many", 1, [1, 2, 3])]
    assert results == {
        (1, 0): ("alone 0", True),
        (1, 1): ("together 1", True),
        (1, 2): ("together 2", True),
        (1, 3): ("together 3", True),
    }


def test_a_unit_the_batch_does_not_settle_runs_alone_in_its_own_thread_and_fails_there_only():
    statements = Statements(settle={1, 3}, fail_one={2})
    results = under_way(statements)
    assert statements.calls[:2] == [("one", 1, 0), ("many", 1, [1, 2, 3])]
    assert statements.calls[2:] == [("one", 1, 2)]
    assert str(results[(1, 2)][0]) == "unit 2 is bad"
    assert results[(1, 1)] == ("together 1", True) and results[(1, 3)] == ("together 3", True)


def test_when_the_batch_statement_fails_every_unit_runs_alone():
    statements = Statements(fail_many=True)
    results = under_way(statements)
    assert sorted(statements.calls[2:]) == [("one", 1, 1), ("one", 1, 2), ("one", 1, 3)]
    assert all(results[(1, unit)] == (f"alone {unit}", True) for unit in (1, 2, 3))


def test_a_unit_delivered_twice_into_one_batch_runs_its_second_copy_alone():
    statements = Statements()
    results = under_way(statements, more=(1, 1))
    assert statements.calls == [("one", 1, 0), ("many", 1, [1, 1]), ("one", 1, 1)]
    assert results[(1, 1)][1] is True


def test_a_unit_of_another_job_does_not_wait_for_a_statement_under_way():
    statements = Statements()
    batches = UnitBatches(apply_one=statements.apply_one, apply_many=statements.apply_many)
    results = {}
    statements.hold.clear()
    held = start(batches, statements, 1, 0, results)
    while not statements.calls:  # job 1's statement has started, and is held
        time.sleep(0.005)
    other = Statements()
    batches.apply_one = other.apply_one  # job 2's statement is not held
    assert batches.apply(2, 7) == "alone 7"
    assert held.is_alive()  # job 1's is still under way
    statements.hold.set()
    held.join(5)
    assert results[(1, 0)] == ("alone 0", True)


@pytest.mark.parametrize("fail_many", [False, True])
def test_after_a_batch_the_job_is_free_and_a_lone_unit_runs_alone_again(fail_many):
    statements = Statements(fail_many=fail_many)
    batches = UnitBatches(apply_one=statements.apply_one, apply_many=statements.apply_many)
    results = {}
    statements.hold.clear()
    threads = [start(batches, statements, 1, 0, results)]
    while not statements.calls:
        time.sleep(0.005)
    threads += [start(batches, statements, 1, unit, results) for unit in (1, 2)]
    wait_until_waiting(batches, 1, 2)
    statements.hold.set()
    for thread in threads:
        thread.join(5)
    assert sorted(results) == [(1, 0), (1, 1), (1, 2)]
    assert (batches._busy, batches._waiting) == (set(), {})
    del statements.calls[:]
    assert batches.apply(1, 9) == "alone 9" and statements.calls == [("one", 1, 9)]
