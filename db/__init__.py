"""Persistence: the database object, the models, the schema set-up."""

from .database import database
from .messages import DeadLetter, DeliveryAttempt, MessageEvent
from .models import Job, JobUnit, Subscription, User

__all__ = ["database", "Job", "JobUnit", "Subscription", "User", "DeadLetter", "DeliveryAttempt", "MessageEvent"]
