import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.metrics import CONTENT_TYPE, Metrics, label
from scheduler.spec.taskspec import ExecutorKind
from scheduler.status import RunStatus
from scheduler.store.models import RunTrigger
from scheduler.store.records import Run
from tests.helpers.backends import prometheus_query, prometheus_server, wait_for

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0.timestamp()

    def __call__(self) -> float:
        return self.now


def make_run(
    number: int,
    status: RunStatus = RunStatus.RUNNING,
    *,
    codops: str = "chrts",
    task: str = "train",
    loop: str | None = None,
    executor: ExecutorKind = ExecutorKind.PYTHON,
    seconds: float = 42.0,
) -> Run:
    final = status is not RunStatus.RUNNING
    return Run(
        id=f"r-20260301-120000-{number:06x}",
        codops=codops,
        task=task,
        loop=loop or codops,
        executor=executor,
        version="0123456789abcdef",
        status=status,
        trigger=RunTrigger.SCHEDULE,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=seconds) if final else None,
        duration_seconds=seconds if final else None,
        outcome="exited 0" if final else None,
        error=None,
        log_path=None,
        handle=None,
        host="node-1",
        deadline=None,
    )


def record_sample_activity(metrics: Metrics) -> None:
    """Three finished runs, one still running, one loop pass, syncs, validation and environment builds."""
    for number, (status, task, seconds) in enumerate(
        [
            (RunStatus.SUCCEEDED, "train", 42.0),
            (RunStatus.FAILED, "train", 3.5),
            (RunStatus.TIMED_OUT, "score", 3600),
        ]
    ):
        metrics.run_started(make_run(number, task=task))
        metrics.run_finished(make_run(number, status, task=task, seconds=seconds))
    metrics.run_started(make_run(10, codops="sesr", task="fetch", loop="metadata"))
    metrics.loop_pass("chrts", 12.5)
    metrics.sync_result("chrts", ok=True)
    metrics.sync_result("sesr", ok=False)
    metrics.sync_result("sesr", ok=False)
    metrics.validation_errors("sesr", 2)
    metrics.env_build("ok")
    metrics.env_cache_hit()
    metrics.env_cache_hit()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(clock: Clock) -> Metrics:
    return Metrics(clock=clock)


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    found = [v for n, ls, v in metrics.series() if n == name and ls == labels]
    return found[0] if found else None


def test_recorded_activity_reads_back(metrics: Metrics, clock: Clock) -> None:
    record_sample_activity(metrics)
    run = {"codops": "chrts", "loop": "chrts", "executor": "python"}
    assert value(metrics, "peach_runs_total", task="train", status="SUCCEEDED", **run) == 1
    assert value(metrics, "peach_runs_total", task="train", status="FAILED", **run) == 1
    assert value(metrics, "peach_runs_total", task="score", status="TIMED_OUT", **run) == 1
    assert value(metrics, "peach_run_duration_seconds_count", **run) == 3
    assert value(metrics, "peach_run_duration_seconds_bucket", le="60.0", **run) == 2
    assert value(metrics, "peach_run_duration_seconds_bucket", le="3600.0", **run) == 3
    assert value(metrics, "peach_task_last_success_timestamp_seconds", codops="chrts", task="train") == (
        T0.timestamp() + 42
    )
    assert value(metrics, "peach_task_last_success_timestamp_seconds", codops="chrts", task="score") is None
    assert value(metrics, "peach_task_last_duration_seconds", codops="chrts", task="train") == 3.5
    assert value(metrics, "peach_running_tasks", codops="sesr", loop="metadata", executor="python") == 1
    assert value(metrics, "peach_running_tasks", **run) is None  # all of chrts' runs ended
    assert value(metrics, "peach_repository_syncs_total", codops="sesr", result="failed") == 2
    assert value(metrics, "peach_repository_consecutive_sync_failures", codops="sesr") == 2
    metrics.sync_result("sesr", ok=True)
    assert value(metrics, "peach_repository_consecutive_sync_failures", codops="sesr") == 0
    assert value(metrics, "peach_validation_errors", codops="sesr") == 2
    assert value(metrics, "peach_environment_builds_total", result="ok") == 1
    assert value(metrics, "peach_environment_cache_hits_total") == 2
    assert value(metrics, "peach_loop_pass_duration_seconds_sum", loop="chrts") == 12.5
    assert value(metrics, "peach_loop_last_pass_end_timestamp_seconds", loop="chrts") == T0.timestamp()
    clock.now += 75
    assert value(metrics, "peach_loop_lag_seconds", loop="chrts") == 75


