"""How long a /metrics scrape takes with many tasks: the scheduler's Metrics against the same series in a
plain prometheus_client registry (what /metrics did before ``scheduler.exposition``).

    .venv/bin/python bench/metrics_scrape.py [--orgs 1000] [--tasks 10]

Each task has a SUCCEEDED and a FAILED run, each organisation a loop, a sync and a validation result.
Prints the median of 5 scrapes of each, its size, and the ratio.
"""

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scheduler.metrics import PASS_DURATION_BUCKETS, RUN_DURATION_BUCKETS, Metrics
from scheduler.spec.taskspec import ExecutorKind
from scheduler.status import RunStatus


@dataclass
class Finished:
    id: str
    codops: str
    task: str
    loop: str
    executor: ExecutorKind
    status: RunStatus
    duration_seconds: float
    finished_at: datetime


def bare(orgs: int, tasks: int) -> CollectorRegistry:
    r = CollectorRegistry()
    runs = Counter("peach_runs", "r", ["codops", "task", "loop", "executor", "status"], registry=r)
    duration = Histogram(
        "peach_run_duration_seconds",
        "d",
        ["codops", "loop", "executor"],
        registry=r,
        buckets=RUN_DURATION_BUCKETS,
    )
    success = Gauge("peach_task_last_success_timestamp_seconds", "s", ["codops", "task"], registry=r)
    last = Gauge("peach_task_last_duration_seconds", "l", ["codops", "task"], registry=r)
    passes = Histogram(
        "peach_loop_pass_duration_seconds", "p", ["loop"], registry=r, buckets=PASS_DURATION_BUCKETS
    )
    syncs = Counter("peach_repository_syncs", "y", ["codops", "result"], registry=r)
    for o in range(orgs):
        codops = f"org{o:04d}"
        passes.labels(codops).observe(1.0)
        syncs.labels(codops, "ok").inc()
        for t in range(tasks):
            for status in ("SUCCEEDED", "FAILED"):
                runs.labels(codops, f"task{t}", codops, "python", status).inc()
                duration.labels(codops, codops, "python").observe(12.5)
            success.labels(codops, f"task{t}").set(time.time())
            last.labels(codops, f"task{t}").set(12.5)
    return r


def ours(orgs: int, tasks: int) -> Metrics:
    metrics, n = Metrics(), 0
    for o in range(orgs):
        codops = f"org{o:04d}"
        metrics.loop_pass(codops, 1.0)
        metrics.sync_result(codops, True)
        metrics.validation_errors(codops, 0)
        for t in range(tasks):
            for status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
                n += 1
                run = Finished(
                    f"r{n}", codops, f"task{t}", codops, ExecutorKind.PYTHON, status, 12.5, datetime.now(UTC)
                )
                metrics.run_finished(run)
    return metrics


def scrape(render: Callable[[], bytes]) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(5):
        began = time.perf_counter()
        size = len(render())
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000, size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orgs", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=10)
    args = parser.parse_args()
    registry, metrics = bare(args.orgs, args.tasks), ours(args.orgs, args.tasks)
    bare_ms, bare_size = scrape(lambda: generate_latest(registry))
    ours_ms, ours_size = scrape(metrics.render)
    print(
        f"{args.orgs * args.tasks} tasks: bare prometheus_client {bare_ms:.0f} ms "
        f"({bare_size / 2**20:.2f} MiB, with its _created lines), "
        f"scheduler {ours_ms:.0f} ms ({ours_size / 2**20:.2f} MiB), ratio {ours_ms / bare_ms:.3f}x"
    )


if __name__ == "__main__":
    main()
