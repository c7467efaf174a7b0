"""Counters and gauges for `/metrics`, in the Prometheus text format."""

from __future__ import annotations

from collections import Counter

import attrs


@attrs.define
class Metrics:
    counters: Counter[str] = attrs.Factory(Counter)
    connections: int = 0

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def render(self, gauges: dict[str, float]) -> str:
        lines = []
        for name, count in sorted(self.counters.items()):
            lines += [f"# TYPE ffserve_{name}_total counter", f"ffserve_{name}_total {count}"]
        all_gauges: dict[str, float] = {**gauges, "connections": self.connections}
        for name, value in sorted(all_gauges.items()):
            lines += [f"# TYPE ffserve_{name} gauge", f"ffserve_{name} {value:g}"]
        return "\n".join(lines) + "\n"