def test_a_run_finished_after_a_restart_does_not_drive_running_negative(metrics: Metrics) -> None:
    metrics.run_finished(make_run(1, RunStatus.LOST))  # recovered: never started in this process
    assert not [n for n, _, v in metrics.series() if n == "peach_running_tasks"]
    labels = {"codops": "chrts", "task": "train", "loop": "chrts", "executor": "python"}
    assert value(metrics, "peach_runs_total", status="LOST", **labels) == 1


def test_a_removed_task_loses_its_gauges(metrics: Metrics) -> None:
    metrics.run_finished(make_run(1, RunStatus.SUCCEEDED))
    metrics.forget_task("chrts", "train")
    metrics.forget_task("chrts", "never-seen")
    names = {name for name, labels, _ in metrics.series() if labels.get("task") == "train"}
    assert names == {"peach_runs_total"}  # its run counts are history; its gauges are gone


def test_registries_are_explicit() -> None:
    first, second = Metrics(), Metrics()  # no duplicate registration: nothing global
    first.env_cache_hit()
    assert value(first, "peach_environment_cache_hits_total") == 1
    assert value(second, "peach_environment_cache_hits_total") == 0
    assert not any(n.startswith("peach_") for n in prometheus_client.REGISTRY._names_to_collectors)


def test_label_values_are_made_safe() -> None:
    assert label("chrts") == "chrts" and label('a b\n"c') == "a_b__c" and label("") == "_"
    assert len(label("x" * 500)) == 128


def test_promtool_accepts_the_exposition(metrics: Metrics) -> None:
    record_sample_activity(metrics)
    metrics.loop_pass("metadata", 0.3)
    rendered = metrics.render()
    assert CONTENT_TYPE.startswith("text/plain")
    assert b"_created" not in rendered
    families = {family.name for family in text_string_to_metric_families(rendered.decode())}
    assert {
        "peach_runs",
        "peach_run_duration_seconds",
        "peach_running_tasks",
        "peach_loop_lag_seconds",
    } <= families
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run bin/setup (installs Debian's prometheus)"
    checked = subprocess.run([promtool, "check", "metrics"], input=rendered, capture_output=True, timeout=30)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, b"", b"")


@pytest.fixture
def metrics_endpoint(metrics: Metrics) -> Iterator[str]:
    """A tiny HTTP server serving ``metrics.render()`` on loopback; yields host:port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.render()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.mark.slow
def test_a_real_prometheus_scrapes_the_run_counts(
    metrics: Metrics, metrics_endpoint: str, tmp_path: Path
) -> None:
    record_sample_activity(metrics)
    query = 'sum by (status) (peach_runs_total{codops="chrts"})'

    def counts() -> dict[str, float]:
        return {r["metric"]["status"]: float(r["value"][1]) for r in prometheus_query(base, query)}

    with prometheus_server(metrics_endpoint, tmp_path) as base:
        expected = {"SUCCEEDED": 1.0, "FAILED": 1.0, "TIMED_OUT": 1.0}
        wait_for(lambda: counts() == expected, 60, f"Prometheus to report {expected}", interval=0.25)
        for number in range(20, 22):  # later runs show up at the next scrapes
            metrics.run_finished(make_run(number, RunStatus.SUCCEEDED))
        expected["SUCCEEDED"] = 3.0
        wait_for(lambda: counts() == expected, 60, f"Prometheus to report {expected}", interval=0.25)
        up = prometheus_query(base, 'up{job="peach"}')
        assert [float(r["value"][1]) for r in up] == [1.0]
