"""Persistence: the database object, the models, the schema set-up."""

from .database import database
from .messages import DeadLetter, DeliveryAttempt, MessageEvent
from .models import Job, JobUnit, Subscription, User
from .workers import WorkerProcess

__all__ = ["database", "Job", "JobUnit", "Subscription", "User", "DeadLetter", "DeliveryAttempt", "MessageEvent",
           "WorkerProcess"]
