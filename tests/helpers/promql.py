"""What the dashboard and the alert rules ask Prometheus, checked against what the scheduler exports.

``references(expr)`` pulls metric selectors (name + label matchers) and grouping labels out of a PromQL
expression with a small tokenizer: enough for the functions, aggregations and binary operators our
queries use, and strict about the rest (an unknown function or a bare word that is not a metric is an
error, so a typo cannot pass as "no metric here"). Syntax itself is promtool's job
(``promtool check rules``).

``EXPORTED`` is the catalogue of series the scheduler exports (``scheduler/metrics.py``: every series
name with its label names). The live test (tests/test_metric_references.py) renders the real module's
exposition text and asserts it matches this catalogue, so the static check cannot drift from the code.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

RUN_LABELS = frozenset({"codops", "task", "loop", "executor", "status"})
RUN_DURATION_LABELS = frozenset({"codops", "loop", "executor"})
TASK_LABELS = frozenset({"codops", "task"})
LOOP_LABELS = frozenset({"loop"})


def _histogram(name: str, labels: frozenset[str]) -> dict[str, frozenset[str]]:
    return {f"{name}_bucket": labels | {"le"}, f"{name}_sum": labels, f"{name}_count": labels}


# Series name -> label names, as scheduler/metrics.py exports them (issue 5).
EXPORTED: Mapping[str, frozenset[str]] = {
    "peach_runs_total": RUN_LABELS,
    **_histogram("peach_run_duration_seconds", RUN_DURATION_LABELS),
    "peach_task_last_success_timestamp_seconds": TASK_LABELS,
    "peach_task_last_duration_seconds": TASK_LABELS,
    **_histogram("peach_loop_pass_duration_seconds", LOOP_LABELS),
    "peach_loop_last_pass_end_timestamp_seconds": LOOP_LABELS,
    "peach_running_tasks": frozenset({"codops", "loop", "executor"}),
    "peach_loop_lag_seconds": LOOP_LABELS,
    "peach_repository_syncs_total": frozenset({"codops", "result"}),
    "peach_repository_consecutive_sync_failures": frozenset({"codops"}),
    "peach_validation_errors": frozenset({"codops"}),
    "peach_environment_builds_total": frozenset({"result"}),
    "peach_environment_cache_hits_total": frozenset(),
    "peach_artifacts_bytes": frozenset(),
    "peach_artifacts_pruned_total": frozenset(),
    "peach_artifacts_dropped_total": frozenset(),
    "peach_state_database_errors_total": frozenset({"source"}),
    "peach_resourcemanager_errors_total": frozenset(),
    "peach_resourcemanager_failovers_total": frozenset(),
    "peach_resourcemanager_requests_total": frozenset(),
    "peach_webhooks_total": frozenset({"source", "outcome"}),
    "peach_resourcemanager_refusals_total": frozenset(),
    "peach_kerberos_renewal_failures_total": frozenset(),
    "peach_kerberos_renewals_total": frozenset(),
    "peach_notifications_total": frozenset({"channel", "result"}),
    "peach_config_reloads_total": frozenset({"result"}),
    "peach_capacity_slots": frozenset({"kind"}),
    "peach_capacity_in_use": frozenset({"kind"}),
    "peach_capacity_waiting": frozenset({"kind"}),
    **_histogram("peach_capacity_wait_seconds", frozenset({"codops"})),
}

# Label values our queries match literally, and the values the scheduler writes.
LABEL_VALUES: Mapping[str, frozenset[str]] = {
    "status": frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "KILLED", "LOST"}),
    "result": frozenset({"ok", "failed"}),
}

# Added by Prometheus to every target, not exported by the service.
SCRAPE_SERIES: Mapping[str, frozenset[str]] = {"up": frozenset({"job", "instance"})}
TARGET_LABELS = frozenset({"job", "instance"})

FUNCTIONS = frozenset(
    [
        "abs",
        "absent",
        "absent_over_time",
        "avg_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "count_over_time",
        "day_of_month",
        "day_of_week",
        "days_in_month",
        "delta",
        "deriv",
        "exp",
        "floor",
        "histogram_quantile",
        "holt_winters",
        "hour",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "max_over_time",
        "min_over_time",
        "minute",
        "month",
        "predict_linear",
        "present_over_time",
        "quantile_over_time",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sort",
        "sort_desc",
        "sqrt",
        "stddev_over_time",
        "stdvar_over_time",
        "sum_over_time",
        "time",
        "timestamp",
        "vector",
        "year",
    ]
)
AGGREGATIONS = frozenset(
    [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ]
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "offset", "bool", "atan2", "inf", "nan"})
# Grafana's interval variables, replaced by a duration so the expression is plain PromQL.
GRAFANA_INTERVALS = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}")

_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      |(?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|s|m|h|d|w|y)*)
      |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
      |(?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],:@])
      |(?P<space>\s+)
      |(?P<comment>\#[^\n]*)""",
    re.VERBOSE,
)


