"""A connection's one outbound queue, drained by its writer task.

The queue is bounded, so a client that reads slowly slows down the jobs sending to it
(back-pressure) instead of growing server memory. Progress updates are the exception:
they are offered without waiting and dropped when the queue is full, because a newer
one will follow and a late one is worthless.
"""

from __future__ import annotations

import attrs
import trio

from ffserve.messages import ServerMessage, encode

Frame = str | bytes


@attrs.define(eq=False)
class Outbox:
    _send: trio.MemorySendChannel[Frame]

    @classmethod
    def open(cls, size: int) -> tuple[Outbox, trio.MemoryReceiveChannel[Frame]]:
        send, receive = trio.open_memory_channel[Frame](size)
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

    async def aclose(self) -> None:
        await self._send.aclose()
