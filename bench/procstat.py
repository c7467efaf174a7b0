"""What /proc says about the server: CPU time (its own and its children's) and RSS.

Parsing is pure (`parse_stat`, `parse_status`); `ProcessWatch` reads a live pid.
CPU of the server's FFmpeg and ffprobe children is counted once they are reaped
(cutime/cstime) plus, while they still run, their own utime/stime.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import trio

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@attrs.frozen
class CpuTimes:
    """Seconds of CPU: the process itself, and its children (reaped or running)."""

    own: float
    children: float

    @property
    def total(self) -> float:
        return self.own + self.children

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.own - other.own, self.children - other.children)


def parse_stat(text: str) -> tuple[int, int, int, int, int]:
    """(ppid, utime, stime, cutime, cstime) in clock ticks from `/proc/<pid>/stat`.

    The command name (field 2) may contain spaces and parentheses, so fields are counted
    from the last ')'.
    """
    fields = text.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); ppid is field 4, utime..cstime are fields 14-17.
    return int(fields[1]), int(fields[11]), int(fields[12]), int(fields[13]), int(fields[14])


def parse_status(text: str) -> dict[str, int]:
    """The `Vm*` lines of `/proc/<pid>/status`, in KiB."""
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key.startswith("Vm") and rest.strip().endswith("kB"):
            values[key] = int(rest.split()[0])
    return values


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` that are alive now."""
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            text = _read(entry / "stat")
            if text is not None and parse_stat(text)[0] == pid:
                found.append(int(entry.name))
    return found


@attrs.define
class ProcessWatch:
    """CPU and memory of one process (the server) read from /proc."""

    pid: int
    peak_resettable: bool = True

    def alive(self) -> bool:
        return (PROC / str(self.pid)).exists()

    def cpu(self) -> CpuTimes | None:
        text = _read(PROC / str(self.pid) / "stat")
        if text is None:
            return None
        _, utime, stime, cutime, cstime = parse_stat(text)
        running = 0
        for child in children_of(self.pid):
            child_text = _read(PROC / str(child) / "stat")
            if child_text is not None:
                _, cu, cs, ccu, ccs = parse_stat(child_text)
                running += cu + cs + ccu + ccs
        return CpuTimes((utime + stime) / CLOCK_TICKS, (cutime + cstime + running) / CLOCK_TICKS)

    def memory_kib(self) -> dict[str, int]:
        text = _read(PROC / str(self.pid) / "status")
        return parse_status(text) if text is not None else {}

    def reset_peak(self) -> bool:
        """Reset VmHWM (Linux >= 4.0: write 5 to clear_refs); False where not allowed."""
        if not self.peak_resettable:
            return False
        try:
            (PROC / str(self.pid) / "clear_refs").write_text("5")
        except OSError:
            self.peak_resettable = False
        return self.peak_resettable


@attrs.define
class RssSampler:
    """The highest VmRSS seen while `sample_every` runs, for kernels where VmHWM
    cannot be reset between scenarios."""

    watch: ProcessWatch
    peak_kib: int = 0

    async def sample_every(self, interval: float) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, self.watch.memory_kib().get("VmRSS", 0))
            await trio.sleep(interval)
