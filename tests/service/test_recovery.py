"""Restart recovery, the service's side: each executor asked about the runs of its kind, the answers applied
in one place (closed runs noted, settled, finished; re-attached runs finished by the run supervisor)."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from executors.environments import EnvironmentStore
from executors.python import PythonExecutor
from scheduler.metrics import Metrics
from scheduler.runs import supervise
from scheduler.runs.supervise import Runtime
from scheduler.service.recovery import recover
from scheduler.spec.taskspec import ExecutorKind
from scheduler.status import RunStatus
from scheduler.store.store import Store
from tests.executors.test_spark_yarn import make_executor
from tests.helpers.executor_fixtures import alive, wait_for
from tests.helpers.fake_rm import FakeResourceManager


@pytest.fixture
def rm() -> Iterator[FakeResourceManager]:
    fake = FakeResourceManager()
    yield fake
    fake.close()


def series(metrics: Metrics, name: str, **labels: str) -> float:
    return sum(
        value
        for sample, found, value in metrics.series()
        if sample == name and all(found.get(k) == v for k, v in labels.items())
    )


def test_each_kind_is_recovered_by_its_executor_and_closed_in_one_place(
    tmp_path: Path, rm: FakeResourceManager
) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'state.db'}")
    environments = EnvironmentStore(tmp_path / "envs")
    spark = make_executor(environments, tmp_path, rm)
    python = PythonExecutor(environments, spark.runs_root)
    runtime = Runtime(store, Metrics(), {ExecutorKind.PYTHON: python, ExecutorKind.SPARK: spark})
    soon = datetime.now(UTC) + timedelta(hours=1)
    on_yarn = store.start_run("chrts", "big", loop="chrts", executor="spark", version="a", deadline=soon)
    local = store.start_run("chrts", "small", loop="chrts", executor="python", version="a", deadline=soon)
    log = spark.runs.log_path(on_yarn.id)
    log.parent.mkdir(parents=True)
    log.write_bytes(b"[peach] before the restart\n")
    store.attach(on_yarn.id, handle="pid:1", log_path=str(log))  # spark-submit's, then lost in the crash
    app_id = rm.submit("peach-chrts-big", "chrts", ["peach", f"peach-run-{on_yarn.id}"])
    rm.set_state(app_id, "RUNNING")
    code = "import time\nprint('up', flush=True)\ntime.sleep(1000)"
    survivor = subprocess.Popen(
        [sys.executable, "-c", code],
        env={"PEACH_RUN_ID": local.id},
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert survivor.stdout is not None and survivor.stdout.readline() == b"up\n"
        recovered = recover(runtime, spark.runs.log_path)
        assert not alive(survivor.pid)
    finally:
        survivor.kill()
        survivor.wait()
        if survivor.stdout is not None:
            survivor.stdout.close()
    (lost,) = recovered.closed
    assert (lost.id, lost.status) == (local.id, RunStatus.LOST)
    assert (lost.outcome or "").startswith("the scheduler restarted while this run was going")
    assert (lost.log_path or "").endswith("output.log.gz")  # a log given to it, noted, then settled
    assert store.get_run(on_yarn.id).status is RunStatus.RUNNING  # re-attached: followed, not closed
    wait_for(
        lambda: store.get_run(on_yarn.id).application_id == app_id,
        10,
        "its handle recorded by its supervisor",
    )
    rm.set_state(app_id, "FINISHED", "SUCCEEDED")
    (supervisor,) = recovered.resumed
    supervisor.join(30)
    assert not supervisor.is_alive()
    closed = store.get_run(on_yarn.id)
    assert (closed.status, closed.handle) == (RunStatus.SUCCEEDED, f"yarn:{app_id}")
    assert closed.outcome == f"re-attached after a restart; YARN application {app_id} finished: SUCCEEDED"
    assert (closed.log_path or "").endswith("output.log.gz")  # the same finishing path as any run
    assert series(runtime.metrics, "peach_runs_total", status="SUCCEEDED", executor="spark") == 1
    assert series(runtime.metrics, "peach_runs_total", status="LOST", executor="python") == 1
    store.close()


def test_a_failing_executor_closes_its_runs_rather_than_leave_them_running(tmp_path: Path) -> None:
    class Broken(PythonExecutor):
        def recover(self, running: object) -> object:  # type: ignore[override]
            raise RuntimeError("boom")

    store = Store.from_url(f"sqlite:///{tmp_path / 'state.db'}")
    broken = Broken(EnvironmentStore(tmp_path / "envs"), tmp_path / "runs")
    runtime = Runtime(store, Metrics(), {ExecutorKind.PYTHON: broken})
    run = store.start_run("chrts", "small", loop="chrts", executor="python", version="a")
    orphan = store.start_run("chrts", "spark", loop="chrts", executor="spark", version="a")  # no executor
    started = time.monotonic()
    recovered = recover(runtime, lambda run_id: tmp_path / "runs" / run_id / "output.log")
    assert time.monotonic() - started < 10
    outcomes = {r.id: (r.status, r.outcome) for r in recovered.closed}
    assert outcomes == {
        run.id: (RunStatus.LOST, "restart recovery of the python executor failed: RuntimeError('boom')"),
        orphan.id: (RunStatus.LOST, "no spark executor to recover it at restart"),
    }
    assert store.running_runs() == [] and recovered.resumed == []
    store.close()


def test_a_lost_run_ends_when_it_was_last_known_alive_not_at_the_restart(tmp_path: Path) -> None:
    started = datetime.now(UTC) - timedelta(minutes=20)
    moments = iter([started])
    store = Store.from_url(
        f"sqlite:///{tmp_path / 'state.db'}", clock=lambda: next(moments, datetime.now(UTC))
    )
    environments = EnvironmentStore(tmp_path / "envs")
    python = PythonExecutor(environments, tmp_path / "runs")
    runtime = Runtime(store, Metrics(), {ExecutorKind.PYTHON: python})
    run = store.start_run("chrts", "quiet", loop="chrts", executor="python", version="a")
    log = python.runs.log_path(run.id)
    log.parent.mkdir(parents=True)
    log.write_bytes(b"[peach] the last line before the crash\n")
    alive_at = started + timedelta(minutes=5)  # its supervisor's last heartbeat, then the crash
    os.utime(log, (alive_at.timestamp(), alive_at.timestamp()))
    store.attach(run.id, handle="pid:999999999", log_path=str(log))

    (lost,) = recover(runtime, python.runs.log_path).closed
    assert lost.status is RunStatus.LOST
    assert lost.finished_at is not None and abs((lost.finished_at - alive_at).total_seconds()) < 0.01
    assert lost.duration_seconds == pytest.approx(300, abs=0.01)  # not the 20 minutes until the restart
    store.close()


def test_a_supervised_run_touches_its_log_as_a_heartbeat(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    log.write_text("")
    os.utime(log, (0, 0))

    class Quiet:  # what _heartbeat reads of an execution
        log_path = log

    beat = supervise._heartbeat(Quiet(), float("-inf"))  # type: ignore[arg-type]
    assert abs(log.stat().st_mtime - time.time()) < 5
    os.utime(log, (0, 0))
    assert supervise._heartbeat(Quiet(), beat) == beat  # within HEARTBEAT: not touched again
    assert log.stat().st_mtime == 0
    missing = type("Gone", (), {"log_path": tmp_path / "none"})()
    assert supervise._heartbeat(missing, float("-inf")) > beat - 1  # no log yet: no error
