"""What the server has done, counted for `/metrics` in the Prometheus text format.

Each `Metrics` has its own `CollectorRegistry` (never prometheus-client's global one), so
several servers in one process (the tests) keep apart, and `/metrics` shows one server's
figures. Every series exists from the start: the labelled ones are made for every
operation and outcome up front, so a dashboard sees zeros rather than nothing.

    ffserve_jobs_total{operation, outcome}        outcome: completed|failed|cancelled|aborted
    ffserve_job_errors_total{operation, code}     the code each failed job ended with
    ffserve_job_seconds{operation}                start_job to its last message
    ffserve_queue_wait_seconds                    planned to worker slot
    ffserve_ffmpeg_seconds{operation}             FFmpeg's run (every pass of the job)
    ffserve_probe_seconds                         reading the inputs' metadata
    ffserve_input_bytes / ffserve_output_bytes    per job
    ffserve_upload_throughput_bytes_per_second    an uploaded input, ack to last byte
    ffserve_delivery_throughput_bytes_per_second  results, verified to last frame queued
    ffserve_connections, ffserve_jobs_running, ffserve_jobs_queued, ffserve_worker_capacity
    ffserve_handshakes_unauthorized_total
    ffserve_handshakes_refused_total{reason}     by the front door: a connection cap, origin
    and the process collector's process_*

A job's figures are gathered as it runs in a `JobRecord` and counted once, when it ends
(`Metrics.job_ended`), so a job is in every series or in none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from ffserve.errors import ErrorCode

__all__ = ["CONTENT_TYPE", "OUTCOMES", "JobRecord", "Metrics"]

OUTCOMES = ("completed", "failed", "cancelled", "aborted")
# Codes a job can end with (admission refusals come before a job exists; they are not jobs).
JOB_CODES = (
    ErrorCode.JOB_FAILED,
    ErrorCode.INTERNAL_ERROR,
    ErrorCode.TIMEOUT,
    ErrorCode.TOO_LARGE,
    ErrorCode.INVALID_MEDIA,
    ErrorCode.NO_AUDIO_STREAM,
    ErrorCode.NO_VIDEO_STREAM,
    ErrorCode.NO_SUBTITLE_STREAM,
    ErrorCode.OUT_OF_RANGE,
    ErrorCode.VALIDATION_ERROR,
    ErrorCode.UNSUPPORTED_MEDIA,
    ErrorCode.URL_FORBIDDEN,
    ErrorCode.URL_FETCH_FAILED,
    ErrorCode.URL_UPLOAD_FAILED,
    ErrorCode.CHECKSUM_MISMATCH,
    ErrorCode.INVALID_CHUNK,
    ErrorCode.QUOTA_EXCEEDED,
    ErrorCode.BUSY,
    ErrorCode.SHUTTING_DOWN,
)
SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
BYTES = tuple(float(4**n * 1024) for n in range(1, 12))  # 4 KiB .. 4 GiB
RATES = tuple(float(2**n * 1024 * 1024) for n in range(-2, 11))  # 256 KiB/s .. 1 GiB/s


@attrs.define
class JobRecord:
    """One job's figures, filled in by its steps as it goes; None: that step never ran."""

    input_names: list[str] = attrs.Factory(list)  # as the client named them
    input_bytes: int = 0
    output_bytes: int = 0
    upload_s: float | None = None
    probe_s: float | None = None
    queue_wait_s: float | None = None
    ffmpeg_s: float | None = None
    delivery_began: float | None = None
    delivery_s: float | None = None


