"""Worker middleware of our own, each a small class as Dramatiq's are."""

import logging

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage
from peewee import PeeweeException

from db import JobUnit, database

logger = logging.getLogger(__name__)


def failure_reason(message):
    exception = getattr(message, "_exception", None)
    if exception is None:
        return "failed"
    return f"{type(exception).__name__}: {exception}"


class DeadLetters(Middleware):
    """Says why a message went to the dead-letter queue (``<queue>.XQ``):
    logs the reason and, for a unit of work, marks the unit failed with it,
    so that ``GET /api/v1/jobs/{id}`` shows it.

    Also dead-letters a message for an actor this worker does not have:
    Dramatiq would otherwise fail inside its own middleware and ack it,
    losing it without a trace.
    """

    def before_process_message(self, broker, message):
        try:
            broker.get_actor(message.actor_name)
        except dramatiq.errors.ActorNotFound as error:
            message.stuff_exception(error)
            message.fail()
            raise SkipMessage(str(error)) from None

    def after_nack(self, broker, message):
        reason = failure_reason(message)
        logger.warning("dead-lettered message %s (%s): %s", message.message_id, message.actor_name, reason)
        kwargs = message.kwargs if isinstance(message.kwargs, dict) else {}
        job_id, chunk = kwargs.get("job_id"), kwargs.get("chunk")
        if type(job_id) is int and type(chunk) is int:
            try:
                with database.connection_context():
                    JobUnit.mark_failed(job_id, chunk, reason)
            except PeeweeException as error:
                # Unknown job (foreign key) or database down: the log line stands.
                logger.warning("could not record dead letter of job %s unit %s: %r", job_id, chunk, error)
