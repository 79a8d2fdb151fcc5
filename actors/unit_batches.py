"""Group commit for units of work: the units of one job that a worker
process's threads hold at the same time are applied in one statement.

Dramatiq hands one message to each worker thread. A thread that brings a
unit while another thread's statement for the same job is under way waits
for it to end, and the units that gathered meanwhile go in the next
statement, which one of their threads runs for all. No unit ever waits for
a batch to fill: a unit that comes alone runs alone, with the statement it
always had, and batches only form when units queue up anyway.

Each thread still returns (and its message is acked) only once its own unit
is committed: a batch changes how many units a commit holds, not when a
message is acked. A unit the batch statement does not settle (a rare path:
an unknown or cancelled job, an ordered one, a unit out of range), or every
unit of a batch whose statement failed, is applied alone by its own thread,
so its outcome is the one it would have had without batching.
"""

import logging
import threading

logger = logging.getLogger(f"followers.{__name__}")


class _Waiter:
    """One thread's unit, waiting for a statement."""

    __slots__ = ("unit", "event", "leads", "settled", "result")

    def __init__(self, unit):
        self.unit = unit
        self.event = threading.Event()
        self.leads = False  # handed the next statement of its job
        self.settled = False
        self.result = None


class UnitBatches:
    """Applies units of work, those of one job that meet in a process
    together.

    Parameters:
      apply_one(callable): ``(job_id, unit) -> result``; applies one unit
        alone and raises what it raises.
      apply_many(callable): ``(job_id, units) -> {unit: result}``; applies
        several units in one statement and returns the results of those it
        settled.
    """

    def __init__(self, *, apply_one, apply_many):
        self.apply_one = apply_one
        self.apply_many = apply_many
        self._lock = threading.Lock()
        self._waiting = {}  # job id -> [_Waiter] for its next statement
        self._busy = set()  # job ids with a statement under way in this process

    def apply(self, job_id, unit):
        """Apply unit ``unit`` of job ``job_id``; returns once it is
        committed, with what ``apply_one`` would have returned."""
        waiter = _Waiter(unit)
        with self._lock:
            self._waiting.setdefault(job_id, []).append(waiter)
            leads = job_id not in self._busy
            self._busy.add(job_id)
        if not leads:
            waiter.event.wait()
            leads = waiter.leads
        if leads:
            with self._lock:
                batch = self._waiting.pop(job_id)
            try:
                if len(batch) == 1:
                    return self.apply_one(job_id, unit)
                self._settle(job_id, batch)
            finally:
                self._hand_over(job_id, batch)
        if waiter.settled:
            return waiter.result
        return self.apply_one(job_id, unit)

    def _settle(self, job_id, batch):
        try:
            results = self.apply_many(job_id, [waiter.unit for waiter in batch])
        except Exception as error:  # noqa: BLE001 - each unit then runs alone and meets its own outcome
            logger.warning("job %s: %d units in one statement failed (%r); applying each alone", job_id, len(batch),
                           error)
            return
        for waiter in batch:
            # A unit delivered twice into one batch: its second copy runs
            # alone and finds it done.
            if waiter.unit in results:
                waiter.result = results.pop(waiter.unit)
                waiter.settled = True

    def _hand_over(self, job_id, batch):
        """The job's next statement goes to the first unit that gathered
        during this one; then this batch's threads go on."""
        with self._lock:
            following = self._waiting.get(job_id)
            if following:
                following[0].leads = True
                following[0].event.set()
            else:
                self._busy.discard(job_id)
        for waiter in batch:
            waiter.event.set()