# A Grafana query variable: label_values(<selector>, <label>).
LABEL_VALUES_QUERY = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>[A-Za-z_][A-Za-z0-9_]*)\)$")


class PromQLError(ValueError):
    pass


@dataclass
class Selector:
    metric: str
    matchers: list[tuple[str, str, str]] = field(default_factory=list)  # (label, op, value)


@dataclass
class References:
    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)  # labels named in by/without/on/ignoring/group_*

    @property
    def metrics(self) -> set[str]:
        return {s.metric for s in self.selectors}


def plain(expr: str) -> str:
    """``expr`` with Grafana's interval variables replaced by 5m (label-value variables such as
    ``"$codops"`` sit inside strings and are valid PromQL as they are)."""
    return GRAFANA_INTERVALS.sub("5m", expr)


def tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if not match:
            raise PromQLError(f"cannot read {expr[pos : pos + 20]!r} in {expr!r}")
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            out.append((kind, match.group()))
        pos = match.end()
    return out


def references(expr: str) -> References:
    toks = tokens(plain(expr))
    refs = References()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind != "ident":
            i += 1
        elif text in GROUPING and following == "(":
            i += 2
            while toks[i][1] != ")":
                if toks[i][0] == "ident":
                    refs.grouping.add(toks[i][1])
                elif toks[i][1] != ",":
                    raise PromQLError(f"unexpected {toks[i][1]!r} in {text}(...) of {expr!r}")
                i += 1
            i += 1
        elif text in AGGREGATIONS and following in ("by", "without"):
            i += 1  # sum by (...) (...): the grouping comes next
        elif following == "(":
            if text not in FUNCTIONS | AGGREGATIONS:
                raise PromQLError(f"unknown function {text!r} in {expr!r}")
            i += 1
        elif text in KEYWORDS or text in GROUPING:
            i += 1
        else:
            selector = Selector(text)
            i += 1
            if i < len(toks) and toks[i][1] == "{":
                i += 1
                while toks[i][1] != "}":
                    label, op, value = toks[i][1], toks[i + 1][1], toks[i + 2]
                    if toks[i][0] != "ident" or op not in ("=", "!=", "=~", "!~") or value[0] != "string":
                        raise PromQLError(f"cannot read the matchers of {text} in {expr!r}")
                    selector.matchers.append((label, op, value[1][1:-1]))
                    i += 3
                    if toks[i][1] == ",":
                        i += 1
                i += 1
            refs.selectors.append(selector)
    return refs


def problems(
    expr: str,
    catalogue: Mapping[str, frozenset[str]],
    label_values: Mapping[str, frozenset[str]] = LABEL_VALUES,
    output_labels: Iterable[str] = (),
) -> list[str]:
    """What in ``expr`` the catalogue does not export: unknown metrics, labels a metric does not carry,
    literal label values the scheduler never writes, and ``output_labels`` (legend, alert annotations)
    that no selected series carries."""
    known = {**SCRAPE_SERIES, **catalogue}
    try:
        refs = references(expr)
    except PromQLError as exc:
        return [str(exc)]
    found: list[str] = []
    if not refs.selectors:
        found.append(f"no metric in {expr!r}")
    available: set[str] = set()
    for selector in refs.selectors:
        labels = known.get(selector.metric)
        if labels is None:
            found.append(f"metric {selector.metric} is not exported")
            continue
        available |= labels | TARGET_LABELS
        for label, op, value in selector.matchers:
            if label not in labels | TARGET_LABELS:
                found.append(f"{selector.metric} has no label {label!r}")
            elif label in label_values and op in ("=", "=~", "!=") and "$" not in value:
                for alternative in value.split("|") if op == "=~" else [value]:
                    if alternative not in label_values[label]:
                        found.append(f"{selector.metric}{{{label}}} never has the value {alternative!r}")
    for label in sorted(refs.grouping - available):
        found.append(f"label {label!r} (by/on/...) is on none of {sorted(refs.metrics)}")
    for label in sorted(set(output_labels) - available):
        found.append(f"label {label!r} (legend/annotation) is on none of {sorted(refs.metrics)}")
    return found


_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+\S+(?:\s+\S+)?$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def exposition_catalogue(text: str) -> tuple[dict[str, frozenset[str]], dict[str, set[str]]]:
    """Series name -> label names, and label -> values seen, from Prometheus text exposition
    (``/metrics``)."""
    series: dict[str, set[str]] = {}
    values: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            raise PromQLError(f"cannot read exposition line {line!r}")
        labels = _LABEL.findall(match.group("labels") or "")
        series.setdefault(match.group("name"), set()).update(name for name, _ in labels)
        for name, value in labels:
            values.setdefault(name, set()).add(value)
    return {name: frozenset(labels) for name, labels in series.items()}, values
