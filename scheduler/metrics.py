"""Prometheus metrics of the scheduler (``/metrics``), in a registry built here, never at import.

The loops call the small recording API (``run_started``, ``run_finished``, ``loop_pass``, ...); values
that are cheap to compute at scrape time (running tasks, loop lag) come from a custom collector.
Names start with ``peach_``; counters end in ``_total``, durations in ``_seconds``.

Label cardinality is kept to what one scheduler of thousands of tasks can afford: per-task series are
the run counter and two gauges; the duration histogram is per codops, loop and executor.
"""

import re
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scheduler.exposition import TextFamily
from scheduler.status import RunStatus


class Run(Protocol):
    """What the metrics read of a run (the store's ``Run`` record has it)."""

    @property
    def id(self) -> str: ...
    @property
    def codops(self) -> str: ...
    @property
    def task(self) -> str: ...
    @property
    def loop(self) -> str: ...
    @property
    def executor(self) -> StrEnum: ...
    @property
    def status(self) -> RunStatus: ...
    @property
    def duration_seconds(self) -> float | None: ...
    @property
    def finished_at(self) -> datetime | None: ...


CONTENT_TYPE = CONTENT_TYPE_LATEST
RUN_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 2700, 3600)
PASS_DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def label(value: object) -> str:
    """A label value: codops and task names are already safe; anything else is made so, bounded."""
    text = _UNSAFE.sub("_", str(value))[:128]
    return text or "_"


