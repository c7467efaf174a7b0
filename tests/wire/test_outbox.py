from __future__ import annotations

import trio
import trio.testing

from ffserve.wire.messages import Pong, Progress
from ffserve.wire.outbox import BINARY_IN_FLIGHT, Outbox


async def test_binary_frames_waiting_for_the_writer_are_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox, outgoing = Outbox.open(32)
    for n in range(BINARY_IN_FLIGHT):
        await outbox.send_binary(bytes([n]))
    with trio.move_on_after(1) as blocked:
        await outbox.send_binary(b"one too many")
    assert blocked.cancelled_caught
    await outbox.send(Pong())  # text still flows past a stalled binary frame
    frame = outgoing.receive_nowait()
    outbox.sent(frame)  # the writer handed it to the socket: a slot frees
    with trio.fail_after(1):
        await outbox.send_binary(b"fits now")


async def test_progress_is_dropped_not_queued_when_full() -> None:
    outbox, outgoing = Outbox.open(1)
    assert outbox.offer(Progress("j", 1.0, "processing"))
    assert not outbox.offer(Progress("j", 2.0, "processing"))
    assert '"percentage":1.0' in str(outgoing.receive_nowait())
