"""§5: the original's "fix" for errors: catch everything, log it, ack
anyway. The message leaves the queue and its work is lost."""

import logging

from dramatiq.middleware import CurrentMessage

import actors
import jobs
import validation
from db import database
from lab.workers import faults

faults.in_actor = True

logger = logging.getLogger("followers.lab.naive")


def consume(**fields):
    message = CurrentMessage.get_current_message()
    try:
        faults.before_effect(message)
        unit = validation.validate(fields, validation.UNIT, strict=True)
        with database.connection_context():
            jobs.apply_unit(unit["job_id"], unit["unit"])
        faults.after_commit(message)
    except Exception:
        logger.exception("error swallowed, message acked: %s", fields)


# The production actor, its name, queue and options kept, runs this instead.
actors.add_followers.fn = consume
