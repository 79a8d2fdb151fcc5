"""The workers' logging set-up changes nothing outside itself: importing
``actors`` sets no level, the per-unit line leaves the logging module's
globals alone, and LOG_LEVEL reaches our loggers when a worker boots."""

import io
import json
import logging

import dramatiq
import pytest
from dramatiq.broker import MessageProxy

import actors
from actors.log_level import LogLevel
from actors.observe import UnitLog


@pytest.fixture
def units_logger():
    """followers.units at INFO, as LOG_LEVEL's default makes it in a worker."""
    logger = logging.getLogger("followers.units")
    logger.setLevel(logging.INFO)
    yield logger
    logger.setLevel(logging.NOTSET)


def unit_message(**kwargs):
    return MessageProxy(dramatiq.Message(
        queue_name="q", actor_name="add_followers", args=(), options={},
        kwargs={"job_id": 7, "unit": 3, **kwargs},
    ))


def test_importing_actors_sets_no_log_level():
    assert actors.broker is not None
    assert logging.getLogger("followers").level == logging.NOTSET


def test_log_level_is_set_when_a_worker_process_boots():
    followers_logger = logging.getLogger("followers")
    try:
        LogLevel(level="WARNING").after_process_boot(None)
        assert followers_logger.level == logging.WARNING
    finally:
        followers_logger.setLevel(logging.NOTSET)


def test_a_unit_line_leaves_the_logging_module_alone(units_logger):
    srcfile, multiprocessing = logging._srcfile, logging.logMultiprocessing
    stream = io.StringIO()
    unit_log = UnitLog(stream=stream)
    unit_log.after_process_boot(None)
    message = unit_message()
    unit_log.before_process_message(None, message)
    unit_log.after_process_message(None, message)
    line = stream.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    assert "[followers.units] [INFO] " in line
    assert "actor=add_followers job=7 unit=3 attempt=1" in line and line.rstrip().endswith("outcome=done")
    # The module-wide switches the old unit log turned off for the whole process.
    assert (logging._srcfile, logging.logMultiprocessing) == (srcfile, multiprocessing)


def test_unit_lines_as_json_and_switched_off_above_info(units_logger):
    stream = io.StringIO()
    unit_log = UnitLog(json_lines=True, stream=stream)
    message = unit_message()
    error = ValueError("bad")
    message.stuff_exception(error)
    message.fail()
    unit_log.after_process_message(None, message, exception=error)
    record = json.loads(stream.getvalue())
    assert (record["job"], record["unit"], record["outcome"]) == (7, 3, "dead-lettered")
    assert record["error"] == "ValueError: bad"
    units_logger.setLevel(logging.WARNING)  # LOG_LEVEL=WARNING
    unit_log.after_process_message(None, unit_message())
    assert stream.getvalue().count("\n") == 1
