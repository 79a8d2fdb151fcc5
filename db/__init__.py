"""Persistence: the database object, the models, the schema set-up."""

from .database import database
from .models import Job, JobUnit, Subscription, User

__all__ = ["database", "Job", "JobUnit", "Subscription", "User"]
