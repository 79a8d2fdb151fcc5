"""Fault injection for the lab, set only through the workers' environment
(``FAULT_*`` in settings.py): never through the API or a message.

With no fault set, ``ACTIVE`` is False and the actors skip every hook.
"""

import logging
import os
import sys
import time

import settings

logger = logging.getLogger("followers.faults")

ACTIVE = any(
    [
        settings.FAULT_CRASH_AFTER_COMMIT,
        settings.FAULT_FAIL_FIRST_ATTEMPTS,
        settings.FAULT_SLEEP_WHEN_COUNT,
        settings.FAULT_CRASH_ON_LOGIN,
        settings.FAULT_RAISE_ON_LOGIN,
        settings.FAULT_UNIT_DELAY_MS,
    ]
)


class InjectedFault(Exception):
    pass


def _logins(unit):
    prefix = f"{unit['followers_login']}_#"
    return {f"{prefix}{i}" for i in range(unit["start"], unit["start"] + unit["count"])}


def crash(why):
    logger.critical("injected crash: %s", why)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(70)


def before_effect(unit, attempt):
    """Called before a unit's transaction."""
    if settings.FAULT_UNIT_DELAY_MS:
        time.sleep(settings.FAULT_UNIT_DELAY_MS / 1000)
    if settings.FAULT_FAIL_FIRST_ATTEMPTS and attempt <= settings.FAULT_FAIL_FIRST_ATTEMPTS:
        raise InjectedFault(f"injected failure on attempt {attempt} of {settings.FAULT_FAIL_FIRST_ATTEMPTS}")
    if settings.FAULT_SLEEP_WHEN_COUNT and unit["count"] == settings.FAULT_SLEEP_WHEN_COUNT:
        logger.warning("injected killer: sleeping %s s (count == %s)", settings.FAULT_SLEEP_S, unit["count"])
        time.sleep(settings.FAULT_SLEEP_S)  # uninterruptible for Dramatiq's TimeLimit
    logins = _logins(unit) if settings.FAULT_CRASH_ON_LOGIN or settings.FAULT_RAISE_ON_LOGIN else ()
    if settings.FAULT_CRASH_ON_LOGIN in logins:
        crash(f"poison follower {settings.FAULT_CRASH_ON_LOGIN}")
    if settings.FAULT_RAISE_ON_LOGIN in logins:
        raise InjectedFault(f"injected error on follower {settings.FAULT_RAISE_ON_LOGIN}")


def after_commit(unit, first_delivery):
    """Called after a unit committed its effect, before the ack."""
    if settings.FAULT_CRASH_AFTER_COMMIT and first_delivery:
        crash(f"after committing job {unit['job_id']} unit {unit['chunk']}, before the ack")
