"""One structured log line per event an operator follows: a connection opened or closed,
a job ended.

Each line is logged on `ffserve.events` at INFO with its fields in the record
(`record.event`, `record.fields`), so the JSON formatter (`ffserve.service.logs`) writes
them as JSON keys, and the text format shows them as `key=value`, each value a Python
repr: a client's string (a job id, a file name) with a newline or a quote in it stays
inside its own quotes on its own line, and cannot forge a line. Fields never hold a
token or a server path.
"""

from __future__ import annotations

import logging

log = logging.getLogger("ffserve.events")


def record(event: str, **fields: object) -> None:
    """Log `event` (e.g. "job_end") with `fields`, in the order given."""
    if not log.isEnabledFor(logging.INFO):
        return
    text = " ".join(f"{key}={value!r}" for key, value in fields.items())
    log.info("%s %s", event, text, extra={"event": event, "fields": fields})
