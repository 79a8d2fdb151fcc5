"""Persistence: the database object, the models, the schema set-up."""

from .database import database
from .idempotency import IdempotencyKey
from .jobs import Job
from .messages import DeadLetter, DeliveryAttempt, MessageEvent
from .models import FollowerCount, Subscription, User
from .outbox import Outbox
from .units import JobUnit
from .workers import WorkerProcess

__all__ = [
    "database", "FollowerCount", "Job", "JobUnit", "Subscription", "User", "DeadLetter", "DeliveryAttempt",
    "MessageEvent", "Outbox", "IdempotencyKey", "WorkerProcess",
]
