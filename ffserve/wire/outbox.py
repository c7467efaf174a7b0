"""A connection's one outbound queue, drained by its writer task.

The queue is bounded, so a client that reads slowly slows down the jobs sending to it
(back-pressure) instead of growing server memory. Binary frames (chunks of up to a MiB
or more, v1 outputs as `FileFrame`s read from disk while they are sent) are bounded
separately and more tightly: at most BINARY_IN_FLIGHT of them wait for the writer at
once, so a stalled reader pins a couple of chunks (or open files), not a queue full of
them. Progress updates are the exception: they are offered without waiting and dropped
when the queue is full, because a newer one will follow and a late one is worthless.

`close()` queues an end marker (`Closing`) behind everything already owed to the client:
the writer sends those frames, then the close frame (server shutdown: 1001, waiting for
the client's answer; a protocol error the client made: its code, closing at once).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import BinaryIO

import attrs
import trio

from ffserve.wire.messages import ServerMessage, encode

BINARY_IN_FLIGHT = 2


@attrs.define(eq=False)
class FileFrame:
    """A binary frame whose payload is read from an open file as it is sent (a v1
    output), so the file is never held in memory. Whoever drops it unsent closes it."""

    header: bytes  # the binary frame's length-prefixed JSON header
    file: BinaryIO
    size: int  # bytes of the file to send

    def close(self) -> None:
        self.file.close()


Frame = str | bytes | FileFrame


@attrs.frozen
class Closing:
    """The end marker: send this close frame after what is queued before it."""

    code: int
    reason: str
    await_reply: bool  # wait for the client's close frame (a graceful close)


# What the writer receives: a frame, or the end marker.
Outgoing = Frame | Closing


@attrs.define(eq=False)
class Outbox:
    _send: trio.MemorySendChannel[Outgoing]
    _binary_slots: trio.Semaphore = attrs.Factory(lambda: trio.Semaphore(BINARY_IN_FLIGHT))

    @classmethod
    def open(cls, size: int) -> tuple[Outbox, trio.MemoryReceiveChannel[Outgoing]]:
        send, receive = trio.open_memory_channel[Outgoing](size)
        return cls(send), receive

    async def send(self, message: ServerMessage) -> None:
        await self._send.send(encode(message))

    @asynccontextmanager
    async def binary_slot(self) -> AsyncIterator[BinarySlot]:
        """Hold a place for one binary frame. Take it before reading a chunk into memory
        or opening an output, so a reader that has stalled pins at most BINARY_IN_FLIGHT
        frames' bytes (or open files). A place not passed on (sent, or held for later)
        is given back on leaving the block."""
        await self._binary_slots.acquire()
        slot = BinarySlot(self)
        try:
            yield slot
        finally:
            if not slot.passed_on:
                self._binary_slots.release()

    async def send_binary(self, data: bytes) -> None:
        async with self.binary_slot() as slot:
            await slot.send(data)

    async def _queue_binary(self, frame: bytes | FileFrame) -> None:
        """Queue a frame whose place is taken; the writer frees the place once sent. If
        it cannot be queued the place is freed (and a file frame closed) here."""
        try:
            await self._send.send(frame)
        except BaseException:
            self._binary_slots.release()
            if isinstance(frame, FileFrame):
                frame.close()
            raise

    def sent(self, frame: Frame) -> None:
        """The writer has sent `frame`: a binary frame frees its slot."""
        if not isinstance(frame, str):
            self._binary_slots.release()

    def offer(self, message: ServerMessage) -> bool:
        """Queue without waiting; False (and dropped) if the queue is full or closed."""
        try:
            self._send.send_nowait(encode(message))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    async def close(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Queue a graceful close after the frames already queued (waits if full)."""
        await self._send.send(Closing(code, reason, await_reply=True))

    async def fail(self, code: int, reason: str) -> None:
        """Queue the close frame a protocol error is answered with, after the replies
        already owed to the client's earlier messages (waits if full)."""
        await self._send.send(Closing(code, reason, await_reply=False))


@attrs.define(eq=False)
class BinarySlot:
    """A place taken in the outbox for one binary frame (see `Outbox.binary_slot`)."""

    _outbox: Outbox
    passed_on: bool = False

    async def send(self, frame: bytes | FileFrame) -> None:
        """Queue `frame` in this place (waits while the queue is full)."""
        self.passed_on = True
        await self._outbox._queue_binary(frame)

    def hold(self, frame: bytes | FileFrame) -> HeldFrame:
        """Keep the place for `frame`, to be sent later (a job's last frame goes out
        after its files are removed): the `HeldFrame` owns the place from now on."""
        self.passed_on = True
        return HeldFrame(self._outbox, frame)


@attrs.define(eq=False)
class HeldFrame:
    """A binary frame with its outbox place taken. `send` frees the place (and closes a
    file frame) if the frame cannot be queued."""

    _outbox: Outbox
    frame: bytes | FileFrame

    async def send(self) -> None:
        await self._outbox._queue_binary(self.frame)
