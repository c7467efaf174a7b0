"""The bench's own pieces: statistics, /proc parsing, report building, plain FFmpeg, and a
smoke run of `python -m bench --quick` against a live server. No timing thresholds here:
judging the figures is the bench's job, not the tests'."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio

from bench.baseline import PlainFFmpeg
from bench.chunked import ChunkedJob, Outcome, chunk_header, split_frame
from bench.cli import main, scenario_names
from bench.media import Media, clip
from bench.pinger import Phase, PingLog
from bench.plot import cdf_svg, render
from bench.procstat import ProcessWatch, parse_stat, parse_status
from bench.rawws import CLOSE, CONTINUATION, TEXT, mask, masked, parse_frame, response_status
from bench.report import NOT_RUN, SCHEMA, Goal, Report, ScenarioResult
from bench.scenarios import DEFAULT_SCENARIOS, SCENARIOS, Bench, Sizes
from bench.scenarios.abuse import abuse, judge
from bench.scenarios.attacks import Attacker, Observed, reply_kind
from bench.scenarios.big_file import big_file
from bench.scenarios.cluster import cluster, retryable
from bench.server import Target, is_loopback
from bench.stats import Summary, percentile, rate, ratio
from scripts.cluster import find_haproxy

REPO = Path(__file__).resolve().parents[1]

# --- statistics -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.5),  # order does not matter
        ([7.0], 99, 7.0),
        (list(map(float, range(1, 101))), 95, 95.05),
        (list(map(float, range(1, 101))), 99, 99.01),
        ([10.0, 20.0], 25, 12.5),
    ],
)
def test_percentile_interpolates_linearly(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_refuses_nonsense(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, q)


def test_summary_and_ratios() -> None:
    summary = Summary.of([0.1, 0.2, 0.3, 0.4, 1.0])
    assert summary is not None
    assert (summary.n, summary.min, summary.max) == (5, 0.1, 1.0)
    assert summary.p50 == pytest.approx(0.3)
    assert summary.mean == pytest.approx(0.4)
    assert Summary.of([]) is None
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(1.0, 0.0) is None and ratio(None, 1.0) is None
    assert rate(10, 2.0) == 5.0 and rate(1, 0.0) is None


# --- /proc ----------------------------------------------------------------------------


def test_parse_stat_counts_fields_after_the_command_name() -> None:
    # A command name with spaces and a ')' must not shift the fields.
    fields = ["S", "42"] + ["0"] * 9 + ["150", "50", "7", "3"] + ["0"] * 30
    text = "1234 (py thon) x) " + " ".join(fields)
    assert parse_stat(text) == (42, 150, 50, 7, 3)


def test_parse_status_reads_vm_lines() -> None:
    text = "Name:\tpython\nVmPeak:\t  300 kB\nVmHWM:\t  120 kB\nVmRSS:\t  100 kB\nThreads:\t3\n"
    assert parse_status(text) == {"VmPeak": 300, "VmHWM": 120, "VmRSS": 100}


def test_process_watch_reads_this_process() -> None:
    watch = ProcessWatch(os.getpid())
    cpu = watch.cpu()
    assert cpu is not None and cpu.own > 0
    memory = watch.memory_kib()
    assert memory["VmRSS"] > 0 and memory["VmHWM"] >= memory["VmRSS"]


# --- report building ------------------------------------------------------------------


def sample_report() -> Report:
    latency = ScenarioResult("small_job_latency", "small job latency")
    latency.params.update(n=4, operation="thumbnail")
    latency.series["service"] = [0.2, 0.3, 0.25, 0.22]
    latency.series["plain ffmpeg"] = [0.1, 0.1, 0.12, 0.11]
    latency.compare = ("service", "plain ffmpeg")
    latency.metrics.update(service_jobs_per_s=4.0, plain_ffmpeg_jobs_per_s=9.0)
    latency.server.update(cpu_s=1.5, peak_rss_mib=80.0)
    latency.goals.append(Goal("small job p50 / plain FFmpeg", latency.ratios()["p50"], "<=", 1.3))
    skipped = ScenarioResult("big_file", "big file", status=NOT_RUN, reason="no chunked transfer")
    skipped.goals.append(Goal("side ping p99", None, "<", 20, "ms"))
    return Report(
        "2024-01-01T00:00:00+00:00",
        "2024-01-01T00:01:00+00:00",
        "quick",
        {"cpus": 2},
        {"url": "ws://127.0.0.1:1/", "workers": 2},
        [latency, skipped],
    )


def test_report_json_shape() -> None:
    data = json.loads(json.dumps(sample_report().to_json(), allow_nan=False))
    assert data["schema"] == SCHEMA
    first, second = data["scenarios"]
    assert first["series"]["service"]["summary"]["n"] == 4
    assert first["series"]["service"]["samples"] == [0.2, 0.3, 0.25, 0.22]
    assert first["latency_ratios"]["p50"] == pytest.approx(0.235 / 0.105)
    assert first["goals"][0]["met"] is False
    assert second["status"] == "not_run" and second["reason"] == "no chunked transfer"
    assert second["goals"][0]["met"] is None
    assert [g["scenario"] for g in data["goals"]] == ["small_job_latency", "big_file"]


def test_report_text_tables() -> None:
    text = sample_report().text()
    assert "== small job latency [small_job_latency] ==" in text
    assert "p50 ms" in text and "p99 ms" in text
    service_row = next(line for line in text.splitlines() if line.strip().startswith("service "))
    assert "235.0" in service_row  # p50 in ms
    assert "ratio service/plain ffmpeg" in text and "2.24x" in text
    assert "status: not_run: no chunked transfer" in text
    assert "NOT MET" in text and "not measured" in text
    assert "== targets (issue 5, part 4) ==" in text


@pytest.mark.parametrize(
    ("value", "op", "limit", "met"),
    [(1.0, "<=", 1.0, True), (1.0, "<", 1.0, False), (0.9, ">=", 0.85, True), (None, "<", 1, None)],
)
def test_goal_verdicts(value: float | None, op: str, limit: float, met: bool | None) -> None:
    assert Goal("g", value, op, limit).met is met


def test_plot_is_self_contained_svg() -> None:
    page = render(sample_report())
    assert page.count("<svg") >= 2 and "<polyline" in page
    assert "<script" not in page and "http" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    ).replace("ws://127.0.0.1:1/", "")
    assert "no samples" in cdf_svg({"empty": []})


def test_ping_log_sorts_samples_into_phases() -> None:
    log = PingLog(
        samples=[(1.0, 0.001), (2.5, 0.002), (3.5, 0.003)],
        phases=[Phase("service", 0.0, 2.0), Phase("plain", 2.0, 3.0), Phase("service", 3.0, 4.0)],
    )
    assert log.during("service") == [0.001, 0.003]
    assert log.during("plain") == [0.002]


def test_only_loopback_targets_by_default() -> None:
    assert is_loopback("ws://127.0.0.1:8080/") and is_loopback("ws://[::1]:8080/")
    assert is_loopback("ws://localhost:8080/")
    assert not is_loopback("ws://10.0.0.1:8080/") and not is_loopback("ws://example.com/")
    assert main(["--url", "ws://192.0.2.1:8080/", "--json", "/dev/null"]) == 2


# --- the big-file client ----------------------------------------------------------------


def test_chunk_frames_round_trip() -> None:
    frame = chunk_header("j", "in.mkv", 1048576) + b"payload"
    header, payload = split_frame(frame)
    assert header == {"job_id": "j", "filename": "in.mkv", "offset": 1048576}
    assert bytes(payload) == b"payload"
    for bad in (b"\0\0", b"\0\0\0\x09{}", b"\0\0\0\x02[]"):
        with pytest.raises(ValueError):
            split_frame(bad)


def _delivery(job_id: str, offset: int, data: bytes, *, final: bool) -> bytes:
    header = json.dumps({"job_id": job_id, "filename": "o.mkv", "offset": offset, "final": final})
    return len(header).to_bytes(4, "big") + header.encode() + data


def test_chunked_job_paces_uploads_and_checks_the_delivery(tmp_path: Path) -> None:
    source = tmp_path / "in.mkv"
    source.write_bytes(b"x" * 10)
    job = ChunkedJob("j", source, tmp_path / "out.mkv", chunk_bytes=4, window=2)
    sent: list[bytes] = []

    def send(frame: bytes) -> None:
        sent.append(frame)
        header, payload = split_frame(frame)
        # Acknowledge each chunk as the server would once it is on disk.
        end = header["offset"] + len(payload)
        total = job.size
        ack = {"type": "upload_progress", "job_id": "j", "received_bytes": end}
        assert not job.feed(json.dumps({**ack, "file": 0, "total_bytes": total}))

    job.upload(send)
    assert [split_frame(f)[0]["offset"] for f in sent] == [0, 4, 8]
    out = job.outcome
    assert out.sent_bytes == out.acked_bytes == 10 and out.upload_done is not None
    assert out.max_unacked_chunks == 1 and out.progress_messages == 3
    for message in (
        {"type": "progress", "job_id": "j", "percentage": 0, "stage": "queued"},
        {"type": "progress", "job_id": "j", "percentage": 100, "stage": "processing"},
        {"type": "progress", "job_id": "other", "percentage": 5, "stage": "processing"},
    ):
        assert not job.feed(json.dumps(message))
    digest = hashlib.sha256(b"abcdef").hexdigest()
    completed = {
        "type": "completed",
        "job_id": "j",
        "delivery_method": "chunked",
        "output_metadata": {"sha256": digest, "size_bytes": 6},
    }
    assert not job.feed(json.dumps(completed))
    assert not job.feed(_delivery("j", 0, b"abc", final=False))
    assert job.feed(_delivery("j", 3, b"def", final=True))
    assert (tmp_path / "out.mkv").read_bytes() == b"abcdef"
    assert out.ok and out.checksum_ok is True and out.delivery_chunks == 2
    assert out.queued and out.running and out.processed and out.latency is None  # not submitted
    assert Outcome.from_json(json.loads(json.dumps(attrs.asdict(out)))) == out


def test_chunked_job_refuses_a_gap_in_the_delivery(tmp_path: Path) -> None:
    source = tmp_path / "in.mkv"
    source.write_bytes(b"x")
    job = ChunkedJob("j", source, tmp_path / "out.mkv")
    completed = {"type": "completed", "job_id": "j", "delivery_method": "chunked"}
    job.feed(json.dumps({**completed, "output_metadata": {"sha256": "0" * 64}}))
    assert job.feed(_delivery("j", 5, b"abc", final=True))
    assert job.outcome.error is not None and "expected 0" in job.outcome.error
    job.close()
    error = ChunkedJob("k", source, tmp_path / "out2.mkv")
    assert error.feed(json.dumps({"type": "error", "job_id": "k", "code": "TOO_LARGE"}))
    assert error.outcome.error is not None and error.outcome.error.startswith("TOO_LARGE")


async def test_big_file_is_not_run_without_chunked_transfer(tmp_path: Path) -> None:
    v1 = Target("ws://127.0.0.1:1/", None, {"features": ["probe"]}, 2, None, spawned=False)
    media = Media(tmp_path / "s.mp4", tmp_path / "l.mp4", tmp_path / "b.wav")
    result = ScenarioResult("big_file", "big file")
    await big_file(Bench(v1, media, Sizes.quick(), tmp_path / "plain"), result)
    assert result.status == NOT_RUN and result.reason is not None
    assert "chunked transfer not available" in result.reason
    assert result.params["file_mib"] == 64
    assert [g.value for g in result.goals] == [None, None, None]
    assert not await trio.Path(tmp_path / "big_file").exists()  # nothing generated


# --- the abuse scenario ------------------------------------------------------------------


def test_abuse_runs_only_when_named() -> None:
    assert "abuse" in SCENARIOS and "abuse" not in DEFAULT_SCENARIOS
    assert scenario_names(None) == DEFAULT_SCENARIOS
    assert scenario_names("abuse, fairness") == ["abuse", "fairness"]
    with pytest.raises(ValueError, match="nonsense"):
        scenario_names("abuse,nonsense")


def test_raw_frames_are_masked_and_parsed() -> None:
    key = b"\x01\x02\x03\x04"
    assert mask(mask(b"hello world", key), key) == b"hello world"
    frame = masked(TEXT, b"x" * 300, fin=False, key=key)
    assert frame[0] == TEXT and frame[1] == 0x80 | 126  # FIN clear, masked, 16-bit length
    assert frame[4:8] == key and mask(frame[8:], key) == b"x" * 300
    assert masked(CONTINUATION, b"", fin=False)[:2] == b"\x00\x80"
    assert len(masked(CONTINUATION, b"", fin=False)) == 6
    # Server frames are unmasked; an incomplete one stays in the buffer.
    buffer = bytearray(b"\x81\x05hello\x88\x02\x03\xf1\x82\x7e\x01")
    first = parse_frame(buffer)
    assert first is not None and (first.fin, first.opcode, first.payload) == (True, TEXT, b"hello")
    close = parse_frame(buffer)
    assert close is not None and close.opcode == CLOSE and close.close_code == 1009
    assert parse_frame(buffer) is None and buffer == bytearray(b"\x82\x7e\x01")
    assert response_status(b"HTTP/1.1 429 Too Many Requests\r\nX: y") == 429
    assert response_status(b"garbage") == 0
    assert reply_kind(b'{"type": "error", "code": "QUOTA_EXCEEDED"}') == "QUOTA_EXCEEDED"
    assert reply_kind(b'{"type": "ack", "job_id": "j"}') == "ack"
    assert reply_kind(b"[") == "not JSON"


async def test_attacker_counts_what_the_server_did(nursery: trio.Nursery) -> None:
    """Against a fake server: one connection accepted then closed with 1008 after a reply,
    one refused with 429, one held open; every socket closed at the end."""
    answers = iter([b"101 Switching Protocols", b"429 Too Many Requests", b"101 OK"])
    peers: list[str] = []

    async def fake(stream: trio.SocketStream) -> None:
        peers.append(stream.socket.getpeername()[0])
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(4096)
        answer = next(answers)
        await stream.send_all(b"HTTP/1.1 " + answer + b"\r\n\r\n")
        if answer == b"101 Switching Protocols":
            reply = b'{"type": "error", "code": "BUSY"}'
            await stream.send_all(bytes([0x81, len(reply)]) + reply + b"\x88\x02\x03\xf0")
        await trio.sleep_forever()

    listeners = await nursery.start(partial(trio.serve_tcp, fake, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    observed = Observed()
    attacker = Attacker("127.0.0.1", port, "127.0.0.2", observed)
    with trio.fail_after(10):
        first = await attacker.connect()
        assert first is not None
        await attacker.watch(first)
        assert await attacker.connect() is None
        assert await attacker.connect() is not None
        await attacker.close_all()
    assert peers == ["127.0.0.2"] * 3
    assert (observed.attempted, observed.accepted) == (3, 2)
    figures = observed.figures()
    assert figures["refused"] == "HTTP 429 x1" and figures["replies"] == "BUSY x1"
    assert observed.ended == {"ended by server: close 1008": 1, "still open": 1}
    assert attacker.sockets == []


async def test_abuse_needs_an_ipv4_loopback_target(tmp_path: Path) -> None:
    v6 = Target("ws://[::1]:1/", None, {}, 2, None, spawned=False)
    media = Media(tmp_path / "s.mp4", tmp_path / "l.mp4", tmp_path / "b.wav")
    result = ScenarioResult("abuse", "abuse")
    await abuse(Bench(v6, media, Sizes.quick(), tmp_path / "plain"), result)
    assert result.status == NOT_RUN and result.reason is not None and "127." in result.reason
    assert len(result.goals) == 10 and all(g.value is None for g in result.goals)


def test_abuse_goals_compare_each_attack_with_idle() -> None:
    result = ScenarioResult("abuse", "abuse")
    result.series.update(
        {
            "victim job (idle)": [0.1, 0.1, 0.1],
            "side ping (idle)": [0.001] * 10,
            "victim job (flood)": [0.3, 0.3],
            "side ping (flood)": [0.001] * 10,
            "victim job (cut_off)": [],  # no job done: the worst, not "not measured"
            "side ping (cut_off)": [0.0015] * 10,
        }
    )
    judge(result, ["idle", "flood", "cut_off"])
    goals = {g.name: g for g in result.goals}
    assert goals["victim job p50, flood / idle"].value == pytest.approx(3.0)
    assert goals["victim job p50, flood / idle"].met is False
    assert goals["side ping p99, flood / idle"].met is True
    assert goals["victim job p50, cut_off / idle"].met is False
    assert goals["side ping p99, cut_off / idle"].value == pytest.approx(1.5)


# --- plain FFmpeg ---------------------------------------------------------------------


async def test_plain_ffmpeg_runs_the_service_command(tmp_path: Path) -> None:
    source = await trio.to_thread.run_sync(lambda: clip(tmp_path / "tiny.mp4", "160x120", 0.5))
    runs = tmp_path / "runs"
    runs.mkdir()
    plain = await trio.to_thread.run_sync(
        lambda: PlainFFmpeg.for_job("thumbnail", {"timestamp": 0.2}, source, runs)
    )
    command = plain.command(Path("/x"))
    assert command[0] == "ffmpeg" and "-progress" in command
    assert f"file:{source}" in command and command[-1] == "file:/x/output.jpg"
    with trio.fail_after(30):
        batch = await plain.run_batch(3, 2)
    assert len(batch.latencies) == 3 and all(t > 0 for t in batch.latencies)
    assert batch.wall >= max(batch.latencies)
    assert list(runs.iterdir()) == []  # every run's directory is removed


# --- smoke: the whole tool against a live server ----------------------------------------


def test_quick_bench_produces_a_complete_report(tmp_path: Path) -> None:
    out, page = tmp_path / "report.json", tmp_path / "report.html"
    args = [
        sys.executable, "-m", "bench", "--quick", "-n", "3", "--concurrency", "3",
        "--long-jobs", "1", "--long-seconds", "1", "--upload-mb", "2", "--connections", "20",
        "--fairness-jobs", "4", "--big-mb", "4", "--timeout", "60", "--json", str(out),
        "--plot", str(page),
    ]  # fmt: skip
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["schema"] == SCHEMA and data["mode"] == "quick"
    assert data["target"]["started_by_bench"] is True and data["target"]["workers"] >= 1
    scenarios = {s["name"]: s for s in data["scenarios"]}
    assert list(scenarios) == DEFAULT_SCENARIOS  # abuse only when named
    # Series that may be empty with tiny sizes: a 4 MiB upload can fall between two pings.
    may_be_empty = {"side ping (upload)", "side ping (delivery)", "side ping (processing)"}
    for name, scenario in scenarios.items():
        assert scenario["status"] == "ok", (name, scenario["reason"])
        assert scenario["series"], name
        for series_name, series in scenario["series"].items():
            if name == "big_file" and series_name in may_be_empty:
                continue
            assert series["summary"] is not None, (name, series_name)
        assert {"cpu_s", "peak_rss_mib"} <= set(scenario["server"]), name
        assert scenario["goals"], name
    for name in ("small_job_latency", "throughput", "long_job"):
        metrics = scenarios[name]["metrics"]
        assert metrics["service_errors"] == 0, scenarios[name]["notes"]
        assert metrics["throughput_ratio"] is not None
        assert scenarios[name]["series"]["service"]["summary"]["n"] >= 1
    assert scenarios["small_job_latency"]["latency_ratios"]["p50"] is not None
    assert scenarios["throughput"]["series"]["side ping (service batches)"]["samples"]
    assert scenarios["connections"]["metrics"]["opened"] == 20
    assert scenarios["fairness"]["metrics"]["single_error"] is None
    assert scenarios["large_upload"]["metrics"]["job_error"] is None
    big = scenarios["big_file"]
    size = big["params"]["file_bytes"]
    assert big["params"]["file_mib"] == 4 and size > 1024 * 1024  # "about": -fs overshoots
    metrics = big["metrics"]
    assert metrics["job_error"] is None and metrics["sha256_verified"] is True
    assert metrics["uploaded_bytes"] == size == metrics["delivered_bytes"]
    assert metrics["output_size_bytes"] == size  # a stream copy: as big as its input
    assert metrics["upload_progress_messages"] >= 1 and metrics["delivery_chunks"] >= 1
    assert 1 <= metrics["max_unacked_chunks"] <= big["params"]["window_chunks"]
    for key in ("upload_mb_per_s", "delivery_mb_per_s", "job_total_s", "plain_ffmpeg_s"):
        assert isinstance(metrics[key], float) and metrics[key] > 0, key
    assert big["series"]["plain ffmpeg (local files)"]["summary"]["n"] == 2
    assert big["latency_ratios"]["p50"] is not None
    assert big["series"]["side ping (whole job)"]["samples"]
    assert big["server"]["peak_rss_source"] in ("VmHWM", "sampled VmRSS")
    goals = {g["name"]: g for g in big["goals"]}
    assert goals["chunked upload MB/s (issue 4)"]["value"] == metrics["upload_mb_per_s"]
    assert goals["server peak RSS, big file (issue 4: at 300 MB)"]["value"] is not None
    assert "side ping p99, big chunked upload" in goals
    text = done.stdout
    assert "== targets (issue 5, part 4) ==" in text
    assert all(f"[{name}]" in text for name in DEFAULT_SCENARIOS)
    assert "<svg" in page.read_text()


# --- cluster (issue 14): instances behind HAProxy ----------------------------------------


@pytest.mark.parametrize(
    ("error", "again"),
    [
        ("BUSY: the queue is full", True),
        ("SHUTTING_DOWN: server shutting down", True),
        ("connect: ConnectionRejected", True),
        ("connect: ConnectionRefusedError", True),
        ("connection closed while sending", True),
        ("connection closed", False),  # after the upload: the job may have run
        ("JOB_FAILED: FFmpeg could not process the input", False),
        ("no result within 120 s", False),
    ],
)
def test_the_cluster_clients_retry_only_what_started_no_job(error: str, again: bool) -> None:
    assert retryable(error) is again


def test_cluster_runs_only_when_named() -> None:
    assert "cluster" in SCENARIOS and "cluster" not in DEFAULT_SCENARIOS


async def test_cluster_is_not_run_without_haproxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bench.balancer.find_haproxy", lambda: None)
    target = Target("ws://127.0.0.1:1/", None, {}, 2, None, spawned=False)
    media = Media(tmp_path / "s.mp4", tmp_path / "l.mp4", tmp_path / "b.wav")
    result = ScenarioResult("cluster", "cluster")
    await cluster(Bench(target, media, Sizes.quick(), tmp_path), result)
    assert result.status == NOT_RUN and result.reason is not None
    assert "haproxy is not installed" in result.reason
    assert list(await trio.Path(tmp_path).iterdir()) == []  # nothing started, nothing left


@pytest.mark.skipif(find_haproxy() is None, reason="haproxy is not installed")
def test_quick_cluster_scenario_reports_every_phase(tmp_path: Path) -> None:
    """Two pinned instances behind HAProxy, a few jobs per phase (~40 s). A rolling
    restart must lose no job; the kill must be seen by HAProxy (DOWN) and the figures
    must all be there. No timing is judged here."""
    out = tmp_path / "report.json"
    args = [
        sys.executable, "-m", "bench", "--quick", "--scenarios", "cluster", "-n", "4",
        "--concurrency", "4", "--timeout", "120", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (scenario,) = json.loads(out.read_text())["scenarios"]
    assert scenario["status"] == "ok", scenario["reason"]
    metrics = scenario["metrics"]
    assert metrics["throughput_errors"] == 0, scenario["notes"]
    assert metrics["throughput_ratio"] is not None
    assert metrics["plain_throughput_ratio"] is not None  # the machine's own scaling
    assert 0 <= metrics["two_core0_busy_share"] <= 1.05
    assert metrics["restart_jobs_submitted"] > 0
    assert metrics["restart_jobs_lost"] == 0, scenario["notes"]
    assert metrics["restart_jobs_completed"] == metrics["restart_jobs_submitted"]
    assert metrics["kill_down_after_ms"] is not None and metrics["kill_jobs_submitted"] > 0
    for series in ("direct to instance 1", "through HAProxy (instance 1)"):
        assert scenario["series"][series]["summary"]["n"] == 4
    assert "jobs lost in a rolling restart" in done.stdout
