"""The systemd units of deploy/: they run what compose runs, restart the
workers whenever they exit, stop gracefully, and systemd itself finds no
fault in them."""

import configparser
import shutil
import subprocess

import pytest
import yaml

from tests.api_helpers import ROOT

UNITS = {"followers-api.service": "api", "followers-workers.service": "worker"}


def unit(name):
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(ROOT / "deploy" / name)
    return parser


@pytest.mark.parametrize("name, service", UNITS.items())
def test_each_unit_runs_what_compose_runs_and_is_restarted_whatever_its_exit(name, service):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][service]
    section = unit(name)["Service"]
    program, *args = section["ExecStart"].split()
    assert [program.rsplit("/", 1)[1], *args] == compose["command"]
    assert section["Restart"] == "always" and unit(name)["Unit"]["StartLimitIntervalSec"] == "0"
    # SIGTERM to the main process, which stops its own children gracefully
    # (gunicorn's graceful_timeout is 30 s); SIGKILL to all after that.
    assert section["KillMode"] == "mixed" and int(section["TimeoutStopSec"]) > 30


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_finds_no_fault_in_the_units(tmp_path):
    # Installed under /opt/followers; here, this checkout stands in for it.
    for name in UNITS:
        (tmp_path / name).write_text((ROOT / "deploy" / name).read_text().replace("/opt/followers", str(ROOT)))
    result = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / name) for name in UNITS)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
