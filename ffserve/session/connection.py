"""One WebSocket connection: a reader, a writer, and a task per job, in one nursery.

The reader takes messages in the pieces they arrive in (`ffserve.wire.websocket`): text
is collected up to a limit and decoded; a binary message's header names its job, and its
payload goes to that job's inbox as it comes, a chunk whole, a v1 upload piece by piece.
The reader waits only while a job writes the previous piece or chunk, which is what
paces a fast uploader. The writer (`ffserve.session.writer`) drains the connection's
bounded `Outbox`. When the client goes away the nursery is cancelled, which ends every
job of this connection (and nothing else). A connection left idle, with no job and no
message, is closed (`ffserve.session.idle`).
"""

from __future__ import annotations

import io
import logging
import secrets
from collections import deque
from collections.abc import Hashable

import attrs
import trio

from ffserve import events
from ffserve.errors import AdmissionError, ErrorCode, FFserveError, ProtocolError, ValidationError
from ffserve.ffmpeg.ops import METADATA_ONLY, inputs_expected
from ffserve.jobs.admission import ConnectionShare
from ffserve.jobs.job import Job
from ffserve.jobs.lifecycle import run_job
from ffserve.jobs.quota import Quota
from ffserve.jobs.services import Services
from ffserve.session.auth import ANONYMOUS, Authenticator, Principal, Unauthorized
from ffserve.session.drain import Drain, close_when_stopping, stop_jobs_when_overdue
from ffserve.session.idle import IdleDeadline, close_when_idle
from ffserve.session.writer import write_outbox
from ffserve.transfer.safehttp import check_url
from ffserve.wire.binary import BinaryFrame, UploadPart, decode_header
from ffserve.wire.frames import BinaryPart, TextPart
from ffserve.wire.messages import (
    Ack,
    CancelJob,
    Error,
    Ping,
    Pong,
    StartJob,
    UploadInput,
    UrlInput,
    decode_client_message,
    job_id_of,
)
from ffserve.wire.options import Options, ThumbnailOptions, parse_options
from ffserve.wire.outbox import Outbox
from ffserve.wire.websocket import ConnectionClosed, WebSocket, WebSocketRequest

log = logging.getLogger(__name__)
FINISHED_MEMORY = 256


