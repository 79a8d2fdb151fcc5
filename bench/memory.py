"""Resident memory and CPU time of the service's processes, read from /proc."""

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU seconds a process has used (0 if gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3 of stat(5); utime and stime are 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def status_kb(pid, field):
    """A ``VmRSS``/``VmHWM`` line of /proc/<pid>/status in kB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak(pid):
    """Start the kernel's peak RSS (VmHWM) of a process afresh
    (``clear_refs`` 5, Linux 4.0 and later); False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PeakRss:
    """Samples the RSS of a set of processes; remembers each one's peak, and
    reads the kernel's own peak (VmHWM) too, which no sampling can miss.

    The kernel's peaks start afresh here, so that a peak of the bench's
    earlier workloads on the same workers is not taken for this job's; what
    those workloads left resident still counts (docs/benchmark.md: scrypt's
    16 MB per thread that glibc keeps)."""

    def __init__(self, pids):
        self.pids = list(pids)
        self.peaks_reset = all([reset_peak(pid) for pid in self.pids])  # a list: every one reset, a failure or not
        self.first = {pid: status_kb(pid, "VmRSS") for pid in self.pids}
        self.peak = dict(self.first)

    def sample(self):
        for pid in self.pids:
            self.peak[pid] = max(self.peak[pid], status_kb(pid, "VmRSS"))

    def high_water_mb(self):
        """The kernel's peak RSS of each process, in MB."""
        return {pid: status_kb(pid, "VmHWM") / 1024 for pid in self.pids}

    def growth_mb(self):
        """How far each process's RSS rose above its first sample, in MB."""
        return {pid: (self.peak[pid] - self.first[pid]) / 1024 for pid in self.pids}
