"""The lab's workers: ``dramatiq lab.workers`` runs the production actors
with the lab's middleware added (event rows, injected faults), so a
scenario watches the real code fail and recover."""

from dramatiq.middleware import CurrentMessage

import actors
from actors import broker
from actors.dead_letters import DeadLetters

from .events import EventLog
from .faults import FaultInjection

faults = FaultInjection.from_settings()
# Before DeadLetters: its after hooks run after Retries has decided whether
# a failed message is retried or dead-lettered, which is the outcome it records.
broker.add_middleware(EventLog(), before=DeadLetters)
# Appended last: their before hooks run just before the actor, their after
# hooks first, after the unit's commit and before its ack.
broker.add_middleware(CurrentMessage())  # the naive consumers ask for their message
broker.add_middleware(faults)

__all__ = ["actors", "broker", "faults"]
