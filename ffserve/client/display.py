"""What `ffserve submit` and `ffserve probe` show: a live bar per job (rich) on stderr,
results on stdout, so a script can read the one and a person watch the other."""

from __future__ import annotations

import time
from typing import Any

import attrs
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Table

from ffserve.client.progress import JobProgress
from ffserve.client.result import Result


def bars(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[phase]:<10}"),
        TextColumn("{task.fields[speed]:>10}"),
        TextColumn("ETA {task.fields[eta]:>7}"),
        console=console,
    )


@attrs.define
class JobBar:
    """One job's bar: the phase's percentage, its speed (bytes per second while files
    travel, FFmpeg's `2.5x` while processing) and the time left."""

    progress: Progress
    task: TaskID
    phase: str = ""
    phase_began: float = 0.0

    @classmethod
    def add(cls, progress: Progress, name: str) -> JobBar:
        task = progress.add_task(name, total=100, phase="connecting", speed="", eta="-")
        return cls(progress, task)

    def __call__(self, event: JobProgress) -> None:
        now = time.monotonic()
        if event.phase != self.phase:
            self.phase, self.phase_began = event.phase, now
        speed, eta = "", "-"
        if event.phase == "processing":
            speed = f"{event.speed:g}x" if event.speed else ""
            eta = clock(event.eta_s)
        elif event.done_bytes is not None and event.total_bytes:
            elapsed = now - self.phase_began
            if elapsed > 0 and event.done_bytes:
                rate = event.done_bytes / elapsed
                speed = f"{size(rate)}/s"
                eta = clock((event.total_bytes - event.done_bytes) / rate)
        self.progress.update(
            self.task, completed=event.percentage, phase=event.phase, speed=speed, eta=eta
        )

    def end(self, outcome: str) -> None:
        self.progress.update(self.task, phase=outcome, speed="", eta="-")


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def summary(result: Result) -> list[str]:
    """One line per output: path, container, duration, size in pixels, codecs, bytes."""
    lines = []
    for output in result.outputs:
        meta = output.metadata
        parts = [str(output.path), str(meta.get("format", "?"))]
        if meta.get("duration") is not None:
            parts.append(f"{meta['duration']:.2f} s")
        if meta.get("width"):
            parts.append(f"{meta['width']}x{meta['height']}")
        parts.append("/".join(meta.get("codecs") or []))
        parts.append(size(float(meta.get("size_bytes") or 0)))
        lines.append("  ".join(p for p in parts if p))
    return lines


def probe_table(metadata: dict[str, Any]) -> Table:
    """`ffserve probe`'s table: the container on top, then one row per stream."""
    duration = metadata.get("duration")
    title = (
        f"{metadata.get('format_name', metadata.get('format'))}  "
        f"{'-' if duration is None else f'{duration:.3f} s'}  "
        f"{size(float(metadata.get('size_bytes') or 0))}  "
        f"{size(float(metadata.get('bitrate') or 0) / 8)}/s"
    )
    table = Table(title=title)
    columns = ("index", "type", "codec", "profile", "size", "fps", "audio", "language")
    for column in columns:
        table.add_column(column)
    for stream in metadata.get("streams", []):
        width = stream.get("width")
        rate = stream.get("sample_rate")
        table.add_row(
            str(stream.get("index")),
            str(stream.get("type")) + (" (cover art)" if stream.get("cover_art") else ""),
            str(stream.get("codec") or ""),
            str(stream.get("profile") or ""),
            f"{width}x{stream.get('height')}" if width else "",
            f"{stream['fps']:g}" if stream.get("fps") else "",
            f"{rate} Hz, {stream.get('channels')} ch" if rate else "",
            str(stream.get("language") or ""),
        )
    return table
