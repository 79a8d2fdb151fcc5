"""CPU that PostgreSQL's backends spend on one database, read from /proc
(PostgreSQL on this machine): what one primary can carry is its cores
divided by this cost. None where the backends cannot be seen."""

import os

TICKS = os.sysconf("SC_CLK_TCK")


def _backends(database):
    """PIDs of the backends serving ``database`` ("postgres: ... <user> <database> <client> ...")."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres:") and f" {database} " in title:
            yield pid


def cpu_seconds(database):
    """User + system CPU seconds of the backends serving ``database`` now."""
    total, seen = 0, False
    for pid in _backends(database):
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        total += int(fields[11]) + int(fields[12])  # utime, stime
        seen = True
    return total / TICKS if seen else None


def cores_used(database, run):
    """(run()'s result: seconds, PostgreSQL's cores while it ran, or None).
    The pools keep their connections, so a backend's CPU counts whole."""
    before = cpu_seconds(database) or 0.0
    seconds = run()
    after = cpu_seconds(database)
    return seconds, (after - before) / seconds if after is not None else None
