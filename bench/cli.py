"""`python -m bench` / `just bench`: load-test ffserve against plain FFmpeg, print a report.

python -m bench                         start a server, run every scenario but the opt-in ones
python -m bench --scenarios abuse       only those named (abuse runs only when named)
python -m bench --quick                 a reduced set, under two minutes
python -m bench --url ws://127.0.0.1:8080/   bench a running v1 server instead
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs
import trio

from bench import plot
from bench.media import Media, generate
from bench.report import Report
from bench.scenarios import DEFAULT_SCENARIOS, OPT_IN, SCENARIOS, Bench, Sizes, run_scenario
from bench.server import REPO, Target, TargetError, connect_target, open_server

DEFAULT_JSON = REPO / "bench" / "results" / "latest.json"
NOFILE_WANTED = 65536


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Load-test ffserve; every figure is compared with plain FFmpeg run "
        "in the same run, interleaved, on the same machine.",
    )
    target = parser.add_argument_group("target")
    target.add_argument("--url", help="bench a running v1 server (ws://host:port/) instead")
    target.add_argument("--health-url", help="its /health (default: HTTP port = WS port + 1)")
    target.add_argument(
        "--allow-remote", action="store_true", help="allow a --url that is not loopback"
    )
    target.add_argument(
        "--workers", type=int, help="worker slots of the started server (default: CPU count)"
    )
    what = parser.add_argument_group("what to run")
    what.add_argument("--quick", action="store_true", help="small N: under two minutes")
    what.add_argument(
        "--scenarios",
        help=f"comma-separated subset of: {', '.join(SCENARIOS)} "
        f"(run only when named: {', '.join(sorted(OPT_IN))})",
    )
    what.add_argument("-n", "--jobs", type=int, help="N of the small-job and throughput runs")
    what.add_argument("--concurrency", type=int, help="client concurrency of the throughput run")
    what.add_argument("--long-jobs", type=int, help="N of the long-job run")
    what.add_argument(
        "--long-seconds", type=float, default=10.0, help="length of the long clip (default 10)"
    )
    what.add_argument("--upload-mb", type=float, help="size of the large upload in MiB")
    what.add_argument(
        "--big-mb",
        type=float,
        help="size of the big_file scenario's chunked upload in MiB (default 500, quick 64)",
    )
    what.add_argument(
        "--chunk-window",
        type=int,
        help="unacknowledged 1 MiB chunks the big_file client keeps in flight (default 4)",
    )
    what.add_argument("--connections", type=int, help="idle connections to open")
    what.add_argument("--fairness-jobs", type=int, help="jobs queued by the crowded connection")
    what.add_argument("--timeout", type=float, help="seconds each scenario may take at most")
    what.add_argument(
        "--abuse-seconds",
        type=float,
        help="length of each phase of the abuse scenario (default 12, quick 4)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    out.add_argument("--plot", type=Path, help="also write an HTML report with charts")
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = Sizes.quick() if args.quick else Sizes()
    changes: dict[str, Any] = {}
    if args.jobs is not None:
        changes.update(
            small_n=args.jobs,
            throughput_n=args.jobs,
            small_batch=max(1, min(sizes.small_batch, args.jobs // 2)),
        )
    for field, value in (
        ("concurrency", args.concurrency),
        ("long_n", args.long_jobs),
        ("upload_mb", args.upload_mb),
        ("big_file_mb", args.big_mb),
        ("chunk_window", args.chunk_window),
        ("connections", args.connections),
        ("fairness_jobs", args.fairness_jobs),
        ("scenario_timeout_s", args.timeout),
        ("abuse_phase_s", args.abuse_seconds),
    ):
        if value is not None:
            changes[field] = value
    return attrs.evolve(sizes, **changes)


def raise_open_files_limit(wanted: int = NOFILE_WANTED) -> int:
    """Raise RLIMIT_NOFILE as far as allowed; a started server inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def ffmpeg_version() -> str:
    try:
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    words = out.stdout.decode(errors="replace").split()
    return words[2] if len(words) > 2 else "unknown"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


async def run(args: argparse.Namespace, names: list[str]) -> Report:
    sizes = sizes_from(args)
    nofile = raise_open_files_limit()
    load_start = os.getloadavg()[0]
    started = _now()
    # A refused target is refused before any work is done.
    target = None
    if args.url:
        target = await connect_target(
            args.url, args.health_url, args.workers, allow_remote=args.allow_remote
        )
    with tempfile.TemporaryDirectory(prefix="ffserve-bench-") as tmp:
        scratch = Path(tmp)
        _log("generating media with lavfi")
        media = await trio.to_thread.run_sync(
            lambda: generate(
                scratch / "media", long_seconds=args.long_seconds, upload_mb=sizes.upload_mb
            )
        )
        if target is not None:
            report = await _run_all(target, media, sizes, scratch, names)
        else:
            workers = args.workers or os.cpu_count() or 1
            (scratch / "server").mkdir()
            _log(f"starting ffserve with {workers} workers")
            async with open_server(
                workers, scratch / "server", log_path=scratch / "server.log"
            ) as started_target:
                report = await _run_all(started_target, media, sizes, scratch, names)
    report.started_at = started
    report.finished_at = _now()
    report.mode = "quick" if args.quick else "full"
    report.environment.update(
        cpus=os.cpu_count(),
        python=platform.python_version(),
        ffmpeg=ffmpeg_version(),
        loadavg_1m_start=round(load_start, 2),
        loadavg_1m_end=round(os.getloadavg()[0], 2),
        rlimit_nofile=nofile,
    )
    return report


async def _run_all(
    target: Target, media: Media, sizes: Sizes, scratch: Path, names: list[str]
) -> Report:
    (scratch / "plain").mkdir(exist_ok=True)
    bench = Bench(target, media, sizes, scratch / "plain")
    report = Report(
        "",
        "",
        "",
        environment={},
        target={
            "url": target.url,
            "started_by_bench": target.spawned,
            "workers": target.workers,
            "server_pid_visible": target.watch is not None,
            "features": ",".join(sorted(target.features)) or None,
        },
    )
    for name in names:
        _log(f"scenario {name}")
        start = trio.current_time()
        result = await run_scenario(bench, name)
        _log(f"scenario {name}: {result.status} in {trio.current_time() - start:.1f} s")
        report.scenarios.append(result)
    return report


def scenario_names(asked: str | None) -> list[str]:
    """The scenarios to run: those named in `--scenarios`, else the default run (every
    scenario but the opt-in ones). Errors: ValueError naming unknown scenarios."""
    if not asked:
        return list(DEFAULT_SCENARIOS)
    names = [n.strip() for n in asked.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}")
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        names = scenario_names(args.scenarios)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    try:
        report = trio.run(run, args, names)
    except TargetError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    print(report.text(), end="")
    report.write_json(args.json)
    _log(f"wrote {args.json}")
    if args.plot:
        plot.write(report, args.plot)
        _log(f"wrote {args.plot}")
    return 0
