"""Sample scheduler metrics for the deployment tests, as ``/metrics`` exposition text.

``LiveSamples`` records runs, loop passes, syncs and builds through the real ``scheduler.metrics`` API
(skips the calling test while that module cannot be imported); ``static_exposition`` writes the same
shape from the catalogue ``tests.helpers.promql.EXPORTED``. Each ``tick()`` records one more batch, so
counters grow between two scrapes of a real Prometheus.
"""

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from tests.helpers.promql import EXPORTED, LABEL_VALUES

CODOPS = "chrts"
SAMPLE_LABELS = {
    "codops": CODOPS,
    "task": "train",
    "loop": CODOPS,
    "executor": "spark",
    "source": "api",
    "outcome": "changed",
    "channel": "email",
    "kind": "local",
}
BUCKETS = ("1", "60", "3600", "+Inf")


class LiveSamples:
    """The real metrics module, fed a batch of sample events per ``tick()``."""

    def __init__(self) -> None:
        reason = "scheduler.metrics arrives with issue 5"
        self.module: Any = pytest.importorskip("scheduler.metrics", reason=reason)
        from scheduler.spec.taskspec import ExecutorKind

        self.executors = list(ExecutorKind)
        self.metrics = self.module.Metrics()
        self.batch = 0
        self.metrics.run_started(
            SimpleNamespace(id="running", codops=CODOPS, task="long", loop=CODOPS, executor=self.executors[0])
        )

    def tick(self) -> str:
        self.batch += 1
        finished = datetime.now(UTC)
        final = [status for status in self.module.RunStatus if status.final]
        for i, status in enumerate(final):
            for executor in self.executors:
                run = SimpleNamespace(
                    id=f"run-{self.batch}-{i}-{executor.value}",
                    codops=CODOPS,
                    task=f"task_{i}",
                    loop=CODOPS if executor.value == "spark" else "metadata",
                    executor=executor,
                    status=status,
                    duration_seconds=12.5 * (i + 1),
                    finished_at=finished,
                )
                self.metrics.run_started(run)
                self.metrics.run_finished(run)
        self.metrics.loop_pass(CODOPS, 42.0)
        self.metrics.loop_pass("metadata", 3.0)
        self.metrics.sync_result(CODOPS, True)
        self.metrics.sync_result(CODOPS, False)
        self.metrics.validation_errors(CODOPS, 2)
        self.metrics.env_build("ok")
        self.metrics.state_error("api")
        self.metrics.resourcemanager_event("error")
        self.metrics.resourcemanager_event("failover")
        self.metrics.resourcemanager_event("request")
        self.metrics.webhook("github", "changed")
        self.metrics.resourcemanager_event("refused")
        self.metrics.kerberos_event("renewed")
        self.metrics.kerberos_event("failure")
        self.metrics.notification("email", "ok")
        self.metrics.config_reload("ok")
        self.metrics.capacity_waited(CODOPS, 3.0)
        self.metrics.watch_capacity(lambda: {"local": (4, 1, 0)})
        self.metrics.env_build("failed")
        self.metrics.env_cache_hit()
        text: str = self.metrics.render().decode()
        return text


def _labels(names: frozenset[str], **values: str) -> list[dict[str, str]]:
    """Label sets for a series with ``names``: one per value of a label with known values."""
    base = {name: SAMPLE_LABELS[name] for name in names if name in SAMPLE_LABELS}
    base.update({k: v for k, v in values.items() if k in names})
    sets = [base]
    for label, allowed in LABEL_VALUES.items():
        if label in names:
            sets = [{**s, label: value} for s in sets for value in sorted(allowed)]
    return sets


def static_exposition(batch: int) -> str:
    """Exposition text of every catalogued series, counters at ``batch`` times their per-batch step."""
    lines = []
    for name, names in sorted(EXPORTED.items()):
        if name.endswith("_bucket"):
            for labels in _labels(names - {"le"}):
                for i, le in enumerate(BUCKETS):
                    count = batch * min(i, 2)
                    lines.append(_line(name, {**labels, "le": le}, count))
            continue
        if name.endswith("_timestamp_seconds"):
            value = datetime.now(UTC).timestamp() - 100
        elif name.endswith(("_total", "_count")):
            value = 2 * batch
        elif name.endswith("_sum"):
            value = 100 * batch
        else:
            value = 2
        for labels in _labels(names):
            lines.append(_line(name, labels, value))
    return "\n".join(lines) + "\n"


def _line(name: str, labels: dict[str, str], value: float) -> str:
    inside = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inside}}} {value}" if inside else f"{name} {value}"
