"""Every PromQL expression of the dashboard and the alert rules refers only to metrics and labels the
scheduler exports.

Two checks: against the static catalogue ``tests.helpers.promql.EXPORTED`` (runs now), and against the
exposition text of the real ``scheduler.metrics`` module after recording sample runs (skipped only while
that module cannot be imported). tests/test_deployed_service.py does the same against the live
``/metrics`` of a real service process started as the chart's pod, and tests/test_prometheus_queries.py
runs every query on a real Prometheus.
"""

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import yaml

from tests.helpers.deploytools import DASHBOARD, RULES, run, tool
from tests.helpers.metric_samples import LiveSamples, static_exposition
from tests.helpers.promql import (
    EXPORTED,
    LABEL_VALUES,
    LABEL_VALUES_QUERY,
    PromQLError,
    exposition_catalogue,
    plain,
    problems,
    references,
)

LEGEND = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
ANNOTATION = re.compile(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)")


def queries() -> Iterator[tuple[str, str, list[str]]]:
    """(where, expr, labels shown from its result) for every query of the dashboard and the rules."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            where = f"dashboard panel {panel['title']!r} {target['refId']}"
            yield where, target["expr"], LEGEND.findall(target.get("legendFormat", ""))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = LABEL_VALUES_QUERY.match(variable["query"])
            assert match, f"variable {variable['name']}: not a label_values() query"
            yield f"variable ${variable['name']}", match["selector"], [match["label"]]
    for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            shown = ANNOTATION.findall(" ".join(rule.get("annotations", {}).values()))
            yield f"alert {rule['alert']}", rule["expr"], shown


def all_problems(
    catalogue: Mapping[str, frozenset[str]], label_values: Mapping[str, frozenset[str]]
) -> list[str]:
    return [
        f"{where}: {problem}"
        for where, expr, shown in queries()
        for problem in problems(expr, catalogue, label_values, shown)
    ]


def test_queries_use_only_exported_metrics_and_labels() -> None:
    assert len(list(queries())) > 30
    assert all_problems(EXPORTED, LABEL_VALUES) == []


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query (as recording rules, Grafana's intervals made concrete)."""
    rules = [
        {"record": f"peach:dashboard_query_{i}", "expr": plain(expr)}
        for i, (where, expr, _) in enumerate(queries())
        if where.startswith("dashboard")
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    proc = run(tool("promtool"), "check", "rules", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


@pytest.mark.parametrize(
    ("expr", "shown", "expected"),
    [
        ("rate(peach_run_total[5m])", [], "metric peach_run_total is not exported"),
        ('peach_runs_total{org="x"}', [], "has no label 'org'"),
        ('peach_runs_total{status="FAILURE"}', [], "never has the value 'FAILURE'"),
        ('peach_runs_total{status=~"FAILED|TIMEOUT"}', [], "never has the value 'TIMEOUT'"),
        ("sum by (task) (peach_running_tasks)", [], "label 'task' (by/on/...)"),
        ("sum(peach_running_tasks)", ["task"], "label 'task' (legend/annotation)"),
        ("rat(peach_runs_total[5m])", [], "unknown function 'rat'"),
        ("peach_runs_total > threshold", [], "metric threshold is not exported"),
        ("vector(1)", [], "no metric"),
    ],
)
def test_the_checker_catches_mistakes(expr: str, shown: list[str], expected: str) -> None:
    found = problems(expr, EXPORTED, LABEL_VALUES, shown)
    assert any(expected in problem for problem in found), found


def test_extractor_reads_selectors_and_grouping() -> None:
    refs = references(
        "histogram_quantile(0.95, sum by (le, codops) ("
        'rate(peach_run_duration_seconds_bucket{codops=~"$codops"}[$__rate_interval])))'
        " > on (codops) group_left peach_validation_errors offset 5m"
    )
    assert [(s.metric, s.matchers) for s in refs.selectors] == [
        ("peach_run_duration_seconds_bucket", [("codops", "=~", "$codops")]),
        ("peach_validation_errors", []),
    ]
    assert refs.grouping == {"le", "codops"}
    with pytest.raises(PromQLError):
        references("peach_runs_total{codops=chrts}")


# -- against the real metrics module ------------------------------------------------------------------


def test_static_samples_follow_the_catalogue() -> None:
    catalogue, values = exposition_catalogue(static_exposition(1))
    assert catalogue == dict(EXPORTED)
    assert all_problems(catalogue, {k: frozenset(v) for k, v in values.items()}) == []


def test_live_metrics_export_everything_the_queries_use() -> None:
    catalogue, values = exposition_catalogue(LiveSamples().tick())
    live_values = {label: frozenset(values.get(label, ())) for label in LABEL_VALUES}
    assert all_problems(catalogue, live_values) == []
    # The static catalogue is exactly what the module exports for these series, labels included.
    assert {name: catalogue.get(name) for name in EXPORTED} == dict(EXPORTED)
    for label, expected in LABEL_VALUES.items():
        assert expected <= values[label], label
