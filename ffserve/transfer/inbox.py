"""A job's upload inbox: the pieces of its binary frames, from the reader to the intake.

Pieces wait in memory only a chunk or two deep (a v1 upload: a couple of the pieces it
arrives in): the reader waits for the job to write the previous one to disk, so no
uploader can make the server hold more than that.
"""

from __future__ import annotations

import attrs
import trio

from ffserve.wire.binary import UploadPart

PIECES_IN_FLIGHT = 2


@attrs.define(eq=False)
class UploadInbox:
    _send: trio.MemorySendChannel[UploadPart]
    _receive: trio.MemoryReceiveChannel[UploadPart]
    _closed: bool = False

    @classmethod
    def open(cls) -> UploadInbox:
        return cls(*trio.open_memory_channel[UploadPart](PIECES_IN_FLIGHT))

    async def put(self, part: UploadPart) -> bool:
        """Hand the job a piece; waits while earlier ones are being written.
        False once the job takes no more (it ended, and said why): drop the rest."""
        try:
            await self._send.send(part)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def get(self) -> UploadPart:
        return await self._receive.receive()

    def close(self) -> bool:
        """Take no more pieces (a reader blocked handing one over wakes up, refused).
        True when a piece was still waiting: bytes past the end of the input."""
        if self._closed:
            return False
        self._closed = True
        try:
            self._receive.receive_nowait()
            overrun = True
        except trio.WouldBlock:
            overrun = False
        self._receive.close()
        return overrun
