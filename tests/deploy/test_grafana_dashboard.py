"""The Grafana dashboard: valid against the schema derived from Grafana's published dashboard types
(``@grafana/schema``), laid out on Grafana's 24-column grid, filtered by organisation, and covering
everything issue 8 lists."""

import copy
import json
from typing import Any

import jsonschema
import pytest

from tests.helpers.deploytools import DASHBOARD, DASHBOARD_SCHEMA
from tests.helpers.promql import EXPORTED, references

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(DASHBOARD_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def panels(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in data["panels"] if p["type"] != "row"]


def exprs(data: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(data) for t in p["targets"]]


def test_valid_against_the_grafana_schema() -> None:
    errors = [f"{list(e.path)}: {e.message}" for e in validator().iter_errors(dashboard())]
    assert errors == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["panels"][1].pop("gridPos"),
        lambda d: d["panels"][1].update(tittle="typo"),
        lambda d: d["panels"][1]["targets"][0].pop("expr"),
        lambda d: d["templating"]["list"][1].update(type="dropdown"),
        lambda d: d.pop("schemaVersion"),
        lambda d: d["panels"][1]["gridPos"].update(w=25),
    ],
    ids=[
        "no-gridPos",
        "unknown-key",
        "target-without-expr",
        "bad-variable-type",
        "no-schemaVersion",
        "too-wide",
    ],
)
def test_the_schema_rejects_broken_dashboards(break_it: Any) -> None:
    broken = copy.deepcopy(dashboard())
    break_it(broken)
    assert list(validator().iter_errors(broken))


def test_datasource_is_a_variable_everywhere() -> None:
    data = dashboard()
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(data):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert all(t["datasource"] == DATASOURCE for t in panel["targets"]), panel["title"]
    for name in ("codops", "task"):
        assert variables[name]["datasource"] == DATASOURCE


def test_codops_and_task_variables() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    codops, task = variables["codops"], variables["task"]
    assert codops["type"] == task["type"] == "query"
    assert codops["multi"] and codops["includeAll"] and codops["allValue"] == ".*"
    assert codops["query"].startswith("label_values(") and codops["query"].endswith(", codops)")
    assert "$codops" in task["query"], "the task list follows the chosen organisations"


def test_every_query_filters_by_organisation() -> None:
    """Every selector of a per-organisation metric filters on $codops (loops: the codops loop plus the
    shared metadata loop); only the global environment metrics are unfiltered."""
    for expr in exprs(dashboard()):
        for selector in references(expr).selectors:
            labels = EXPORTED[selector.metric]
            matchers = {(label, op, value) for label, op, value in selector.matchers}
            if "codops" in labels:
                assert ("codops", "=~", "$codops") in matchers, expr
            elif labels == {"loop"} or labels == {"loop", "le"}:
                assert ("loop", "=~", "$codops|metadata") in matchers, expr
            else:
                assert selector.metric.startswith("peach_environment_"), expr
            if "task" in labels:
                assert ("task", "=~", "$task") in matchers, expr


def test_layout_fits_the_grid_without_overlaps() -> None:
    data = dashboard()
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in data["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_covers_what_operators_watch() -> None:
    data = dashboard()
    metrics = {m for expr in exprs(data) for m in references(expr).metrics}
    assert metrics >= {
        "peach_runs_total",  # runs and failure rate
        "peach_run_duration_seconds_bucket",  # p50/p95
        "peach_task_last_duration_seconds",  # durations per task
        "peach_running_tasks",
        "peach_task_last_success_timestamp_seconds",  # last success age
        "peach_loop_pass_duration_seconds_bucket",
        "peach_loop_lag_seconds",
        "peach_repository_syncs_total",
        "peach_validation_errors",
        "peach_environment_builds_total",
        "peach_environment_cache_hits_total",
    }
    joined = "\n".join(exprs(data))
    assert 'status="TIMED_OUT"' in joined  # timeouts
    assert 'status!="SUCCEEDED"' in joined  # failure rate
    assert "histogram_quantile(0.5," in joined and "histogram_quantile(0.95," in joined
    assert "time() - peach_task_last_success_timestamp_seconds" in joined
    titles = " ".join(p["title"].lower() for p in panels(data))
    for word in (
        "failure rate",
        "timeouts",
        "running",
        "last success",
        "loop pass",
        "lag",
        "sync",
        "validation",
        "environment",
    ):
        assert word in titles, word
