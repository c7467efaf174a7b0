"""A token bucket, sans-I/O: the clock is the caller's (`trio.current_time()` in the
server, plain numbers in tests).

A connection's reader takes a token per message it reads (`[server] max_messages_per_s`,
`message_burst`); with none left it waits `delay(now)` before reading on, so a client
that floods is slowed to the rate (TCP back-pressure does the rest), not disconnected.
"""

from __future__ import annotations

import attrs


@attrs.define
class TokenBucket:
    rate: float  # tokens per second
    burst: int  # tokens held at most; a full bucket to start with
    _tokens: float = attrs.field(init=False)
    _last: float | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._tokens = float(self.burst)

    def delay(self, now: float) -> float:
        """Seconds until a token is there (0: there is one now)."""
        self._refill(now)
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def take(self, now: float) -> None:
        """Take a token; with none there, the bucket goes into debt (the next `delay`
        says how long to wait it off)."""
        self._refill(now)
        self._tokens -= 1

    def _refill(self, now: float) -> None:
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
