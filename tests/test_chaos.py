"""A shortened chaos run: worker processes SIGKILLed every few seconds,
RabbitMQ and PostgreSQL each restarted once, while jobs come in. Every
accepted job must finish with exactly its followers, nothing dead-lettered.

It restarts this machine's RabbitMQ and PostgreSQL, as CI allows."""

import pytest

from lab.chaos import run_chaos

# Every test here starts the real processes (or a browser): -m 'not slow' skips them.
pytestmark = pytest.mark.slow


def test_nothing_is_lost_or_doubled_under_chaos():
    lines, passed = run_chaos(duration=25, jobs=20, users=3, kill_interval=3, stack_name="test_chaos")
    report = "\n".join(lines)
    print(report)
    assert passed, report
    assert "duplicates              0" in report and "lost units              0" in report
    assert "RabbitMQ restart        survived" in report and "PostgreSQL restart      survived" in report
