"""The idle deadline of a connection: `[server] idle_timeout_s` with no job of its own
and no message from its client, and it is closed (1001, "idle"), so that silent
connections do not hold their places for ever.

A message from the client pushes the deadline back; a job lifts it until the
connection's last job ends. The deadline is a cancel scope's, so nothing polls.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import trio

from ffserve.session.writer import CLOSE_HANDSHAKE_S
from ffserve.wire.frames import GOING_AWAY
from ffserve.wire.websocket import WebSocket


@attrs.define(eq=False)
class IdleDeadline:
    timeout: float
    scope: trio.CancelScope = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.scope = trio.CancelScope(deadline=trio.current_time() + self.timeout)

    def reset(self, *, busy: bool) -> None:
        """Activity now; `busy` while the connection has a job."""
        self.scope.deadline = math.inf if busy else trio.current_time() + self.timeout


async def close_when_idle(
    ws: WebSocket,
    idle: IdleDeadline,
    connection_scope: trio.CancelScope,
    on_idle: Callable[[], None],
) -> None:
    """Wait out `idle`, then tell the client why and close; a client that does not
    answer the close frame is cut off (`connection_scope`)."""
    with idle.scope:
        await trio.sleep_forever()
    on_idle()
    await ws.close(GOING_AWAY, "idle")
    await trio.sleep(CLOSE_HANDSHAKE_S)
    connection_scope.cancel()
