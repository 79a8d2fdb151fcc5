"""Why a message went to the dead-letter queue, said where a user looks."""

import logging

from dramatiq.middleware import Middleware
from peewee import PeeweeException

from db import DeadLetter, Job, JobUnit, database

from .messages import attempt_of, failure_reason, split_job_of, unit_of

logger = logging.getLogger("followers.worker")


class DeadLetters(Middleware):
    """Middleware that says why a message went to the dead-letter queue
    (``<queue>.XQ``): logs the reason, records it in ``dead_letters`` and,
    for a unit of work, marks the unit failed with it (for a job's
    ``split_job``, the job), so that ``GET /api/v1/jobs/{id}`` shows it.

    A message for an actor this worker does not have needs nothing more:
    Dramatiq's consumer dead-letters it before any middleware sees it
    (``ConsumerThread.handle_message``), and ``after_nack`` records why.

    Parameters:
      (none)
    """

    def after_nack(self, broker, message):
        reason = failure_reason(message)
        logger.warning("dead-lettered message %s (%s): %s", message.message_id, message.actor_name, reason)
        job_id, unit = unit_of(message)
        split_job = split_job_of(message.actor_name, message.kwargs)
        try:
            with database.connection_context():
                DeadLetter.record(
                    message.message_id, message.queue_name, message.actor_name, reason, attempt_of(message),
                    job_id=job_id if split_job is None else split_job, unit=unit,
                )
                if job_id is not None:
                    JobUnit.mark_failed(job_id, unit, reason)
                elif split_job is not None:
                    Job.split_failed(split_job, reason)
        except PeeweeException as error:
            # Database down: the log line stands.
            logger.warning("could not record dead letter %s: %r", message.message_id, error)
