"""What an operator sees of real jobs: `/metrics` (parsed as Prometheus parses it) and the
structured log lines (`ffserve.events`, through the JSON formatter of `--log-format json`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from ffserve.metrics import JOB_CODES, OUTCOMES
from ffserve.service.logs import JsonFormatter
from ffserve.service.server import Endpoints
from ffserve.wire.options import OPERATIONS
from tests.conftest import Media
from tests.helpers import Client, binary_frame, connect

HISTOGRAMS = (
    "ffserve_job_seconds",
    "ffserve_ffmpeg_seconds",
    "ffserve_queue_wait_seconds",
    "ffserve_probe_seconds",
    "ffserve_input_bytes",
    "ffserve_output_bytes",
    "ffserve_upload_throughput_bytes_per_second",
    "ffserve_delivery_throughput_bytes_per_second",
)
GAUGES = ("ffserve_connections", "ffserve_jobs_running", "ffserve_jobs_queued")


async def scrape(server: Endpoints) -> tuple[str, dict[str, Metric]]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{server.http_port}/metrics")
    assert response.status_code == 200
    # What prometheus-client's own exporters send with `generate_latest`.
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    families = {m.name: m for m in text_string_to_metric_families(response.text)}
    return response.text, families


def value(families: dict[str, Metric], name: str, suffix: str = "", **labels: str) -> float:
    """The sample `name+suffix` with exactly `labels` (histograms: le aside)."""
    family = families[name]
    for sample in family.samples:
        if sample.name == name + suffix and sample.labels == labels:
            return sample.value
    raise AssertionError(f"no sample {name}{suffix}{labels}")


async def run_failing(client: Client, job_id: str = "bad") -> dict[str, object]:
    """A thumbnail of bytes that are no media: the job fails with INVALID_MEDIA."""
    await client.start(job_id, "thumbnail", {"timestamp": 0.5})
    await client.ws.send_message(binary_frame(job_id, "junk.mp4", b"\x00" * 4096))
    return (await client.collect(job_id)).final


async def test_metrics_series_exist_from_the_start_and_count_real_jobs(
    server: Endpoints, media: Media
) -> None:
    with trio.fail_after(60):
        text, before = await scrape(server)
        # Every series is there before any job, with HELP and TYPE.
        for name in ("ffserve_jobs", "ffserve_job_errors", *HISTOGRAMS, *GAUGES):
            assert f"# HELP {name}" in text, name
        assert "# TYPE ffserve_jobs_total counter" in text
        assert "# TYPE ffserve_job_seconds histogram" in text
        assert "# TYPE ffserve_connections gauge" in text
        assert before["ffserve_jobs"].type == "counter"
        assert before["ffserve_ffmpeg_seconds"].type == "histogram"
        for operation in OPERATIONS:
            for outcome in OUTCOMES:
                assert (
                    value(before, "ffserve_jobs", "_total", operation=operation, outcome=outcome)
                    == 0
                )
            for code in JOB_CODES:
                assert (
                    value(before, "ffserve_job_errors", "_total", operation=operation, code=code)
                    == 0
                )
            assert value(before, "ffserve_job_seconds", "_count", operation=operation) == 0
        assert value(before, "ffserve_queue_wait_seconds", "_count") == 0
        assert "process_resident_memory_bytes" in before  # the process collector
        assert value(before, "ffserve_worker_capacity") == 2

        async with connect(server.url) as client:
            done = await client.run("thumbnail", media.clip, {"timestamp": 1.0})
            assert done.final["type"] == "completed", done.final
            failed = await run_failing(client)
            assert failed["code"] == "INVALID_MEDIA", failed
            _, during = await scrape(server)
            assert value(during, "ffserve_connections") == 1
        _, after = await scrape(server)

    def grew(name: str, suffix: str = "_count", **labels: str) -> float:
        return value(after, name, suffix, **labels) - value(before, name, suffix, **labels)

    assert grew("ffserve_jobs", "_total", operation="thumbnail", outcome="completed") == 1
    assert grew("ffserve_jobs", "_total", operation="thumbnail", outcome="failed") == 1
    assert grew("ffserve_jobs", "_total", operation="thumbnail", outcome="cancelled") == 0
    assert grew("ffserve_job_errors", "_total", operation="thumbnail", code="INVALID_MEDIA") == 1
    assert grew("ffserve_job_seconds", operation="thumbnail") == 2
    assert grew("ffserve_ffmpeg_seconds", operation="thumbnail") == 1  # the failed one never ran
    assert value(after, "ffserve_ffmpeg_seconds", "_sum", operation="thumbnail") > 0
    for name in ("ffserve_queue_wait_seconds", "ffserve_output_bytes"):
        assert grew(name) == 1, name
    assert grew("ffserve_probe_seconds") == 1  # the junk never got through its probe
    assert grew("ffserve_input_bytes") == 2
    assert grew("ffserve_input_bytes", "_sum") == media.clip.stat().st_size + 4096
    assert grew("ffserve_upload_throughput_bytes_per_second") == 2
    assert grew("ffserve_delivery_throughput_bytes_per_second") == 1
    assert value(after, "ffserve_connections") == 0
    assert value(after, "ffserve_jobs_running") == value(after, "ffserve_jobs_queued") == 0


@pytest.fixture
def json_log(caplog: pytest.LogCaptureFixture) -> Iterator[list[dict[str, object]]]:
    """The service's event lines as `--log-format json` writes them, each checked to be
    one line of JSON; filled as the test runs."""
    caplog.set_level(logging.INFO, logger="ffserve.events")
    lines: list[dict[str, object]] = []
    formatter = JsonFormatter()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            line = formatter.format(record)
            assert "\n" not in line and "\r" not in line, line
            lines.append(json.loads(line))

    handler = Collect()
    logger = logging.getLogger("ffserve.events")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


async def test_json_log_has_one_line_per_job_end_and_connection(
    server: Endpoints, media: Media, json_log: list[dict[str, object]], tmp_path: Path
) -> None:
    forged = 'clip.mp4\n2026-01-01 INFO ffserve.events: job_end outcome="completed"'
    named = tmp_path / "clip.mp4"
    named.write_bytes(media.clip.read_bytes())
    with trio.fail_after(60):
        async with connect(server.url) as client:
            await client.start("good", "thumbnail", {"timestamp": 1.0})
            await client.upload("good", named, filename=forged)
            done = await client.collect("good")
            assert done.final["type"] == "completed", done.final
            await run_failing(client)
        while not any(line["event"] == "connection_close" for line in json_log):  # noqa: ASYNC110
            await trio.sleep(0.01)
    ends = {line["job_id"]: line for line in json_log if line["event"] == "job_end"}
    (opened,) = [line for line in json_log if line["event"] == "connection_open"]
    (closed,) = [line for line in json_log if line["event"] == "connection_close"]
    good, bad = ends["good"], ends["bad"]
    assert good["connection"] == bad["connection"] == opened["connection"] == closed["connection"]
    assert good["operation"] == bad["operation"] == "thumbnail"
    assert (good["outcome"], good["code"]) == ("completed", None)
    assert (bad["outcome"], bad["code"]) == ("failed", "INVALID_MEDIA")
    assert good["bytes_in"] == media.clip.stat().st_size and bad["bytes_in"] == 4096
    assert isinstance(good["bytes_out"], int) and good["bytes_out"] > 0 and bad["bytes_out"] == 0
    assert isinstance(good["seconds"], float) and good["seconds"] > 0
    assert good["inputs"] == [forged]  # the client's name, whole, inside one JSON string
    assert closed["jobs"] == 2 and opened["client"] == "127.0.0.1"
    assert good["level"] == "info" and good["logger"] == "ffserve.events"
    for line in json_log:
        assert str(tmp_path) not in json.dumps(line)


async def test_text_log_escapes_a_client_file_name(
    server: Endpoints, media: Media, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The default text line: `key=repr(value)`, so a newline in a name stays escaped."""
    caplog.set_level(logging.INFO, logger="ffserve.events")
    with trio.fail_after(60):
        async with connect(server.url) as client:
            await client.start("j\nobs", "thumbnail", {"timestamp": 1.0})
            await client.upload("j\nobs", media.clip, filename="a\nb.mp4")
            assert (await client.collect("j\nobs")).final["type"] == "completed"
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("job_end")]
    assert "\n" not in line
    assert "job_id='j\\nobs'" in line and "inputs=['a\\nb.mp4']" in line, line
    assert "outcome='completed'" in line