class _Live(Collector):
    """What the loops hold in memory, turned into gauges at scrape time."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._running: dict[str, tuple[str, str, str]] = {}  # run id -> (codops, loop, executor)
        self._pass_ends: dict[str, float] = {}

    def started(self, run_id: str, labels: tuple[str, str, str]) -> None:
        with self._lock:
            self._running[run_id] = labels

    def finished(self, run_id: str) -> None:
        with self._lock:
            self._running.pop(run_id, None)

    def pass_ended(self, loop: str, at: float) -> None:
        with self._lock:
            self._pass_ends[loop] = at

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            running = Tally(self._running.values())
            pass_ends = dict(self._pass_ends)
        now = self._clock()
        tasks, lag = self._families()
        for (codops, loop, executor), count in sorted(running.items()):
            tasks.add_metric([codops, loop, executor], count)
        for loop, ended in sorted(pass_ends.items()):
            lag.add_metric([loop], max(now - ended, 0.0))
        return [tasks, lag]

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "peach_running_tasks",
                "Tasks running now, by organisation, loop and executor.",
                labels=["codops", "loop", "executor"],
            ),
            GaugeMetricFamily(
                "peach_loop_lag_seconds",
                "Seconds since the loop last completed a pass (grows when a pass is slow or stuck).",
                labels=["loop"],
            ),
        ]


class _WithoutCreated:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():  # fresh Metric objects on every collect
            family.samples = [sample for sample in family.samples if not sample.name.endswith("_created")]
            yield family


class Metrics:
    """Every scheduler metric, in ``registry`` (a new ``CollectorRegistry`` unless one is given)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        r = self.registry
        run_labels = ["codops", "task", "loop", "executor", "status"]
        # the families with a series per task or organisation: kept as text (scheduler.exposition)
        self.runs = TextFamily("peach_runs", "Runs finished, by final status.", "counter", run_labels)
        self.run_duration = TextFamily(
            "peach_run_duration_seconds",
            "Duration of finished runs.",
            "histogram",
            ["codops", "loop", "executor"],
            RUN_DURATION_BUCKETS,
        )
        self.last_success = TextFamily(
            "peach_task_last_success_timestamp_seconds",
            "When the task's last successful run finished (Unix time).",
            "gauge",
            ["codops", "task"],
        )
        self.last_duration = TextFamily(
            "peach_task_last_duration_seconds",
            "Duration of the task's last finished run.",
            "gauge",
            ["codops", "task"],
        )
        self.pass_duration = TextFamily(
            "peach_loop_pass_duration_seconds",
            "Duration of one pass of a loop (sync, load, run every due task).",
            "histogram",
            ["loop"],
            PASS_DURATION_BUCKETS,
        )
        self.last_pass_end = TextFamily(
            "peach_loop_last_pass_end_timestamp_seconds",
            "When the loop last completed a pass (Unix time).",
            "gauge",
            ["loop"],
        )
        self.syncs = TextFamily(
            "peach_repository_syncs",
            "Repository syncs of an organisation, by result (ok, failed).",
            "counter",
            ["codops", "result"],
        )
        self.sync_failures = TextFamily(
            "peach_repository_consecutive_sync_failures",
            "Syncs of the organisation's repositories that failed in a row (0 after a good one).",
            "gauge",
            ["codops"],
        )
        self.validation = TextFamily(
            "peach_validation_errors",
            "Validation errors in the organisation's task definitions at the last load.",
            "gauge",
            ["codops"],
        )
        self._texts = (
            self.runs,
            self.run_duration,
            self.last_success,
            self.last_duration,
            self.pass_duration,
            self.last_pass_end,
            self.syncs,
            self.sync_failures,
            self.validation,
        )
        self.env_builds = Counter(
            "peach_environment_builds",
            "Python environment builds, by result (ok, failed).",
            ["result"],
            registry=r,
        )
        self.env_cache_hits = Counter(
            "peach_environment_cache_hits",
            "Runs whose Python environment was already built.",
            registry=r,
        )
        self.artifact_bytes = Gauge(
            "peach_artifacts_bytes",
            "Bytes of run artifacts kept (set by retention, grown by each finished run).",
            registry=r,
        )
        self.artifacts_pruned = Counter(
            "peach_artifacts_pruned",
            "Runs whose artifacts retention deleted (past the last N runs of their task, not marked keep).",
            registry=r,
        )
        self.artifacts_dropped = Counter(
            "peach_artifacts_dropped",
            "Artifact files deleted after a run because the run's artifacts were over the size limit.",
            registry=r,
        )
        self.state_errors = Counter(
            "peach_state_database_errors",
            "State database operations that failed (unreachable, restarting), by where (api, loop, run).",
            ["source"],
            registry=r,
        )
        self.rm_errors = Counter(
            "peach_resourcemanager_errors",
            "YARN ResourceManager REST calls that failed on every address after the retries.",
            registry=r,
        )
        self.rm_requests = Counter(
            "peach_resourcemanager_requests",
            "YARN ResourceManager REST calls made (every attempt; rate() gives calls per second).",
            registry=r,
        )
        self.rm_failovers = Counter(
            "peach_resourcemanager_failovers",
            "Times the YARN client moved to another ResourceManager (HA failover).",
            registry=r,
        )
        self.notifications = Counter(
            "peach_notifications",
            "Notification deliveries by channel (email, webhook) and result: sent, retried (an attempt "
            "failed, another is due), failed (gave up), refused (not allowed or not configured), dropped.",
            ["channel", "result"],
            registry=r,
        )
        self.webhooks = Counter(
            "peach_webhooks",
            "Push webhook deliveries, by source (gitlab, github, gitea, forgejo, unknown) and outcome "
            "(changed, ignored, refused: bad signature, invalid: not a push event).",
            ["source", "outcome"],
            registry=r,
        )
        self._live = _Live(clock)
        r.register(self._live)

    # -- what the loops call --------------------------------------------------------------------------

    def run_started(self, run: Run) -> None:
        """A run started (or was re-attached after a restart)."""
        self._live.started(run.id, (label(run.codops), label(run.loop), label(run.executor.value)))

    def run_finished(self, run: Run) -> None:
        """A run reached its final status."""
        self._live.finished(run.id)
        codops, task, loop, executor = (
            label(v) for v in (run.codops, run.task, run.loop, run.executor.value)
        )
        self.runs.inc((codops, task, loop, executor, run.status.value))
        if run.duration_seconds is not None:
            self.run_duration.observe((codops, loop, executor), run.duration_seconds)
            self.last_duration.set((codops, task), run.duration_seconds)
        if run.status is RunStatus.SUCCEEDED and run.finished_at is not None:
            self.last_success.set((codops, task), run.finished_at.timestamp())

    def forget_task(self, codops: str, task: str) -> None:
        """Drop a removed task's gauges (its run counts stay: they are history)."""
        for gauge in (self.last_success, self.last_duration):
            gauge.remove((label(codops), label(task)))

    def loop_pass(self, loop: str, seconds: float) -> None:
        """A loop completed a pass that took ``seconds``."""
        now = self._clock()
        self.pass_duration.observe((label(loop),), seconds)
        self.last_pass_end.set((label(loop),), now)
        self._live.pass_ended(label(loop), now)

    def sync_result(self, codops: str, ok: bool) -> None:
        self.syncs.inc((label(codops), "ok" if ok else "failed"))
        failures = (label(codops),)
        if ok:
            self.sync_failures.set(failures, 0)
        else:
            self.sync_failures.inc(failures)

    def validation_errors(self, codops: str, count: int) -> None:
        self.validation.set((label(codops),), count)

    def env_build(self, result: str) -> None:
        """An environment build ended; ``result`` is ``ok`` or ``failed``."""
        self.env_builds.labels(label(result)).inc()

    def env_cache_hit(self) -> None:
        self.env_cache_hits.inc()

    def artifacts_collected(self, kept_bytes: int, dropped_files: int) -> None:
        """A finished run's artifacts were collected."""
        self.artifact_bytes.inc(kept_bytes)
        self.artifacts_dropped.inc(dropped_files)

    def artifacts_retained(self, total_bytes: int, pruned_runs: int) -> None:
        """A retention pass pruned ``pruned_runs``; ``total_bytes`` are kept."""
        self.artifact_bytes.set(total_bytes)
        self.artifacts_pruned.inc(pruned_runs)

    def state_error(self, source: str) -> None:
        """A state database operation failed in ``source`` (``api``, ``loop`` or ``run``)."""
        self.state_errors.labels(label(source)).inc()

    def resourcemanager_event(self, event: str) -> None:
        """The YARN client's ``request``, ``failover`` or ``error`` (no ResourceManager answered)."""
        {"request": self.rm_requests, "failover": self.rm_failovers}.get(event, self.rm_errors).inc()

    def notification(self, channel: str, result: str) -> None:
        """A notification delivery's ``result`` on ``channel`` (``scheduler.notify``)."""
        self.notifications.labels(label(channel), label(result)).inc()

    def webhook(self, source: str, outcome: str) -> None:
        self.webhooks.labels(label(source), label(outcome)).inc()

    def render(self) -> bytes:
        """The exposition text for ``/metrics`` (serve it with ``CONTENT_TYPE``).

        The ``*_created`` samples of counters and histograms are left out: they would double the number
        of series for thousands of tasks, and Prometheus does not use them from the text format. The
        per-task and per-organisation families are joined from their kept text, not rebuilt.
        """
        texts = "".join(family.text() for family in self._texts).encode()
        return texts + generate_latest(_WithoutCreated(self.registry))

    def series(self) -> Iterator[tuple[str, dict[str, str], float]]:
        """Every sample as (name, labels, value): for tests and the benchmark."""
        for text in self._texts:
            yield from text.samples()
        for family in self.registry.collect():
            for sample in family.samples:
                yield sample.name, dict(sample.labels), sample.value
