"""The bench's results: one `ScenarioResult` per scenario, gathered in a `Report`.

The same data renders as text tables (`Report.text`) and as JSON (`Report.to_json`);
the JSON carries every sample, so a report can be re-plotted or compared later.
Latency samples are kept in seconds and shown in milliseconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs

from bench.stats import Summary, ratio

SCHEMA = "ffserve-bench/1"
OK, NOT_RUN, FAILED, TIMED_OUT = "ok", "not_run", "failed", "timed_out"

Scalar = float | int | str | bool | None


@attrs.define
class Goal:
    """A target of issue 5: `value op limit`, e.g. small job p50 ratio <= 1.3."""

    name: str
    value: float | None
    op: str  # "<=", "<", ">="
    limit: float
    unit: str = "x"

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        if self.op == "<=":
            return self.value <= self.limit
        if self.op == "<":
            return self.value < self.limit
        return self.value >= self.limit

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": _finite(self.value),
            "op": self.op,
            "limit": self.limit,
            "unit": self.unit,
            "met": self.met,
        }


@attrs.define
class ScenarioResult:
    name: str
    title: str
    status: str = OK
    reason: str | None = None
    params: dict[str, Scalar] = attrs.Factory(dict)
    # Latency-like samples in seconds, by series name ("service", "plain ffmpeg", ...).
    series: dict[str, list[float]] = attrs.Factory(dict)
    # (service series, baseline series) whose ratio row the table shows.
    compare: tuple[str, str] | None = None
    metrics: dict[str, Scalar] = attrs.Factory(dict)
    server: dict[str, Scalar] = attrs.Factory(dict)
    goals: list[Goal] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)

    def summary(self, name: str) -> Summary | None:
        return Summary.of(self.series.get(name, []))

    def ratios(self) -> dict[str, float | None]:
        """service/baseline for p50, p95, p99 and mean of the compared series."""
        if self.compare is None:
            return {}
        service, baseline = self.summary(self.compare[0]), self.summary(self.compare[1])
        if service is None or baseline is None:
            return {"p50": None, "p95": None, "p99": None, "mean": None}
        return {
            key: ratio(getattr(service, key), getattr(baseline, key))
            for key in ("p50", "p95", "p99", "mean")
        }

    def to_json(self) -> dict[str, Any]:
        series = {}
        for name, samples in self.series.items():
            summary = Summary.of(samples)
            series[name] = {
                "unit": "s",
                "summary": attrs.asdict(summary) if summary else None,
                "samples": [round(s, 6) for s in samples],
            }
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "reason": self.reason,
            "params": self.params,
            "series": series,
            "latency_ratios": {k: _finite(v) for k, v in self.ratios().items()},
            "compare": list(self.compare) if self.compare else None,
            "metrics": {k: _finite(v) for k, v in self.metrics.items()},
            "server": {k: _finite(v) for k, v in self.server.items()},
            "goals": [g.to_json() for g in self.goals],
            "notes": self.notes,
        }

    def text(self) -> str:
        lines = [f"== {self.title} [{self.name}] =="]
        if self.params:
            lines.append("   " + ", ".join(f"{k}={_fmt(v)}" for k, v in self.params.items()))
        if self.status != OK:
            lines.append(f"   status: {self.status}" + (f": {self.reason}" if self.reason else ""))
        if self.series:
            width = max(24, *(len(name) for name in self.series))
            head = f"   {'series':<{width}} {'n':>5} " + " ".join(
                f"{c:>9}" for c in ("p50 ms", "p95 ms", "p99 ms", "max ms", "mean ms")
            )
            lines.append(head)
            for name in self.series:
                summary = self.summary(name)
                cells = (
                    [summary.p50, summary.p95, summary.p99, summary.max, summary.mean]
                    if summary
                    else [None] * 5
                )
                lines.append(
                    f"   {name:<{width}} {summary.n if summary else 0:>5} "
                    + " ".join(f"{_ms(c):>9}" for c in cells)
                )
            if self.compare is not None:
                r = self.ratios()
                label = f"ratio {self.compare[0]}/{self.compare[1]}"
                cells_text = [_x(r["p50"]), _x(r["p95"]), _x(r["p99"]), "", _x(r["mean"])]
                lines.append(
                    f"   {label:<{width}} {'':>5} " + " ".join(f"{c:>9}" for c in cells_text)
                )
        for key, value in self.metrics.items():
            lines.append(f"   {key}: {_fmt(value)}")
        if self.server:
            lines.append(
                "   server: " + ", ".join(f"{k}={_fmt(v)}" for k, v in self.server.items())
            )
        for goal in self.goals:
            lines.append(f"   target: {_goal_text(goal)}")
        lines += [f"   note: {note}" for note in self.notes]
        return "\n".join(lines)


@attrs.define
class Report:
    started_at: str
    finished_at: str
    mode: str  # "full" | "quick" | "custom"
    environment: dict[str, Scalar]
    target: dict[str, Scalar]
    scenarios: list[ScenarioResult] = attrs.Factory(list)

    @property
    def goals(self) -> list[tuple[str, Goal]]:
        return [(s.name, g) for s in self.scenarios for g in s.goals]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "mode": self.mode,
            "environment": self.environment,
            "target": self.target,
            "scenarios": [s.to_json() for s in self.scenarios],
            "goals": [{"scenario": name, **g.to_json()} for name, g in self.goals],
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")

    def text(self) -> str:
        head = [
            f"ffserve bench ({self.mode}) {self.started_at} -> {self.finished_at}",
            "   " + ", ".join(f"{k}={_fmt(v)}" for k, v in self.environment.items()),
            "   target: " + ", ".join(f"{k}={_fmt(v)}" for k, v in self.target.items()),
            "   ratios are service / plain FFmpeg, measured in interleaved batches in this run",
        ]
        parts = ["\n".join(head), *(s.text() for s in self.scenarios)]
        if self.goals:
            width = max(len(g.name) for _, g in self.goals)
            rows = ["== targets (issue 5, part 4) =="]
            for scenario, goal in self.goals:
                rows.append(
                    f"   {goal.name:<{width}}  {_goal_text(goal, named=False)}  ({scenario})"
                )
            parts.append("\n".join(rows))
        return "\n\n".join(parts) + "\n"


def _finite(value: Scalar) -> Scalar:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _fmt(value: Scalar) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _goal_text(goal: Goal, *, named: bool = True) -> str:
    verdict = {True: "MET", False: "NOT MET", None: "not measured"}[goal.met]
    value = "-" if goal.value is None else f"{goal.value:.3g}"
    text = f"{value} {goal.unit} {goal.op} {goal.limit:g} {goal.unit}: {verdict}"
    return f"{goal.name}: {text}" if named else text
