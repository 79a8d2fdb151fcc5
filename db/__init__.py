"""Persistence: the database object, the models, the schema set-up."""

from .database import database
from .messages import DeadLetter, DeliveryAttempt, MessageEvent
from .models import FollowerCount, Job, JobUnit, Subscription, User

__all__ = ["database", "FollowerCount", "Job", "JobUnit", "Subscription", "User", "DeadLetter", "DeliveryAttempt", "MessageEvent"]
