"""FFmpeg `-progress` output -> percentages. Sans-I/O.

FFmpeg writes blocks of `key=value` lines, each block ending in `progress=continue` or
`progress=end`. `out_time_us` is the output timestamp reached; against the expected
output duration it gives a fraction. Percentages only ever rise, and the caller decides
how often to send them (`Throttle`). `speed` is FFmpeg's own `speed=` (output seconds per
wall-clock second), from which `eta_s` estimates the time left.
"""

from __future__ import annotations

import attrs


@attrs.define
class ProgressParser:
    """Feed raw bytes from FFmpeg's progress pipe; read `percentage` and `finished`."""

    expected_duration: float | None
    percentage: float = 0.0
    finished: bool = False
    speed: float | None = None
    out_time_s: float = 0.0
    _pending: bytes = b""

    def feed(self, data: bytes) -> bool:
        """Consume a chunk; return True if the percentage rose."""
        before = self.percentage
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > 4096:  # no key=value line is this long: not progress output
            self._pending = b""
        for line in lines:
            key, sep, value = line.strip().partition(b"=")
            if not sep:
                continue
            if key == b"out_time_us":
                self._advance(value)
            elif key == b"speed":
                self._speed(value)
            elif key == b"progress" and value == b"end":
                self.finished = True
                self.percentage = 100.0
        return self.percentage > before

    def eta_s(self) -> float | None:
        """Seconds left at the current speed; None until FFmpeg reports a speed."""
        if not self.speed or not self.expected_duration or self.expected_duration <= 0:
            return None
        left = max(self.expected_duration - self.out_time_s, 0.0)
        return round(left / self.speed, 1)

    def _speed(self, value: bytes) -> None:
        try:  # "1.23x", or "N/A" before the first frame
            speed = float(value.rstrip(b"x").strip())
        except ValueError:
            return
        if speed > 0 and speed != float("inf"):
            self.speed = round(speed, 3)

    def _advance(self, value: bytes) -> None:
        try:
            seconds = int(value) / 1e6
        except ValueError:  # FFmpeg prints N/A before the first frame
            return
        self.out_time_s = max(self.out_time_s, seconds)
        if not self.expected_duration or self.expected_duration <= 0:
            return
        # Hold back 100 for `progress=end`: the output is not final until then.
        fraction = min(max(seconds / self.expected_duration, 0.0), 0.99)
        self.percentage = max(self.percentage, round(fraction * 100, 1))


@attrs.define
class Throttle:
    """Allow an event at most once per `interval` seconds (times supplied by the caller)."""

    interval: float
    _last: float = float("-inf")

    def ready(self, now: float) -> bool:
        if now - self._last >= self.interval:
            self._last = now
            return True
        return False
