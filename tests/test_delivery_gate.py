"""Pure unit test of the gate that runs suspect (redelivered) messages alone."""

import threading
import time

from actors.delivery_limit import _Gate


def test_a_suspect_waits_for_running_messages_and_runs_alone():
    gate, log = _Gate(), []
    gate.acquire_shared()  # a message already running

    def suspect():
        gate.acquire_exclusive()
        log.append("suspect starts")
        time.sleep(0.05)
        log.append("suspect ends")
        gate.release(True)

    def newcomer():
        gate.acquire_shared()
        log.append("newcomer runs")
        gate.release(False)

    waiting = threading.Thread(target=suspect)
    waiting.start()
    time.sleep(0.05)
    late = threading.Thread(target=newcomer)  # arrives while the suspect waits: goes after it
    late.start()
    time.sleep(0.05)
    assert log == []
    log.append("running message ends")
    gate.release(False)
    waiting.join(2)
    late.join(2)
    assert log == ["running message ends", "suspect starts", "suspect ends", "newcomer runs"]
