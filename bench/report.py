"""Markdown tables of medians, the ratio of this proxy to each other server, and target checks."""

import math

from bench.scenarios import Samples, median


def _format(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(samples: Samples, subject: str, count_label: str = "runs") -> str:
    """One row per metric, one column per server, then `subject ÷ other` for each other one."""
    servers: list[str] = []
    for by_server in samples.values():
        servers += [s for s in by_server if s not in servers]
    others = [s for s in servers if s != subject]
    head = ["", *servers, *(f"{subject} ÷ {o}" for o in others), count_label]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric, by_server in samples.items():
        values = {s: median(by_server[s]) if s in by_server else math.nan for s in servers}
        ratios = []
        for other in others:
            mine, theirs = values.get(subject, math.nan), values[other]
            ratio = mine / theirs if theirs and not math.isnan(theirs) else math.nan
            ratios.append("n/a" if math.isnan(ratio) else f"{ratio:.2f}x")
        runs = max((len(v) for v in by_server.values()), default=0)
        row = [metric, *(_format(values[s]) for s in servers), *ratios, str(runs)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def value(samples: Samples, metric: str, server: str) -> float:
    return median(samples.get(metric, {}).get(server, []))


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def check(condition: float | bool) -> bool | None:
    """A comparison involving a value not measured (NaN) is neither met nor missed."""
    return None if isinstance(condition, float) and math.isnan(condition) else bool(condition)