@attrs.define(eq=False)
class Connection:
    services: Services
    outbox: Outbox
    nursery: trio.Nursery
    client: Hashable  # whose quota its jobs count against (`ffserve.jobs.quota`)
    quota: Quota
    # Who the connection acts for (its token's subject and claims).
    principal: Principal = ANONYMOUS
    connection_id: str = "-"  # names it in the log
    jobs_started: int = 0
    share: ConnectionShare = attrs.field(init=False)
    jobs: dict[str, Job] = attrs.Factory(dict)
    # Recently ended job ids, so a late frame can be told apart from a wrong id.
    finished: deque[str] = attrs.Factory(lambda: deque(maxlen=FINISHED_MEMORY))
    # Ids whose start_job was refused, so their uploads can be dropped without a reply.
    refused: deque[str] = attrs.Factory(lambda: deque(maxlen=FINISHED_MEMORY))
    _text: IncomingText = attrs.Factory(lambda: IncomingText())
    _binary: IncomingBinary = attrs.Factory(lambda: IncomingBinary())
    idle: IdleDeadline = attrs.field(init=False)

    async def on_message(self, text: str) -> None:
        try:
            message = decode_client_message(text)
        except FFserveError as exc:
            exc.job_id = exc.job_id or job_id_of(text)
            raise
        if isinstance(message, StartJob):
            await self.start_job(message)
        elif isinstance(message, CancelJob):
            self.cancel_job(message)
        else:
            assert isinstance(message, Ping)
            await self.outbox.send(Pong())

    def __attrs_post_init__(self) -> None:
        self.share = ConnectionShare(
            self.services.config.jobs.per_connection_limit, self.client, self.quota
        )
        self.idle = IdleDeadline(self.services.config.server.idle_timeout_s)

    def active(self) -> None:
        """A message came, or a job started or ended: the idle deadline moves."""
        self.idle.reset(busy=bool(self.jobs))

    async def start_job(self, message: StartJob) -> None:
        job_id = message.job_id
        try:
            previous = self.jobs.get(job_id)
            if previous is not None and previous.active:
                raise AdmissionError(
                    f"job {job_id!r} is already active on this connection",
                    code=ErrorCode.DUPLICATE_JOB,
                )
            options = parse_options(message.operation, message.options)
            _check_targets(message, options, self.services.config.security.url_ports)
            job = Job(
                job_id,
                message.operation,
                options,
                message.input,
                owner=self,
                delivery=message.delivery,
                output=message.output,
                connection_id=self.connection_id,
                progress_detail=bool(message.progress and message.progress.detail),
            )
            await self.nursery.start(self._job_task, job, _announced_sizes(message, options))
        except FFserveError as exc:
            exc.job_id = job_id
            if exc.code != ErrorCode.DUPLICATE_JOB:
                # Its uploads may already be on the wire (a v1 client need not wait for
                # the ack): they are dropped quietly, the error above was the job's last word.
                self.refused.append(job_id)
            raise
        if job_id in self.refused:
            self.refused.remove(job_id)

    async def _job_task(
        self, job: Job, upload_sizes: list[int], *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Admit `job` (errors reach `start_job` through `nursery.start`), acknowledge
        it, then run it; whatever it holds goes back together when it ends."""
        with self.services.admission.admit(self.share, job.operation, upload_sizes) as ticket:
            self.jobs[job.job_id] = job
            self.jobs_started += 1
            self.active()
            try:
                await self.outbox.send(Ack(job.job_id, f"{job.operation} job accepted"))
                task_status.started()
                await run_job(job, ticket, self.services, self.outbox)
            finally:
                # The id may already belong to a new job: a finished job's id is free at once.
                if self.jobs.get(job.job_id) is job:
                    del self.jobs[job.job_id]
                    self.finished.append(job.job_id)
                self.active()

    def cancel_job(self, message: CancelJob) -> None:
        job = self.jobs.get(message.job_id)
        if job is None:
            raise FFserveError(
                f"no active job {message.job_id!r} on this connection",
                code=ErrorCode.CANCEL_FAILED,
                job_id=message.job_id,
            )
        job.cancel()

    async def on_text(self, part: TextPart) -> None:
        """Collect a text message; at its end, handle it. Its size is bounded below, by
        the WebSocket's `max_text_bytes` (`[limits] max_text_kb`), which closes the
        connection past it rather than read an endless message."""
        # One buffer, not a list of parts: a client sending a message one character a
        # fragment must not cost an object per character.
        self._text.text.write(part.text)
        if not part.last:
            return
        incoming, self._text = self._text, IncomingText()
        await self.on_message(incoming.text.getvalue())

    async def on_binary(self, part: BinaryPart) -> None:
        """Route a piece of a binary message: its header names the job; a chunk goes to
        it whole (it is checked whole before a byte is written), a v1 upload piece by
        piece. A message nobody takes is read to its end and dropped."""
        incoming = self._binary
        if part.last:
            self._binary = IncomingBinary()
        if incoming.dropping or not (part.data or part.last):  # empty fragments carry nothing
            return
        data: bytes | bytearray | memoryview = part.data
        if incoming.frame is None:
            incoming.head += data
            try:
                frame = decode_header(incoming.head, complete=part.last)
            except ProtocolError:
                incoming.dropping = True
                raise
            if frame is None:
                return
            # Keep the header only: the payload view would pin the head buffer.
            data = bytes(frame.payload)
            incoming.frame = attrs.evolve(frame, payload=memoryview(b""))
            incoming.head = bytearray()
            incoming.dropping = True  # until the job is found and takes it
            incoming.job = self._route(frame)
            if incoming.job is None:
                return
            incoming.dropping = False
        job = incoming.job
        assert job is not None
        incoming.size += len(data)
        if job.chunked:
            # A chunk past the limit is counted, not kept: the job refuses it by its size.
            if incoming.size <= self.services.config.chunk_bytes:
                incoming.chunk += data
            if not part.last:
                return
            data = incoming.chunk if incoming.size <= self.services.config.chunk_bytes else b""
        piece = attrs.evolve(incoming.frame, payload=memoryview(data))
        incoming.dropping = not await job.inbox.put(UploadPart(piece, incoming.size, part.last))

    def _route(self, frame: BinaryFrame) -> Job | None:
        """The job a binary frame is for, or None to drop it quietly (its job was refused).

        Errors: ProtocolError(INVALID_BINARY) for an unknown or finished job, or one not
        waiting for an upload."""
        job = self.jobs.get(frame.job_id)
        if job is None and frame.job_id in self.refused:
            return None
        if job is None:
            why = "has already finished" if frame.job_id in self.finished else "is unknown"
            raise ProtocolError(
                f"binary frame for job {frame.job_id!r}, which {why}",
                code=ErrorCode.INVALID_BINARY,
                job_id=frame.job_id,
            )
        job.begin_upload()
        return job


@attrs.define
class IncomingText:
    text: io.StringIO = attrs.Factory(io.StringIO)


@attrs.define
class IncomingBinary:
    """The binary message being received: its header bytes until they decode, then the
    job its payload goes to; `dropping` once nobody takes the rest."""

    head: bytearray = attrs.Factory(bytearray)
    frame: BinaryFrame | None = None
    job: Job | None = None
    chunk: bytearray = attrs.Factory(bytearray)
    size: int = 0
    dropping: bool = False


def _check_targets(message: StartJob, options: Options, ports: tuple[int, ...]) -> None:
    """The URLs (on `ports`, `[security] url_ports`) and delivery a start_job names.

    Errors: ValidationError, JobError(URL_*).
    """
    if isinstance(message.input, UrlInput):
        check_url(message.input.url, ports=ports)
    if message.operation in METADATA_ONLY and (message.output or message.delivery):
        raise ValidationError(
            f"{message.operation} sends no file: output and delivery do not apply",
            field="$.output" if message.output else "$.delivery",
        )
    if message.output is not None:
        check_url(message.output.url, ports=ports, what="output.url")
        if isinstance(options, ThumbnailOptions) and (options.count or 1) > 1:
            raise ValidationError(
                "an output URL takes one file; thumbnail count > 1 makes several",
                field="$.output",
            )
        if message.delivery is not None:
            raise ValidationError("give either delivery or output, not both", field="$.output")


def _announced_sizes(message: StartJob, options: Options) -> list[int]:
    """The sizes of announced (chunked) uploads, for disk admission; none for v1 or URL.

    Errors: ValidationError for a file list that does not match the operation.
    """
    if not isinstance(message.input, UploadInput) or message.input.files is None:
        return []
    files = message.input.files
    wanted = inputs_expected(options)
    if len(files) != wanted:
        raise ValidationError(
            f"input.files must list {wanted} file(s) for this operation", field="$.input.files"
        )
    return [spec.size for spec in files]


async def serve_connection(
    request: WebSocketRequest,
    services: Services,
    drain: Drain,
    authenticator: Authenticator,
) -> None:
    """The handler for one WebSocket request; returns when the client has gone.
    `drain` is the server's shutdown (`ffserve.session.drain`): at its deadline the
    connection's jobs are stopped, and once none is left the connection sends what it
    owes its client and closes. A request without a valid token (with auth on)
    gets 401 before the upgrade, so no job code is reached."""
    config = services.config
    # Connection caps (and their 503s) are the front door's (ffserve.wire.door): this
    # connection has been counted since it was accepted.
    try:
        try:
            principal = authenticator.verify(request.request)
        except Unauthorized as exc:
            await _refuse(request, services, exc)
            return
        client = _client_key(request, principal)
        quota = Quota.of(config.quotas, principal.claims)
        quotas = services.admission.quotas
        try:
            quotas.connect(client, quota, trio.current_time())
        except AdmissionError as exc:
            services.audit.record(
                "handshake_refused",
                client=request.client,
                subject=principal.subject,
                reason=exc.message,
            )
            await request.reject(429, body=f"{exc.code}: {exc.message}".encode())
            return
        try:
            await _serve_accepted(request, services, drain, client, quota, principal)
        finally:
            quotas.disconnect(client)
    except ConnectionClosed:
        pass  # the client went away during the handshake
    except Exception:
        # One client's failure must never reach the server's nursery.
        log.exception("connection ended by an unexpected error")


def _client_key(request: WebSocketRequest, principal: Principal) -> Hashable:
    """Whom a connection's quota belongs to: its token's subject, or without auth its
    peer's address (tagged, so that no subject can be taken for an address)."""
    if principal.subject is not None:
        return ("subject", principal.subject)
    return ("address", request.client)


async def _serve_accepted(
    request: WebSocketRequest,
    services: Services,
    drain: Drain,
    client: Hashable,
    quota: Quota,
    principal: Principal,
) -> None:
    config = services.config
    ws = await request.accept(send_timeout=config.server.send_timeout_s)
    outbox, outgoing = Outbox.open(config.server.outbound_queue)
    connection_id = secrets.token_hex(4)
    opened = trio.current_time()
    events.record(
        "connection_open",
        connection=connection_id,
        client=request.client,
        subject=principal.subject,
    )
    jobs_started = 0
    try:
        async with trio.open_nursery() as nursery:
            connection = Connection(
                services, outbox, nursery, client, quota, principal, connection_id
            )
            nursery.start_soon(write_outbox, ws, outbox, outgoing, nursery.cancel_scope)
            nursery.start_soon(close_when_stopping, drain, outbox)
            nursery.start_soon(stop_jobs_when_overdue, drain, connection.jobs.values)
            _close_when_idle(nursery, ws, connection, request)
            try:
                await _read(ws, connection)
            finally:
                jobs_started = connection.jobs_started
            nursery.cancel_scope.cancel()
    finally:
        events.record(
            "connection_close",
            connection=connection_id,
            client=request.client,
            seconds=round(trio.current_time() - opened, 3),
            jobs=jobs_started,
        )


async def _refuse(request: WebSocketRequest, services: Services, refused: Unauthorized) -> None:
    """401 with the Bearer challenge (RFC 6750 3), counted and audited. The reason is a
    fixed phrase (never token text), so the client may be told it."""
    services.metrics.handshakes_unauthorized.inc()
    services.audit.record(
        "handshake_refused", client=request.client, subject=refused.subject, reason=refused.reason
    )
    await request.reject(
        401,
        body=f"unauthorized: {refused.reason}".encode(),
        headers=[(b"www-authenticate", refused.challenge)],
    )


async def _read(ws: WebSocket, connection: Connection) -> None:
    while True:
        try:
            part = await ws.receive()
        except ConnectionClosed:
            if ws.failure is not None:
                # The client broke the protocol: what its earlier messages are owed goes
                # out first, then the close frame; the writer then ends the connection.
                await connection.outbox.fail(*ws.failure)
                await trio.sleep_forever()
            return
        connection.active()
        try:
            if isinstance(part, TextPart):
                await connection.on_text(part)
            else:
                await connection.on_binary(part)
        except FFserveError as exc:
            await connection.outbox.send(Error(exc.code, exc.message, exc.job_id, exc.details))
        except Exception:
            # A bug must cost this message, not the server or the connection.
            log.exception("error handling a client message")
            await connection.outbox.send(
                Error(ErrorCode.INTERNAL_ERROR, "internal error handling the message")
            )


def _close_when_idle(
    nursery: trio.Nursery, ws: WebSocket, connection: Connection, request: WebSocketRequest
) -> None:
    """Close the connection once it has had no job and no message for `idle_timeout_s`."""

    def audit() -> None:
        audit = connection.services.audit
        audit.record("connection_dropped", client=request.client, subject=None, reason="idle")

    nursery.start_soon(close_when_idle, ws, connection.idle, nursery.cancel_scope, audit)
