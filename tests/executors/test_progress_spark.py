"""Progress of spark runs: on YARN (cluster mode) from the ResourceManager's report (tests/fake_rm.py), and in
local mode from the driver's PEACH_PROGRESS lines, which real spark-submit passes through."""

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from executors.base import RunRequest
from executors.environments import EnvironmentStore
from executors.logs import LogLimits
from executors.spark import SparkExecutor
from executors.yarn.execution import SPARK_AM_PROGRESS, yarn_progress
from scheduler.config import OrganisationSettings, Resources, SparkSettings
from scheduler.status import RunStatus
from tests.executors.test_spark_yarn import drive_until, make_executor, request, started
from tests.executors.test_spark_yarn import finish as finish_yarn
from tests.helpers.executor_fixtures import finish, no_survivors, wait_for
from tests.helpers.fake_rm import FakeResourceManager
from tests.helpers.spark_fixtures import TEST_CONF, make_spark_task


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> EnvironmentStore:
    return EnvironmentStore(tmp_path_factory.mktemp("environments"))


@pytest.fixture
def rm() -> Iterator[FakeResourceManager]:
    fake = FakeResourceManager()
    yield fake
    fake.close()


@pytest.fixture
def runs() -> Iterator[list[str]]:
    yield from no_survivors()


def test_yarn_progress_reads_the_report_and_skips_sparks_constant() -> None:
    progress = yarn_progress({"state": "RUNNING", "progress": 42.5}, 1000.0)
    assert progress is not None and (progress.fraction, progress.at) == (0.425, 1000.0)
    assert yarn_progress({"progress": SPARK_AM_PROGRESS}, 0) is None  # Spark's AM always says 10 %
    for junk in (None, "50", True, -1, 101, float("nan")):
        assert yarn_progress({"progress": junk}, 0) is None


def test_yarn_cluster_run_takes_its_progress_from_the_resourcemanager(
    store: EnvironmentStore, tmp_path: Path, rm: FakeResourceManager
) -> None:
    execution = started(make_executor(store, tmp_path, rm), request(tmp_path))
    drive_until(execution, lambda: execution.submitted)
    app_id = execution.application_id
    assert app_id is not None and execution.progress is None  # ACCEPTED: not running yet
    rm.set_state(app_id, "RUNNING")
    requests = len(rm.requests)
    drive_until(execution, lambda: len(rm.requests) > requests + 3)  # 0.0 first, then Spark's 10.0
    assert execution.progress is None  # neither says anything about the task
    rm.set_progress(app_id, 42.0)
    drive_until(execution, lambda: execution.progress is not None)
    assert execution.progress is not None
    assert (execution.progress.fraction, execution.progress.message) == (0.42, "reported by YARN")
    rm.set_progress(app_id, SPARK_AM_PROGRESS)
    requests = len(rm.requests)
    drive_until(execution, lambda: len(rm.requests) > requests + 2)  # polled again, and again
    assert execution.progress.fraction == 0.42  # the constant says nothing: the last real figure stays
    rm.set_progress(app_id, 100.0)
    rm.set_state(app_id, "FINISHED", "SUCCEEDED")
    outcome = finish_yarn(execution)
    assert outcome.status is RunStatus.SUCCEEDED
    assert execution.progress.fraction == 0.42  # a final report is an ending, not progress


LOCAL = """\
import peach_progress

def main():
    peach_progress.report(0.5, "halfway through the driver")
    print("PEACH_PROGRESS 0.8 printed by hand", flush=True)
"""


@pytest.mark.slow
@pytest.mark.timeout(300)  # a JVM start, slow on a loaded machine
def test_spark_local_progress_passes_through_spark_submit(
    store: EnvironmentStore, tmp_path: Path, runs: list[str]
) -> None:
    small = OrganisationSettings(
        queue="default", resources=Resources(executor_memory="512m", driver_memory="512m")
    )
    spark = SparkExecutor(
        store,
        tmp_path / "runs",
        SparkSettings(master="local[1]", conf=TEST_CONF),
        {"default": small},
        grace=2.0,
        limits=LogLimits.capped(4 * 1024 * 1024, 0.1),
    )
    task = make_spark_task(tmp_path / "repo", LOCAL)  # no `spark` parameter: no SparkContext, one JVM
    request_ = RunRequest(f"test-{secrets.token_hex(6)}", task, timeout=240)
    runs.append(request_.run_id)
    execution = spark.prepare(request_)
    execution.start()
    wait_for(lambda: execution.progress is not None, 240, "progress from the driver")
    outcome = finish(execution, 240)
    assert outcome.status is RunStatus.SUCCEEDED, execution.read_log().decode()
    assert execution.progress is not None
    assert (execution.progress.fraction, execution.progress.message) == (0.8, "printed by hand")
    assert "PEACH_PROGRESS 0.5 halfway through the driver" in execution.read_log().decode()
    assert abs(execution.progress.at - time.time()) < 300
