"""Fault injection for the lab's workers, set only through their
environment (``FAULT_*`` in settings.py): never through the API or a message.
Installed by the lab's worker modules (``lab.workers``), never by ``actors``.
"""

import logging
import os
import sys
import time

from dramatiq.middleware import Middleware, MiddlewareError

import settings
from actors.messages import attempt_of, unit_of
from db import Job, database

logger = logging.getLogger("followers.lab.faults")


class InjectedFault(MiddlewareError):
    """Dramatiq logs and ignores any other exception raised in a before
    hook; a MiddlewareError fails the message as if its actor had raised,
    so Retries and the dead-letter queue see it."""


def crash(why):
    logger.critical("injected crash: %s", why)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(70)


def first_delivery(message):
    return attempt_of(message) == 1 and not getattr(message, "redelivered", False)


class FaultInjection(Middleware):
    """Middleware that makes units of work fail the ways the original
    lesson's did. Its before hook runs last, just before the actor; its
    after hook first, after the unit committed and before the ack.

    Parameters:
      crash_after_commit(bool): os._exit after a unit's first delivery committed.
      fail_first_attempts(int): Raise before the effect on these first attempts.
      sleep_when_count(int): A unit of this many followers sleeps...
      sleep_s(float): ...this long, in time.sleep (TimeLimit cannot stop it).
      crash_on_login(str): os._exit on a unit holding this follower login.
      raise_on_login(str): Raise on a unit holding this follower login.
      unit_delay_ms(int): Every unit takes this much longer.

    A naive consumer (``lab.naive``) sets ``in_actor`` and calls
    ``before_effect`` and ``after_commit`` from its own body, where the
    original's handler threw: inside its own try, before its own ack.
    """

    in_actor = False

    def __init__(self, *, crash_after_commit=False, fail_first_attempts=0, sleep_when_count=0, sleep_s=1000,
                 crash_on_login="", raise_on_login="", unit_delay_ms=0):
        self.crash_after_commit = crash_after_commit
        self.fail_first_attempts = fail_first_attempts
        self.sleep_when_count = sleep_when_count
        self.sleep_s = sleep_s
        self.crash_on_login = crash_on_login
        self.raise_on_login = raise_on_login
        self.unit_delay_ms = unit_delay_ms

    @classmethod
    def from_settings(cls):
        return cls(
            crash_after_commit=settings.FAULT_CRASH_AFTER_COMMIT,
            fail_first_attempts=settings.FAULT_FAIL_FIRST_ATTEMPTS,
            sleep_when_count=settings.FAULT_SLEEP_WHEN_COUNT,
            sleep_s=settings.FAULT_SLEEP_S,
            crash_on_login=settings.FAULT_CRASH_ON_LOGIN,
            raise_on_login=settings.FAULT_RAISE_ON_LOGIN,
            unit_delay_ms=settings.FAULT_UNIT_DELAY_MS,
        )

    def before_process_message(self, broker, message):
        if not self.in_actor:
            self.before_effect(message)

    def before_effect(self, message):
        job_id, unit = unit_of(message)
        if job_id is None or message.actor_name != "add_followers":
            return
        if self.unit_delay_ms:
            time.sleep(self.unit_delay_ms / 1000)
        attempt = attempt_of(message)
        if self.fail_first_attempts and attempt <= self.fail_first_attempts:
            raise InjectedFault(f"injected failure on attempt {attempt} of {self.fail_first_attempts}")
        if not (self.sleep_when_count or self.crash_on_login or self.raise_on_login):
            return
        with database.connection_context():
            job = Job.get_or_none(Job.id == job_id)
        if job is None or not 0 <= unit < job.units:
            return
        start, stop = job.unit_bounds(unit)
        if self.sleep_when_count and stop - start == self.sleep_when_count:
            logger.warning("injected killer: sleeping %s s (count == %s)", self.sleep_s, self.sleep_when_count)
            time.sleep(self.sleep_s)
        logins = {f"{job.followers_login}_#{i}" for i in range(start, stop)}
        if self.crash_on_login in logins:
            crash(f"poison follower {self.crash_on_login}")
        if self.raise_on_login in logins:
            raise InjectedFault(f"injected error on follower {self.raise_on_login}")

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if not self.in_actor and exception is None and message.actor_name == "add_followers":
            self.after_commit(message)

    def after_commit(self, message):
        """The unit's effect is committed; its ack is not sent yet."""
        if self.crash_after_commit and first_delivery(message):
            job_id, unit = unit_of(message)
            crash(f"after committing job {job_id} unit {unit}, before the ack")
