"""The outbound queue: bounds, dropped progress, and binary places that cannot leak."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from ffserve.wire.messages import Pong, Progress
from ffserve.wire.outbox import BINARY_IN_FLIGHT, FileFrame, Outbox


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


async def test_a_slot_left_unused_is_given_back(autojump_clock: trio.testing.MockClock) -> None:
    """A place taken and not passed on (the read before the send failed, or was
    cancelled) frees itself on leaving the block; one passed on is the writer's."""
    outbox, outgoing = Outbox.open(32)
    for _ in range(BINARY_IN_FLIGHT + 1):
        with trio.move_on_after(1) as waited:
            async with outbox.binary_slot():
                pass  # nothing sent: the place comes back
        assert not waited.cancelled_caught
    with pytest.raises(OSError):
        async with outbox.binary_slot():
            raise OSError("the chunk could not be read")
    async with outbox.binary_slot() as slot:
        await slot.send(b"sent")
    async with outbox.binary_slot() as slot:
        held = slot.hold(b"held for later")
    with trio.move_on_after(1) as blocked:
        async with outbox.binary_slot():
            pass
    assert blocked.cancelled_caught  # both places are taken: one queued, one held
    await held.send()
    outbox.sent(outgoing.receive_nowait())
    with trio.fail_after(1):
        async with outbox.binary_slot():
            pass


async def test_a_frame_that_cannot_be_queued_frees_its_place_and_file(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    outbox, _outgoing = Outbox.open(1)
    await outbox.send(Pong())  # the queue is full: sends wait
    path = tmp_path / "out"
    path.write_bytes(b"output")
    async with outbox.binary_slot() as slot:
        held = slot.hold(FileFrame(b"", path.open("rb"), 6))
    file_frame = held.frame
    assert isinstance(file_frame, FileFrame)
    with trio.move_on_after(1):
        await held.send()
    assert file_frame.file.closed
    for _ in range(BINARY_IN_FLIGHT):  # every place is free again
        with trio.fail_after(1):
            async with outbox.binary_slot():
                pass
