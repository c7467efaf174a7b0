"""The service's log output: human text (the default) or one JSON object a line.

`--log-format json` writes each record as one line of JSON: `time` (UTC, ISO 8601),
`level`, `logger`, `message`, and for an event line (`ffserve.events`) its `event` and
fields as keys of their own. JSON escapes every control character, so no value (a
client's file name with a newline in it) can break a line in two.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs

LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if event is not None:
            line["event"] = event
            fields: dict[str, Any] = getattr(record, "fields", {})
            line.update((k, v) for k, v in fields.items() if k not in line)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # ASCII: U+2028 and U+0085 end a line for some readers; escaped, they cannot.
        return json.dumps(line, default=repr)


def check_level(level: str) -> str:
    """`level` as logging knows it. Errors: ValueError naming the levels there are."""
    if level.lower() not in LEVELS:
        raise ValueError(f"--log-level {level!r} is not one of {', '.join(LEVELS)}")
    return level.upper()


def formatter(kind: str) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)


@attrs.define
class Sparse(logging.Filter):
    """Lets a logger's records through at most once per `every_s` seconds, each without
    its traceback and saying how many were held back.

    For `trio.serve_listeners`, which logs an ERROR with a traceback each time accept
    fails for want of descriptors (EMFILE) and retries 0.1 s later: ten tracebacks a
    second, all alike, for as long as the shortage lasts, just when the log matters."""

    every_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _next: float = -float("inf")
    _held: int = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        if now < self._next:
            self._held += 1
            return False
        self._next = now + self.every_s
        if self._held:
            record.msg = f"{record.msg} (and {self._held} more like it)"
            self._held = 0
        record.exc_info = record.exc_text = None
        return True
