"""One job from `start_job` to its last message: uploads out, progress and outputs in.

    run_job
     |- uploader (chunked uploads, paced by upload_progress)
     '- the job's messages: progress -> completed -> output chunks -> Result

Cancellation: if `run_job` is cancelled (or fails) before the job has ended, it sends
`cancel_job` and waits up to `CANCEL_GRACE_S`, shielded, for the job's last message
(JOB_CANCELLED, or the rest of a delivery already under way), so the server is left with
nothing of the job. Partial outputs are removed. Errors: ServerError (its subclass by
code), TransferError, ConnectionFailed; `retryable` set on a BUSY or SHUTTING_DOWN
refusal before the job's `ack`, and on a connection lost before the `ack` and before any
byte of input went out (ffserve.client.retry).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ffserve.client.errors import Busy, ConnectionFailed, ServerError, one_error, server_error
from ffserve.client.progress import JobProgress
from ffserve.client.result import Output, Result
from ffserve.client.transfer import OutputWriter, UploadWindow, file_spec, send_file

if TYPE_CHECKING:
    from ffserve.client.connection import Client, Incoming

CANCEL_GRACE_S = 5.0
NOT_THE_END = frozenset({"INVALID_CHUNK", "CANCEL_FAILED"})  # errors that end no job
Report = Callable[[JobProgress], None]


def _is_url(value: str | os.PathLike[str]) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


async def run_job(
    client: Client,
    job_id: str,
    operation: str,
    inputs: list[str | os.PathLike[str]],
    options: dict[str, Any],
    *,
    out_dir: Path,
    progress: Report | None,
) -> Result:
    """Run `operation` on `inputs` (paths to upload, or one http(s) URL for the server to
    fetch) and write its outputs into `out_dir` under the names the server gives them."""
    url = inputs[0] if inputs and _is_url(inputs[0]) else None
    paths = [Path(p) for p in (inputs[1:] if url else inputs)]
    specs = [await trio.to_thread.run_sync(file_spec, path) for path in paths]
    source: dict[str, Any] = {"source": "url", "url": url} if url else {"source": "upload"}
    if paths and not url:
        source["files"] = specs
    # Chunks of the size the client uploads in (the server lowers it to its own limit).
    delivery = {"mode": "chunked", "chunk_kb": client.chunk_kb}
    start = {
        "type": "start_job",
        "job_id": job_id,
        "operation": operation,
        "input": source,
        "options": options,
        "progress": {"detail": True},
    }
    if operation != "probe":  # probe sends no file: delivery does not apply
        start["delivery"] = delivery
    tracker = _Job(client, job_id, out_dir, progress or (lambda _: None), specs)
    channel = client.route(job_id)
    try:
        with one_error():
            async with channel:
                try:
                    await client.send(start)
                    tracker.started = True
                    async with trio.open_nursery() as nursery:
                        if paths and not url:
                            nursery.start_soon(tracker.upload, paths, specs)
                        result = await tracker.follow(channel)
                        nursery.cancel_scope.cancel()
                    return result
                except BaseException:
                    if tracker.started and not tracker.ended:
                        with trio.move_on_after(CANCEL_GRACE_S, shield=True):
                            await tracker.cancel(channel)
                    raise
                finally:
                    await tracker.discard()
    except (Busy, ConnectionFailed) as error:
        error.retryable = tracker.untaken(error)
        raise
    finally:
        client.unroute(job_id)


@attrs.define(eq=False)
class _Job:
    client: Client
    job_id: str
    out_dir: Path
    report: Report
    specs: list[dict[str, Any]]
    started: bool = False  # start_job has gone out: there may be a job to cancel
    acknowledged: bool = False  # the server took the job (`ack`)
    sent_input: bool = False  # a byte of upload has gone out
    ended: bool = False
    window: UploadWindow = attrs.field(init=False)
    writers: dict[int, OutputWriter] = attrs.Factory(dict)
    done: list[Output] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self.window = UploadWindow(self.client.chunk_kb * 1024)

    async def upload(self, paths: list[Path], specs: list[dict[str, Any]]) -> None:
        for index, (path, spec) in enumerate(zip(paths, specs, strict=True)):
            await send_file(self._send_input, self.job_id, index, path, spec["size"], self.window)

    async def _send_input(self, chunk: bytes) -> None:
        self.sent_input = True  # from here on, a lost connection leaves the job unknown
        await self.client.send(chunk)

    def untaken(self, error: Busy | ConnectionFailed) -> bool:
        """Whether the server surely has not taken the job: it refused it before `ack`
        (chunks already sent for it are dropped), or the connection went before `ack`
        and before any input."""
        if self.acknowledged:
            return False
        return isinstance(error, Busy) or not self.sent_input

    async def follow(self, channel: trio.MemoryReceiveChannel[Incoming]) -> Result:
        """The job's messages until its last; returns its result or raises its error."""
        completed: dict[str, Any] | None = None
        async for item in channel:
            if isinstance(item, tuple):
                if completed is None:
                    continue  # not ours to read: no delivery was announced
                if await self._chunk(completed, *item):
                    return self._result(completed)
                continue
            kind = item.get("type")
            if kind == "error":
                error = server_error(item)
                if error.code == "INVALID_CHUNK":
                    self.window.refuse(error)
                    continue
                if error.code in NOT_THE_END:
                    continue
                self.ended = True
                raise error
            if kind == "ack":
                self.acknowledged = True
            elif kind == "upload_progress":
                self._uploaded(item)
            elif kind == "progress":
                self._progressed(item)
            elif kind == "completed":
                completed = item
                if item.get("delivery_method") not in ("chunked", "binary"):
                    self.ended = True  # probe, an output URL: nothing follows
                    return self._result(completed)
        raise ConnectionFailed(self.client.closed or "connection closed")

    async def cancel(self, channel: trio.MemoryReceiveChannel[Incoming]) -> None:
        """Ask the server to cancel the job and read until its last message."""
        try:
            await self.client.send({"type": "cancel_job", "job_id": self.job_id})
            await self.follow(channel)
        except (ServerError, ConnectionFailed):
            pass  # JOB_CANCELLED, most likely: the end that was asked for

    async def discard(self) -> None:
        for writer in self.writers.values():
            await writer.discard()

    def _uploaded(self, message: dict[str, Any]) -> None:
        file = int(message.get("file", 0))
        received = int(message.get("received_bytes", 0))
        self.window.acknowledged(file, received)
        before = sum(spec["size"] for spec in self.specs[:file])
        total = sum(spec["size"] for spec in self.specs) or 1
        done = before + received
        self.report(
            JobProgress(
                self.job_id,
                "upload",
                round(100 * done / total, 1),
                "upload",
                None,
                None,
                done,
                total,
            )
        )

    def _progressed(self, message: dict[str, Any]) -> None:
        stage = str(message.get("stage", ""))
        self.report(
            JobProgress(
                self.job_id,
                "queued" if stage == "queued" else "processing",
                float(message.get("percentage", 0.0)),
                stage,
                message.get("eta_s"),
                message.get("speed"),
            )
        )

    async def _chunk(self, completed: dict[str, Any], header: dict[str, Any], data: bytes) -> bool:
        """Write one delivered frame; True after the last frame of the last output."""
        outputs = completed.get("outputs") or [completed["output_metadata"]]
        index = int(header.get("index", 0))
        writer = self.writers.get(index)
        if writer is None:
            writer = self.writers[index] = OutputWriter.for_output(self.out_dir, outputs[index])
        await writer.write(int(header.get("offset", 0)), data)
        final = header.get("final", True)  # v1's single frame is whole
        if final:
            path = await self.writers.pop(index).finish()
            self.done.append(Output(path, outputs[index]))
        sizes = [int(o.get("size_bytes") or 0) for o in outputs]
        done = sum(sizes[:index]) + (sizes[index] if final else writer.written)
        total = sum(sizes) or 1
        self.report(
            JobProgress(
                self.job_id,
                "delivery",
                round(100 * done / total, 1),
                "delivery",
                None,
                None,
                done,
                total,
            )
        )
        last = final and index == len(outputs) - 1
        self.ended = self.ended or last
        return last

    def _result(self, completed: dict[str, Any]) -> Result:
        return Result(
            self.job_id, completed["output_metadata"], self.done, str(completed.get("message", ""))
        )
