"""`--plot PATH.html`: the report as one self-contained HTML page with inline SVG.

Per scenario: the cumulative distribution of each latency series (how many requests
finished within x ms), and a bar chart of throughput where there is one. No scripts,
no external files: the page opens anywhere and can be attached to an issue.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from bench.report import Report, ScenarioResult

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
WIDTH, HEIGHT, PAD = 640, 300, 48


def _ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `top`."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(math.ceil(top / step) + 1)]


def cdf_svg(series: dict[str, list[float]]) -> str:
    """Cumulative distributions, x in milliseconds, y from 0 to 100 %."""
    drawn = {name: sorted(v * 1000 for v in values) for name, values in series.items() if values}
    if not drawn:
        return "<p>no samples</p>"
    top = max(values[-1] for values in drawn.values())
    ticks = _ticks(top)
    x_max = ticks[-1] or 1.0
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD

    def x(ms: float) -> float:
        return PAD + inner_w * ms / x_max

    def y(fraction: float) -> float:
        return HEIGHT - PAD - inner_h * fraction

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}">']
    parts.append(_axes(inner_w, inner_h))
    for tick in ticks:
        parts.append(
            f'<line x1="{x(tick):.1f}" y1="{y(0):.1f}" x2="{x(tick):.1f}" y2="{y(0) + 4:.1f}" '
            f'stroke="#333"/><text x="{x(tick):.1f}" y="{y(0) + 16:.1f}" font-size="11" '
            f'text-anchor="middle">{tick:g}</text>'
        )
    for q in (0, 0.5, 0.95, 1):
        parts.append(
            f'<text x="{PAD - 6}" y="{y(q) + 4:.1f}" font-size="11" text-anchor="end">'
            f"{q * 100:g}%</text>"
            f'<line x1="{PAD}" y1="{y(q):.1f}" x2="{WIDTH - PAD}" y2="{y(q):.1f}" '
            'stroke="#ddd"/>'
        )
    parts.append(
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" font-size="12" text-anchor="middle">'
        "latency, ms (fraction of requests finished within)</text>"
    )
    for i, (name, values) in enumerate(drawn.items()):
        colour = COLOURS[i % len(COLOURS)]
        points = [f"{x(0):.1f},{y(0):.1f}"]
        for k, value in enumerate(values):
            points.append(f"{x(value):.1f},{y(k / len(values)):.1f}")
            points.append(f"{x(value):.1f},{y((k + 1) / len(values)):.1f}")
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
            f'points="{" ".join(points)}"/>'
        )
        parts.append(
            f'<rect x="{PAD + 10}" y="{PAD + 4 + 16 * i}" width="10" height="10" '
            f'fill="{colour}"/><text x="{PAD + 26}" y="{PAD + 13 + 16 * i}" font-size="12">'
            f"{html.escape(name)} (n={len(values)})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def bars_svg(values: dict[str, float], unit: str) -> str:
    """Horizontal bars, one per value."""
    height = PAD + 28 * len(values)
    top = max(values.values()) or 1.0
    inner_w = WIDTH - 2 * PAD - 160
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}">']
    for i, (name, value) in enumerate(values.items()):
        y = 12 + 28 * i
        w = inner_w * value / top
        colour = COLOURS[i % len(COLOURS)]
        parts.append(
            f'<text x="160" y="{y + 14}" font-size="12" text-anchor="end">'
            f"{html.escape(name)}</text>"
            f'<rect x="168" y="{y}" width="{w:.1f}" height="18" fill="{colour}"/>'
            f'<text x="{172 + w:.1f}" y="{y + 14}" font-size="12">{value:.3g} {unit}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _axes(inner_w: float, inner_h: float) -> str:
    return (
        f'<line x1="{PAD}" y1="{PAD + inner_h}" x2="{PAD + inner_w}" y2="{PAD + inner_h}" '
        f'stroke="#333"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{PAD + inner_h}" '
        'stroke="#333"/>'
    )


def scenario_html(result: ScenarioResult) -> str:
    parts = [f"<section><h2>{html.escape(result.title)}</h2>"]
    if result.status != "ok":
        parts.append(
            f"<p><b>{html.escape(result.status)}</b>: {html.escape(result.reason or '')}</p>"
        )
    if result.series:
        parts.append(cdf_svg(result.series))
    rates = {
        key.removesuffix("_jobs_per_s").replace("_", " "): float(value)
        for key, value in result.metrics.items()
        if key.endswith("_jobs_per_s") and isinstance(value, int | float) and value
    }
    if rates:
        parts.append("<h3>throughput</h3>" + bars_svg(rates, "jobs/s"))
    parts.append(f"<pre>{html.escape(result.text())}</pre></section>")
    return "".join(parts)


def render(report: Report) -> str:
    body = "".join(scenario_html(s) for s in report.scenarios)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>ffserve bench</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        "pre{background:#f6f6f6;padding:.5em;overflow-x:auto}</style></head><body>"
        f"<h1>ffserve bench, {html.escape(report.started_at)}</h1>"
        f"{body}<h2>full text report</h2><pre>{html.escape(report.text())}</pre>"
        "</body></html>\n"
    )


def write(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report), encoding="utf-8")
