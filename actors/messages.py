"""What the worker middleware read from a Dramatiq message, and the one way
they send a message to the dead-letter queue without running it."""

from dramatiq.middleware import SkipMessage


class DeliveryLimitExceeded(Exception):
    pass


def failure_reason(message):
    exception = getattr(message, "_exception", None)
    if exception is None:
        return "failed"
    if isinstance(exception, (SkipMessage, DeliveryLimitExceeded)):
        return str(exception)  # dead_letter_now's reason, already a sentence
    return f"{type(exception).__name__}: {exception}"


def attempt_of(message):
    """Which attempt this is: Dramatiq's retries plus crash redeliveries."""
    return message.options.get("retries", 0) + getattr(message, "deliveries", 1)


def unit_of(message):
    """(job_id, unit) of a unit-of-work message, or (None, None)."""
    return unit_of_kwargs(message.kwargs)


def _an_id(value, lowest):
    """Whether ``value`` is an id a job (from 1) or a unit (from 0) can have,
    a PostgreSQL integer: a message naming another names no job (its dead
    letter was listed with jobId -1, against openapi.json)."""
    return type(value) is int and lowest <= value <= 2**31 - 1


def unit_of_kwargs(kwargs):
    """(job_id, unit) from a message's keyword arguments, or (None, None)."""
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    job_id, unit = kwargs.get("job_id"), kwargs.get("unit")
    return (job_id, unit) if _an_id(job_id, 1) and _an_id(unit, 0) else (None, None)


def split_job_of(actor_name, kwargs):
    """The job id of a ``split_job`` message (it names no unit), or None."""
    job_id = kwargs.get("job_id") if isinstance(kwargs, dict) else None
    return job_id if actor_name == "split_job" and _an_id(job_id, 1) else None


def dead_letter_now(message, exception):
    """Send a message to the dead-letter queue without running it."""
    message.stuff_exception(exception)
    message.fail()
    raise SkipMessage(str(exception))
