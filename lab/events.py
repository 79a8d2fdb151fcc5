"""The lab's record of every processing of a message (``message_events``),
from which it judges its scenarios and draws its timelines."""

import datetime
import logging
import os
import threading

from dramatiq.middleware import Middleware
from peewee import PeeweeException

from actors.messages import failure_reason, unit_of
from actors.observe import outcome_of
from db import Job, MessageEvent, database

events_logger = logging.getLogger("followers.lab.events")


class EventLog(Middleware):
    """Records each processing of a message in ``message_events``: a row at
    the start (so a worker that dies mid-message leaves it ``running``) and
    its end. Three statements per message: the lab's workers only."""

    def __init__(self):
        self.local = threading.local()

    def before_process_message(self, broker, message):
        job_id, unit = unit_of(message)
        try:
            with database.connection_context():
                job = Job.get_or_none(Job.id == job_id) if job_id is not None else None
                self.local.event = MessageEvent.create(
                    message_id=message.message_id,
                    actor_name=message.actor_name,
                    job_id=job_id,
                    unit=unit,
                    user_id=job.user_id if job else None,
                    pid=os.getpid(),
                    thread=threading.current_thread().name,
                    redelivered=int(bool(getattr(message, "redelivered", False))),
                    started=datetime.datetime.now(datetime.UTC),
                )
        except PeeweeException as error:
            self.local.event = None
            events_logger.warning("could not record event: %r", error)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        event = getattr(self.local, "event", None)
        self.local.event = None
        if event is None:
            return
        try:
            with database.connection_context():
                MessageEvent.update(
                    ended=datetime.datetime.now(datetime.UTC),
                    outcome=outcome_of(message, exception),
                    error=failure_reason(message) if exception is not None else None,
                ).where(MessageEvent.id == event.id).execute()
        except PeeweeException as error:
            events_logger.warning("could not record event end: %r", error)

    def after_skip_message(self, broker, message):
        self.after_process_message(broker, message, exception=getattr(message, "_exception", None))
