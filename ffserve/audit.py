"""The audit log: who was turned away, and why.

Each refused handshake, quota refusal and dropped connection is logged once, on the
`ffserve.audit` logger, with the client's address, the token's subject (never the token)
and the reason. An attack is exactly when these come thick and fast, so the log is
rate-limited by a token bucket: past the burst, lines are counted, not written, and the
count is logged when lines flow again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import attrs

log = logging.getLogger("ffserve.audit")


@attrs.define
class AuditLog:
    per_second: float = 20.0
    burst: int = 100
    clock: Callable[[], float] = time.monotonic
    _tokens: float = attrs.field(init=False)
    _last: float = attrs.field(init=False)
    suppressed: int = 0

    def __attrs_post_init__(self) -> None:
        self._tokens = float(self.burst)
        self._last = self.clock()

    def record(self, event: str, *, client: str, subject: str | None, reason: str) -> bool:
        """Log `event` (e.g. "handshake_refused") unless over the rate; True if logged."""
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.per_second)
        self._last = now
        if self._tokens < 1:
            self.suppressed += 1
            return False
        self._tokens -= 1
        if self.suppressed:
            log.warning("audit: %d lines suppressed (rate limit)", self.suppressed)
            self.suppressed = 0
        # %r: a client-chosen string (subject, reason) cannot forge a line of its own.
        log.warning(
            "audit: %s client=%s subject=%r reason=%r", event, client, subject or "-", reason
        )
        return True