class Metrics:
    """The server's series, on a registry of its own. `operations`: every operation's
    name, for the labelled series made at the start."""

    def __init__(self, operations: Iterable[str] = ()) -> None:
        self.operations = tuple(operations)
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._connections = 0
        self.jobs = Counter(
            "ffserve_jobs", "Jobs ended, by operation and outcome", ["operation", "outcome"],
            registry=r,
        )  # fmt: skip
        self.job_errors = Counter(
            "ffserve_job_errors",
            "Failed jobs, by operation and the error code they ended with",
            ["operation", "code"],
            registry=r,
        )
        self.job_seconds = Histogram(
            "ffserve_job_seconds",
            "Seconds from a job's start_job to its last message",
            ["operation"],
            buckets=SECONDS,
            registry=r,
        )
        self.ffmpeg_seconds = Histogram(
            "ffserve_ffmpeg_seconds",
            "Seconds FFmpeg ran for one job",
            ["operation"],
            buckets=SECONDS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "ffserve_queue_wait_seconds",
            "Seconds a job waited for a worker slot",
            buckets=SECONDS,
            registry=r,
        )
        self.probe_seconds = Histogram(
            "ffserve_probe_seconds",
            "Seconds reading a job's inputs' metadata",
            buckets=SECONDS,
            registry=r,
        )
        self.input_bytes = Histogram(
            "ffserve_input_bytes", "Bytes of input per job", buckets=BYTES, registry=r
        )
        self.output_bytes = Histogram(
            "ffserve_output_bytes", "Bytes of output per job", buckets=BYTES, registry=r
        )
        self.upload_rate = Histogram(
            "ffserve_upload_throughput_bytes_per_second",
            "An uploaded input's bytes over the time from ack to its last byte",
            buckets=RATES,
            registry=r,
        )
        self.delivery_rate = Histogram(
            "ffserve_delivery_throughput_bytes_per_second",
            "A job's output bytes over the time to send them",
            buckets=RATES,
            registry=r,
        )
        self.handshakes_unauthorized = Counter(
            "ffserve_handshakes_unauthorized",
            "WebSocket upgrades refused for want of a valid token",
            registry=r,
        )
        # Labelled by ffserve.wire.door, which makes its series up front.
        self.handshakes_refused = Counter(
            "ffserve_handshakes_refused",
            "WebSocket connections refused by the front door, by reason",
            ["reason"],
            registry=r,
        )
        self._connections_gauge = Gauge(
            "ffserve_connections", "Open WebSocket connections", registry=r
        )
        for operation in self.operations:
            for outcome in OUTCOMES:
                self.jobs.labels(operation, outcome)
            for code in JOB_CODES:
                self.job_errors.labels(operation, code)
            self.job_seconds.labels(operation)
            self.ffmpeg_seconds.labels(operation)
        ProcessCollector(registry=r)

    @property
    def connections(self) -> int:
        return self._connections

    @connections.setter
    def connections(self, value: int) -> None:
        self._connections = value
        self._connections_gauge.set(value)

    def watch(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge read at each scrape, e.g. the worker pool's running jobs."""
        Gauge(f"ffserve_{name}", documentation, registry=self.registry).set_function(read)

    def job_ended(
        self, operation: str, outcome: str, code: str | None, seconds: float, record: JobRecord
    ) -> None:
        """Count one job, once, with everything its steps measured."""
        self.jobs.labels(operation, outcome).inc()
        if outcome == "failed" and code is not None:
            self.job_errors.labels(operation, code).inc()
        self.job_seconds.labels(operation).observe(seconds)
        if record.ffmpeg_s is not None:
            self.ffmpeg_seconds.labels(operation).observe(record.ffmpeg_s)
        if record.queue_wait_s is not None:
            self.queue_wait.observe(record.queue_wait_s)
        if record.probe_s is not None:
            self.probe_seconds.observe(record.probe_s)
        if record.input_bytes:
            self.input_bytes.observe(record.input_bytes)
            if record.upload_s:
                self.upload_rate.observe(record.input_bytes / record.upload_s)
        if record.output_bytes and outcome == "completed":
            self.output_bytes.observe(record.output_bytes)
            if record.delivery_s:
                self.delivery_rate.observe(record.output_bytes / record.delivery_s)

    def render(self) -> bytes:
        """The `/metrics` body; its content type is `CONTENT_TYPE`."""
        return generate_latest(self.registry)
