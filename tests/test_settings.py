"""settings.py: a value it cannot read stops the process at once, naming
the setting, rather than turning into a default unseen."""

import os
import subprocess
import sys

import pytest

from harness import ROOT


def import_settings(**env):
    return subprocess.run([sys.executable, "-c", "import settings; print(settings.SERVE_NGINX, settings.API_WORKERS)"],
                          cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(("raw", "read"), [("0", "False"), ("off", "False"), (" Yes ", "True"), ("", "True")])
def test_a_boolean_setting_reads_the_usual_words(raw, read):
    done = import_settings(SERVE_NGINX=raw)
    assert (done.returncode, done.stdout.split()[0]) == (0, read), done.stderr


@pytest.mark.parametrize(("name", "raw", "says"), [
    ("SERVE_NGINX", "of", "setting SERVE_NGINX='of' is neither true (1, true, yes, on) nor false (0, false, no, off)"),
    ("API_WORKERS", "two", "setting API_WORKERS='two' is not a whole number"),
])
def test_a_setting_it_cannot_read_stops_the_process_and_says_which(name, raw, says):
    done = import_settings(**{name: raw})
    assert (done.returncode, done.stderr.strip()) == (1, says)
