"""A connection's writer: the one task that sends, draining the connection's `Outbox`."""

from __future__ import annotations

import trio

from ffserve.wire.outbox import Closing, FileFrame, Outbox, Outgoing
from ffserve.wire.websocket import ConnectionClosed, WebSocket

# How long a client told to go may take to answer the close frame.
CLOSE_HANDSHAKE_S = 5.0


async def write_outbox(
    ws: WebSocket,
    outbox: Outbox,
    outgoing: trio.MemoryReceiveChannel[Outgoing],
    connection_scope: trio.CancelScope,
) -> None:
    """Send what `outbox` queues until it ends (`close`) or the client goes; then end the
    connection (`connection_scope`) and close whatever is left unsent."""
    async with outgoing:
        try:
            async for frame in outgoing:
                if isinstance(frame, Closing):
                    await ws.close(frame.code, frame.reason)
                    if frame.await_reply:
                        # The reader ends the connection when the client answers the
                        # close frame; one that never does is cut off.
                        await trio.sleep(CLOSE_HANDSHAKE_S)
                    break
                try:
                    if isinstance(frame, FileFrame):
                        await ws.send_file(frame.header, frame.file, frame.size)
                    else:
                        await ws.send(frame)
                except ConnectionClosed:
                    break
                finally:
                    if isinstance(frame, FileFrame):
                        frame.close()
                outbox.sent(frame)
        finally:
            # The client is gone (or told to go): so are its jobs. Cancelled before the
            # channel closes, so a job blocked sending to it sees Cancelled, not a broken
            # channel (which would count as a job failure).
            connection_scope.cancel()
            _close_unsent(outgoing)


def _close_unsent(outgoing: trio.MemoryReceiveChannel[Outgoing]) -> None:
    """Frames left in the queue die with the connection; v1 outputs among them hold
    open files (of job dirs already removed), which must not wait for the GC."""
    while True:
        try:
            frame = outgoing.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return
        if isinstance(frame, FileFrame):
            frame.close()
