"""A connection's one outbound queue, drained by its writer task.

The queue is bounded, so a client that reads slowly slows down the jobs sending to it
(back-pressure) instead of growing server memory. Progress updates are the exception:
they are offered without waiting and dropped when the queue is full, because a newer
one will follow and a late one is worthless.

`close()` queues an end marker (`None`) behind everything already owed to the client:
the writer sends those frames, then closes the WebSocket (server shutdown).
"""

from __future__ import annotations

import attrs
import trio

from ffserve.messages import ServerMessage, encode

Frame = str | bytes
# What the writer receives: a frame, or None for "close the connection now".
Outgoing = Frame | None


@attrs.define(eq=False)
class Outbox:
    _send: trio.MemorySendChannel[Outgoing]

    @classmethod
    def open(cls, size: int) -> tuple[Outbox, trio.MemoryReceiveChannel[Outgoing]]:
        send, receive = trio.open_memory_channel[Outgoing](size)
        return cls(send), receive

    async def send(self, message: ServerMessage) -> None:
        await self._send.send(encode(message))

    async def send_binary(self, data: bytes) -> None:
        await self._send.send(data)

    def offer(self, message: ServerMessage) -> bool:
        """Queue without waiting; False (and dropped) if the queue is full or closed."""
        try:
            self._send.send_nowait(encode(message))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    async def close(self) -> None:
        """Queue a graceful close after the frames already queued (waits if full)."""
        await self._send.send(None)

    async def aclose(self) -> None:
        await self._send.aclose()
