"""Grafana dashboards in tests: every PromQL query a dashboard holds, what each asks of the
metrics (metric names, matcher labels and values, grouping labels), and where a scrape of
`/metrics` cannot answer it.

Queries are parsed with a real PromQL parser (promql-parser), so a query Prometheus would reject
fails here too. Grafana's variables are not PromQL: each becomes `VARIABLE` first.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import promql_parser
from prometheus_client.parser import text_string_to_metric_families

# A duration, so that a variable parses where Grafana puts one ([$__rate_interval]); no real
# label value looks like it, so a matcher value holding a variable is recognised and not checked.
VARIABLE = "99999s"
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[[\w:]+\]\]")
# Grafana's Prometheus variable functions: label_values(selector, label), label_values(label),
# query_result(expression); the PromQL inside, if any.
_LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+),\s*\w+\s*\)", re.DOTALL)
_QUERY_RESULT = re.compile(r"query_result\((?P<expression>.+)\)", re.DOTALL)
# Labels Prometheus adds at scrape time, never in /metrics itself.
TARGET_LABELS = frozenset({"job", "instance"})
_EQUAL = promql_parser.MatchOp.Equal


class NotPromQL(ValueError):
    """A query the PromQL parser rejects, or one whose metric cannot be told."""


@dataclass(frozen=True)
class Selector:
    """One series selector: its metric, and its matchers as label → the value an `=` matcher
    wants (None for !=, =~, !~ and for values that hold a Grafana variable)."""

    metric: str
    labels: tuple[tuple[str, str | None], ...] = ()


@dataclass
class Wants:
    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)  # by, without, on, ignoring, group_x labels

    @property
    def metrics(self) -> set[str]:
        return {s.metric for s in self.selectors}


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: each `expr` at any depth (panels, rows' panels, annotations) and
    the PromQL inside each query variable."""
    found = list(_exprs(dashboard))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        inner = variable_promql(query)
        if inner is not None:
            found.append(inner)
    return found


def _exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


def variable_promql(query: str) -> str | None:
    """The PromQL a Grafana variable's query runs, None for one that runs none
    (`label_values(job)`)."""
    query = query.strip()
    if match := _LABEL_VALUES.fullmatch(query):
        return match["selector"]
    if query.startswith("label_values("):
        return None
    if match := _QUERY_RESULT.fullmatch(query):
        return match["expression"]
    return query


def wants(expression: str) -> Wants:
    """What one expression queries; NotPromQL if it is not PromQL once variables are filled."""
    text = _GRAFANA_VARIABLE.sub(VARIABLE, expression)
    try:
        tree = promql_parser.parse(text)
    except ValueError as exc:
        raise NotPromQL(f"{expression!r}: {exc}") from None
    found = Wants()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.selectors.append(_selector(node, expression))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            found.grouping.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            modifier = node.modifier
            if modifier.matching is not None:
                found.grouping.update(modifier.matching.labels)
            found.grouping.update(modifier.group_labels or ())

    promql_parser.walk(tree, visit)
    return found


def _selector(node: promql_parser.VectorSelector, expression: str) -> Selector:
    groups = [list(node.matchers.matchers), *map(list, node.matchers.or_matchers)]
    matchers = [m for group in groups for m in group]
    names = {m.value for m in matchers if m.name == "__name__" and m.op == _EQUAL}
    metric = node.name or (names.pop() if len(names) == 1 else None)
    if metric is None:
        raise NotPromQL(f"{expression!r}: a selector whose metric cannot be told: {node}")
    labels = tuple(
        (m.name, m.value if m.op == _EQUAL and VARIABLE not in m.value else None)
        for m in matchers
        if m.name != "__name__"
    )
    return Selector(metric, labels)


def exposed(scrape: str) -> dict[str, dict[str, set[str]]]:
    """A /metrics text as sample name → label name → the values seen."""
    samples: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            labels = samples.setdefault(sample.name, {})
            for name, value in sample.labels.items():
                labels.setdefault(name, set()).add(value)
    return samples


def problems(dashboard: dict[str, Any], scrape: str) -> list[str]:
    """Why a query of the dashboard would find nothing in what `scrape` exposes: an unknown
    metric, a label the metric does not have, a value it never takes, a query that is no PromQL."""
    samples = exposed(scrape)
    found = []
    for expression in queries(dashboard):
        try:
            wanted = wants(expression)
        except NotPromQL as exc:
            found.append(f"not PromQL: {exc}")
            continue
        known_labels = set(TARGET_LABELS)
        for selector in wanted.selectors:
            labels = samples.get(selector.metric)
            if labels is None:
                found.append(f"{expression!r} queries {selector.metric}, which is not exposed")
                continue
            known_labels.update(labels)
            for name, value in selector.labels:
                if name in TARGET_LABELS:
                    continue
                if name not in labels:
                    found.append(f"{expression!r}: {selector.metric} has no label {name}")
                elif value is not None and value not in labels[name]:
                    found.append(f"{expression!r}: {selector.metric} never has {name}={value!r}")
        for name in sorted(wanted.grouping - known_labels):
            found.append(f"{expression!r} groups by {name}, which no metric it queries has")
    return found
