"""The lab's faults for the peers, set only through the workers'
environment (``FAULT_*`` in settings.py), as ours are: the same faults, at
the same places of a unit of work.

``before_effect`` runs before the unit's transaction, ``after_commit`` after
it committed and before the message is acked. A peer calls them from its
task's body, which is where the original's consumer threw, slept or died.
"""

import logging
import os
import sys
import time

import settings

logger = logging.getLogger("followers.lab.peers.faults")


class InjectedFault(Exception):
    pass


def crash(why):
    logger.critical("injected crash: %s", why)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(70)  # as a segfault or the OOM killer would: no clean-up, no ack


def before_effect(followers_login, first, count, attempt):
    """``attempt`` counts from 1, as the peer counts its retries."""
    if settings.FAULT_UNIT_DELAY_MS:
        time.sleep(settings.FAULT_UNIT_DELAY_MS / 1000)
    if settings.FAULT_FAIL_FIRST_ATTEMPTS and attempt <= settings.FAULT_FAIL_FIRST_ATTEMPTS:
        raise InjectedFault(f"injected failure on attempt {attempt} of {settings.FAULT_FAIL_FIRST_ATTEMPTS}")
    if settings.FAULT_SLEEP_WHEN_COUNT and count == settings.FAULT_SLEEP_WHEN_COUNT:
        logger.warning("injected killer: sleeping %s s (count == %s)", settings.FAULT_SLEEP_S, count)
        time.sleep(settings.FAULT_SLEEP_S)
    logins = {f"{followers_login}_#{i}" for i in range(first, first + count)}
    if settings.FAULT_CRASH_ON_LOGIN and settings.FAULT_CRASH_ON_LOGIN in logins:
        crash(f"poison follower {settings.FAULT_CRASH_ON_LOGIN}")
    if settings.FAULT_RAISE_ON_LOGIN and settings.FAULT_RAISE_ON_LOGIN in logins:
        raise InjectedFault(f"injected error on follower {settings.FAULT_RAISE_ON_LOGIN}")


def after_commit(followers_login, first, first_delivery):
    """Called after the unit committed, before its ack."""
    if settings.FAULT_CRASH_AFTER_COMMIT and first_delivery:
        crash(f"after committing {followers_login} from #{first}, before the ack")
