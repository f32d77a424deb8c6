"""tests/dashboards.py, the reader of Grafana dashboards: which metrics, labels and values a query
asks for, where queries hide in a dashboard, and what a scrape cannot answer."""

import pytest

from tests.dashboards import NotPromQL, Selector, problems, queries, variable_promql, wants


def test_a_latency_quantile_asks_for_the_bucket_series_and_its_grouping() -> None:
    found = wants(
        "histogram_quantile(0.95, sum by (route, le) "
        '(rate(req_seconds_bucket{job=~"$job", route="upload"}[$__rate_interval])))'
    )
    assert found.selectors == [Selector("req_seconds_bucket", (("job", None), ("route", "upload")))]
    assert found.grouping == {"route", "le"}


def test_a_ratio_asks_for_both_sides_and_the_labels_it_matches_on() -> None:
    found = wants(
        'sum(increase(lookups_total{cache="page", outcome="hit"}[${__range}])) / ignoring(x) '
        'group_left(y) sum by (x, y) (increase(lookups_total{cache="page"}[$__range]))'
    )
    assert found.selectors == [
        Selector("lookups_total", (("cache", "page"), ("outcome", "hit"))),
        Selector("lookups_total", (("cache", "page"),)),
    ]
    assert found.grouping == {"x", "y"}


def test_names_in_functions_subqueries_and_name_matchers_are_found() -> None:
    found = wants(
        "max_over_time(rate(a_total[5m])[1h:1m]) + on() "
        '{__name__="b_bytes", origin!="cache"} - vector(0) + time() + '
        'label_replace(c_gauge, "d", "$1", "e", "(.*)") or absent(f_total offset 5m)'
    )
    assert found.metrics == {"a_total", "b_bytes", "c_gauge", "f_total"}
    assert Selector("b_bytes", (("origin", None),)) in found.selectors  # != checks no value


def test_a_matcher_value_holding_a_variable_is_not_a_value_to_check() -> None:
    (selector,) = wants('up{source="$source", a="x-${b:regex}", c="[[c]]"}').selectors
    assert selector.labels == (("source", None), ("a", None), ("c", None))


@pytest.mark.parametrize(
    "expression",
    [
        "sum(rate(x_total[5m])",  # unbalanced
        "rate(x_total)",  # a range function on an instant vector
        'x_total{a="b"',
        '{__name__=~"gitlab_.*"}',  # which metric? nothing to check against
        "label_values(x_total, job)",  # a variable's function, not PromQL
    ],
)
def test_what_is_not_promql_or_names_no_metric_is_refused(expression: str) -> None:
    with pytest.raises(NotPromQL):
        wants(expression)


def test_variable_queries_give_the_promql_they_run() -> None:
    assert variable_promql('label_values(up{job=~"$job"}, instance)') == 'up{job=~"$job"}'
    assert variable_promql("label_values(job)") is None
    assert variable_promql("query_result(topk(5, x_total))") == "topk(5, x_total)"
    assert variable_promql("x_total") == "x_total"


def test_queries_are_found_in_nested_rows_annotations_and_variables() -> None:
    dashboard = {
        "annotations": {"list": [{"expr": "changes(a_total[5m])"}]},
        "panels": [
            {"type": "row", "panels": [{"targets": [{"expr": "b_total"}, {"refId": "X"}]}]},
            {"targets": [{"expr": "c_total"}]},
        ],
        "templating": {
            "list": [
                {"type": "datasource", "query": "prometheus"},
                {"type": "query", "query": {"query": "label_values(d_total, job)"}},
                {"type": "query", "query": "label_values(e_total{job=~'$job'}, instance)"},
                {"type": "custom", "query": "1,2,3"},
            ]
        },
    }
    assert sorted(queries(dashboard)) == [
        "b_total",
        "c_total",
        "changes(a_total[5m])",
        "d_total",
        "e_total{job=~'$job'}",
    ]


SCRAPE = """\
# HELP lookups_total Cache lookups
# TYPE lookups_total counter
lookups_total{cache="page",outcome="hit"} 3.0
lookups_total{cache="file",outcome="miss"} 1.0
# HELP seconds Time
# TYPE seconds histogram
seconds_bucket{route="page",le="0.1"} 1.0
seconds_bucket{route="page",le="+Inf"} 1.0
seconds_count{route="page"} 1.0
seconds_sum{route="page"} 0.05
"""


def _dashboard(*exprs: str) -> dict:
    return {"panels": [{"targets": [{"expr": e} for e in exprs]}]}


def test_a_scrape_that_answers_every_query_has_no_problems() -> None:
    dashboard = _dashboard(
        'sum by (outcome) (rate(lookups_total{cache="page", instance=~"$i"}[5m]))',
        "histogram_quantile(0.9, sum by (le, route, job) (rate(seconds_bucket[5m])))",
        "sum(seconds_sum) / sum(seconds_count)",
    )
    assert problems(dashboard, SCRAPE) == []


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("rate(lookup_total[5m])", "queries lookup_total, which is not exposed"),
        ("rate(seconds[5m])", "queries seconds, which is not exposed"),  # a histogram's base
        ('lookups_total{cach="page"}', "lookups_total has no label cach"),
        ('lookups_total{cache="pages"}', "lookups_total never has cache='pages'"),
        ("sum by (origin) (lookups_total)", "groups by origin, which no metric it queries has"),
        ("sum(rate(lookups_total[5m])", "not PromQL"),
    ],
)
def test_each_kind_of_mistake_is_named(expression: str, problem: str) -> None:
    (found,) = problems(_dashboard(expression), SCRAPE)
    assert problem in found
