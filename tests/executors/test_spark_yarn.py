"""The spark executor on YARN, against a fake ResourceManager (tests/fake_rm.py) and a stand-in spark-submit
(tests/fake_spark_submit.py) that writes the real YARN client's lines."""

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from executors.base import Outcome, RunningRun, RunRequest
from executors.environments import EnvironmentStore
from executors.logs import LogLimits
from executors.runner import runner_script
from executors.spark import SparkExecutor, run_tags, spark_settings, submit_command
from executors.yarn.client import ResourceManager, unwrap
from executors.yarn.execution import YarnExecution
from executors.yarn.recovery import decide
from scheduler.config import KerberosSettings, OrganisationSettings, Resources, SecretRef, SparkSettings
from scheduler.errors import ExecutionError, ResourceManagerError
from scheduler.spec.taskspec import ExecutorKind
from scheduler.status import RunStatus
from tests.helpers.backends import wait_for
from tests.helpers.executor_fixtures import marked_processes
from tests.helpers.fake_rm import FakeResourceManager
from tests.helpers.fake_spark_submit import write_stand_in
from tests.helpers.spark_fixtures import make_spark_task

CHRTS = OrganisationSettings(
    queue="root.chrts",
    resources=Resources(executors=3, executor_cores=2, executor_memory="4g", driver_memory="2g"),
)
CODE = "def main(spark):\n    print('hello from the driver')\n"


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> EnvironmentStore:
    return EnvironmentStore(tmp_path_factory.mktemp("environments"))


@pytest.fixture
def rm() -> Iterator[FakeResourceManager]:
    fake = FakeResourceManager()
    yield fake
    fake.close()


def client(*urls: str) -> ResourceManager:
    return ResourceManager(list(urls), timeout=2.0, retries=2, backoff=0.01)


def make_executor(
    store: EnvironmentStore,
    tmp_path: Path,
    rm: FakeResourceManager,
    mode: str = "normal",
    clock: Clock | None = None,
    resourcemanager: ResourceManager | None = None,
    **settings: object,
) -> SparkExecutor:
    submit = write_stand_in(tmp_path, rm.url, mode)
    spark = SparkSettings(master="yarn", deploy_mode="cluster", submit=str(submit), **settings)  # type: ignore[arg-type]
    return SparkExecutor(
        store,
        tmp_path / "runs",
        spark,
        {"chrts": CHRTS},
        resourcemanager=resourcemanager or client(rm.url),
        poll=0.05,
        log_wait=1.0,
        lifetime_grace=600,
        grace=1.0,
        limits=LogLimits.capped(1024 * 1024, 0.05),
        clock=clock or time.monotonic,
    )


def request(tmp_path: Path, timeout: float = 3600, **kw: object) -> RunRequest:
    task = make_spark_task(tmp_path / "repo", CODE, codops="chrts", name="daily_report", **kw)  # type: ignore[arg-type]
    return RunRequest(f"run-{secrets.token_hex(4)}", task, timeout=timeout, version="abc1234")


def started(spark: SparkExecutor, req: RunRequest) -> YarnExecution:
    execution = spark.prepare(req)
    assert isinstance(execution, YarnExecution)
    execution.start()
    return execution


def drive_until(execution: YarnExecution, condition: object, limit: float = 30) -> None:
    end = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < end, "condition not reached"
        assert execution.wait(until=time.monotonic() + 0.05) is None, execution.outcome


def finish(execution: YarnExecution, limit: float = 30) -> Outcome:
    outcome = execution.wait(until=time.monotonic() + limit)
    assert outcome is not None
    assert marked_processes(execution.run_id) == []
    return outcome


def test_command_line_carries_queue_resources_tags_archive_and_conf(
    store: EnvironmentStore, tmp_path: Path, rm: FakeResourceManager
) -> None:
    conf = {"spark.dynamicAllocation.enabled": False, "spark.yarn.maxAppAttempts": 4}
    spark = make_executor(store, tmp_path, rm, conf=conf, allowed_overrides=("spark.sql.shuffle.*",))
    req = request(tmp_path, spark={"spark.sql.shuffle.partitions": 8})
    execution = spark.prepare(req)
    assert isinstance(execution, YarnExecution) and execution.submit is not None
    runner = spark.runs_root / req.run_id / "runner.py"
    archive = next((store.root / "archives").glob("*.tar.gz"))
    tags = f"peach,peach-codops-chrts,peach-task-daily_report,peach-run-{req.run_id}"
    assert execution.submit.command == [
        str(tmp_path / "spark-submit"),
        *("--master", "yarn", "--deploy-mode", "cluster", "--name", "peach-chrts-daily_report"),
        *("--queue", "root.chrts", "--num-executors", "3"),
        *("--executor-cores", "2", "--executor-memory", "4g", "--driver-memory", "2g"),
        *("--archives", f"{archive}#environment"),
        *("--conf", "spark.dynamicAllocation.enabled=false"),
        *("--conf", "spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python"),
        *("--conf", "spark.sql.shuffle.partitions=8"),
        *("--conf", "spark.yarn.appMasterEnv.PEACH_CODOPS=chrts"),
        *("--conf", f"spark.yarn.appMasterEnv.PEACH_RUN_ID={req.run_id}"),
        *("--conf", "spark.yarn.appMasterEnv.PEACH_TASK=daily_report"),
        *("--conf", "spark.yarn.appMasterEnv.PEACH_VERSION=abc1234"),
        *("--conf", "spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python"),
        *("--conf", "spark.yarn.maxAppAttempts=1"),  # the operator's 4 cannot make a task run twice
        *("--conf", "spark.yarn.submit.waitAppCompletion=false"),
        *("--conf", f"spark.yarn.tags={tags}"),
        str(runner),
    ]
    assert all(len(tag) <= 100 and tag == tag.lower() for tag in run_tags(req))
    # The driver runs on the cluster: no artifacts directory, and the run says why.
    assert execution.artifacts_dir is None and "PEACH_ARTIFACTS_DIR" not in execution.submit.env
    assert "YARN cluster mode" in (execution.artifacts_note or "")
    assert not (spark.runs_root / req.run_id / "artifacts").exists()
    # What the manifest records: the settings read back from this very command line, the runner it runs,
    # and the local build of the environment that was packed and shipped.
    manifest = execution.manifest()
    assert (
        manifest.spark == spark_settings(execution.submit.command) and manifest.spark["queue"] == "root.chrts"
    )
    assert manifest.runner == runner and manifest.python is not None
    assert manifest.python.is_relative_to(store.root) and manifest.python.name == "python"
    with pytest.raises(ExecutionError, match=r"spark.executor.memory.*spark.allowed_overrides"):
        spark.prepare(request(tmp_path / "other", spark={"spark.executor.memory": "64g"}))


def test_run_is_tracked_by_id_and_tag_with_lifetime_and_driver_logs(
    store: EnvironmentStore, tmp_path: Path, rm: FakeResourceManager
) -> None:
    spark = make_executor(store, tmp_path, rm)
    execution = started(spark, request(tmp_path, timeout=1800))
    before = time.time()
    drive_until(execution, lambda: execution.submitted)
    app_id = execution.application_id
    assert app_id == f"application_{1700000000000}_0001"
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[1:3] == ["--master", "yarn"]
    expiry = datetime.strptime(rm.timeouts[app_id], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    assert before + 1800 + 600 - 5 <= expiry <= time.time() + 1800 + 600
    rm.set_state(app_id, "RUNNING")
    assert execution.wait(until=time.monotonic() + 0.2) is None
    rm.node_logs[rm.container(app_id)] = {"stdout": "hello from the driver\n", "stderr": "INFO all good\n"}
    rm.set_state(app_id, "FINISHED", "SUCCEEDED")
    outcome = finish(execution)
    assert outcome.status is RunStatus.SUCCEEDED, outcome
    assert outcome.handle == f"yarn:{app_id}"
    text = execution.read_log().decode()
    assert "source: NodeManager" in text and "log aggregation DISABLED" in text
    assert "hello from the driver" in text and "INFO all good" in text


def test_failed_application_fails_the_run_with_its_diagnostics(
    store: EnvironmentStore, tmp_path: Path, rm: FakeResourceManager
) -> None:
    execution = started(make_executor(store, tmp_path, rm), request(tmp_path))
    drive_until(execution, lambda: execution.submitted)
    assert execution.application_id is not None
    rm.set_state(execution.application_id, "FAILED", "FAILED", "User class threw exception: boom\nat x")
    outcome = finish(execution)
    assert outcome.status is RunStatus.FAILED
    assert outcome.error == "User class threw exception: boom"
    assert "YARN diagnostics: User class threw exception: boom" in execution.read_log().decode()


def test_lost_output_the_tag_finds_the_application(
    store: EnvironmentStore, tmp_path: Path, rm: FakeResourceManager
) -> None:
    execution = started(make_executor(store, tmp_path, rm, mode="silent"), request(tmp_path))
    drive_until(execution, lambda: execution.submitted)
    assert execution.application_id == "application_1700000000000_0001"
    assert "found application_1700000000000_0001 by its tag" in execution.read_log().decode()
    execution.kill("test over")


def test_refused_submission_fails_and_never_takes_an_id_from_the_log(
    store: EnvironmentStore, tmp_path: Path, rm: FakeResourceManager
) -> None:
    execution = started(make_executor(store, tmp_path, rm, mode="refused"), request(tmp_path))
    outcome = finish(execution)
    assert outcome.status is RunStatus.FAILED
    assert "exit code 1" in outcome.summary and "no application is tagged" in outcome.summary
    assert outcome.handle == f"pid:{execution.submit.pid}"  # application_1_0001 in its output is not ours
    assert "application_1_0001" in execution.read_log().decode()


def test_timeout_kills_the_application_through_the_rest_api(
    store: EnvironmentStore, tmp_path: Path, rm: FakeResourceManager
) -> None:
    clock = Clock()
    execution = started(make_executor(store, tmp_path, rm, clock=clock), request(tmp_path, timeout=300))
    drive_until(execution, lambda: execution.submitted)
    app_id = execution.application_id
    assert app_id is not None
    rm.set_state(app_id, "RUNNING")
    clock.offset += 301
    outcome = finish(execution)
    assert outcome.status is RunStatus.TIMED_OUT
    assert rm.apps[app_id]["state"] == "KILLED"
    assert rm.kill_requests == [app_id]  # 202, then the state reads KILLED
    assert "killed through the ResourceManager (KILLED)" in outcome.summary


def test_resourcemanager_ha_fails_over_to_the_active_one(
    store: EnvironmentStore, tmp_path: Path, rm: FakeResourceManager
) -> None:
    other = FakeResourceManager()
    try:
        other.apps = rm.apps  # one cluster, two ResourceManagers
        other.standby = True
        ha = client(rm.url, other.url)
        execution = started(make_executor(store, tmp_path, rm, resourcemanager=ha), request(tmp_path))
        drive_until(execution, lambda: execution.submitted)
        assert ha.active == rm.url
        rm.standby, other.standby = True, False  # failover: rm becomes the standby and answers 503
        app_id = execution.application_id
        assert app_id is not None
        rm.set_state(app_id, "FINISHED", "SUCCEEDED")
        outcome = finish(execution)
        assert outcome.status is RunStatus.SUCCEEDED
        assert ha.active == other.url
        assert ("GET", f"/ws/v1/cluster/apps/{app_id}") in other.requests
        rm.active_url = other.url  # a standby that knows the active one redirects to it
        assert client(rm.url).app(app_id)["state"] == "FINISHED"
    finally:
        other.close()


def test_no_resourcemanager_answering_is_an_error_after_bounded_retries(rm: FakeResourceManager) -> None:
    rm.standby = True
    sleeps: list[float] = []
    dead = ResourceManager(
        [rm.url, "http://127.0.0.1:9"], timeout=1, retries=3, backoff=0.5, sleep=sleeps.append
    )
    with pytest.raises(ResourceManagerError, match="no ResourceManager answered"):
        dead.apps_by_tag("peach")
    assert sleeps == [0.5, 1.0]


def test_driver_logs_come_from_the_log_server_or_fall_back_to_the_nodemanager(
    rm: FakeResourceManager,
) -> None:
    yarn = client(rm.url)
    app_id = rm.submit("peach-chrts-job", "chrts", ["peach"])
    container = rm.container(app_id)
    rm.set_state(app_id, "FINISHED", "SUCCEEDED")
    rm.node_logs[container] = {"stdout": "from the node\n"}
    rm.server_logs[container] = {"stdout": "aggregated\n", "stderr": "aggregated err\n"}
    rm.apps[app_id]["logAggregationStatus"] = "SUCCEEDED"
    source, files = yarn.driver_logs(app_id, f"{rm.url}/logserver", 1024, wait=0)
    assert source == f"aggregated logs from {rm.url}/logserver"
    assert files == {"stdout": b"aggregated\n", "stderr": b"aggregated err\n"}
    rm.apps[app_id]["logAggregationStatus"] = "DISABLED"
    source, files = yarn.driver_logs(app_id, f"{rm.url}/logserver", 5, wait=0)
    assert source.startswith("NodeManager") and "DISABLED" in source
    assert files == {"stdout": b"from "}  # capped
    assert yarn.apps_by_tag("peach-run-nobody") == []  # {"apps": null}


def test_driver_logs_after_aggregation_as_hadoop_serves_them(rm: FakeResourceManager) -> None:
    yarn = client(rm.url)
    app_id = rm.submit("peach-chrts-job", "chrts", ["peach"])
    container = rm.container(app_id)
    rm.set_state(app_id, "FINISHED", "SUCCEEDED")
    rm.apps[app_id]["logAggregationStatus"] = "SUCCEEDED"
    rm.node_logs[container] = {"stdout": "gone from the node\n"}
    # no log server anywhere: the NodeManager has forgotten the container (404 Unknown container)
    source, files = yarn.driver_logs(app_id, None, 1024, wait=0)
    assert files == {} and source.startswith("none (log aggregation SUCCEEDED")
    # the log server has stdout only: its 200 "Can not find logs" for stderr is no file
    rm.server_logs[container] = {"stdout": "aggregated\n"}
    source, files = yarn.driver_logs(app_id, f"{rm.url}/logserver", 1024, wait=0)
    assert files == {"stdout": b"aggregated\n"}  # unwrapped: Hadoop's Container:/LogContents: lines gone
    # the NodeManager redirects to the log server its yarn-site names
    rm.nm_log_server = f"{rm.url}/logserver"
    source, files = yarn.driver_logs(app_id, None, 1024, wait=0)
    assert source.startswith("NodeManager") and files == {"stdout": b"aggregated\n"}
    # a log server that does not know the container (500) serves nothing
    del rm.server_logs[container]
    assert yarn.driver_logs(app_id, f"{rm.url}/logserver", 1024, wait=0)[1] == {}


def test_driver_logs_wait_for_aggregation_to_end_then_come_from_the_log_server(
    rm: FakeResourceManager,
) -> None:
    app_id = rm.submit("peach-chrts-job", "chrts", ["peach"])
    container = rm.container(app_id)
    rm.set_state(app_id, "KILLED", "KILLED")
    rm.apps[app_id]["logAggregationStatus"] = "RUNNING"
    rm.node_logs[container] = {"stdout": "a snapshot while the container may still write\n"}
    rm.server_logs[container] = {"stdout": "aggregated, complete\n"}
    sleeps: list[float] = []

    def aggregation_ends(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            rm.apps[app_id]["logAggregationStatus"] = "SUCCEEDED"

    yarn = ResourceManager([rm.url], timeout=2.0, retries=2, sleep=aggregation_ends)
    source, files = yarn.driver_logs(app_id, f"{rm.url}/logserver", 1024)
    assert source == f"aggregated logs from {rm.url}/logserver"
    assert files == {"stdout": b"aggregated, complete\n"}
    assert sleeps == [0.25, 0.25]  # asked every 0.25 s until aggregation ended


def test_unwrap_keeps_a_file_as_written() -> None:
    wrapped = (
        b"Container: c on h_1\nLogType:stdout\nLogLength:3\nLogContents:\nabc\nEnd of LogType:stdout\n***"
    )
    assert unwrap(wrapped) == b"abc"
    assert unwrap(b"plain output\n") == b"plain output\n"
    assert unwrap(wrapped[:62]) == b"ab"  # capped inside its contents
    assert unwrap(wrapped[:30]) == wrapped[:30]  # capped before them: left as it is
    stars = b"*" * 71
    assert unwrap(b"\nEnd of LogType:stdout\n" + stars + b"\n\n") == b""  # a NodeManager's empty file
    assert unwrap(b"x\n\nEnd of LogType:stderr\n" + stars + b"\n") == b"x\n"
    said = b"End of LogType:stdout\nmore\n"  # the task's own words, not Hadoop's last lines
    assert unwrap(said) == said


def running(run_id: str, tmp_path: Path, deadline: float | None, log: bytes | None = None) -> RunningRun:
    path = tmp_path / f"{run_id}.log"
    if log is not None:
        path.write_bytes(log)
    return RunningRun(run_id, "chrts", "daily_report", ExecutorKind.SPARK, deadline=deadline, log_path=path)


def test_recover_reattaches_live_runs_and_kills_the_rest(
    store: EnvironmentStore, tmp_path: Path, rm: FakeResourceManager
) -> None:
    spark = make_executor(store, tmp_path, rm)
    now = time.time()
    live = running("r-live", tmp_path, now + 3600, b"[peach] run r-live: before the restart\n")
    late = running("r-late", tmp_path, now - 86400)
    quiet = running("r-quiet", tmp_path, now + 3600)  # nothing live on YARN: closed as a local run
    apps = {
        run_id: rm.submit("peach-chrts-x", "chrts", ["peach", f"peach-run-{run_id}"])
        for run_id in ("r-live", "r-late", "r-gone")
    }
    rm.set_state(apps["r-live"], "RUNNING")
    done = rm.submit("peach-chrts-old", "chrts", ["peach", "peach-run-r-old"])
    rm.set_state(done, "FINISHED", "SUCCEEDED")
    recovery = spark.recover([live, late, quiet])
    assert rm.kill_requests == [apps["r-gone"]]  # the application of no running run
    assert rm.apps[apps["r-gone"]]["state"] == "KILLED"
    assert sorted(recovery.reattached) == ["r-late", "r-live"]
    gone = "the scheduler stopped while this run was going; its process was gone at restart"
    assert {run_id: (o.status, o.summary) for run_id, o in recovery.closed.items()} == {
        "r-quiet": (RunStatus.LOST, gone),
    }
    timed_out = finish(recovery.reattached["r-late"])  # past its deadline: its supervisor times it out
    assert timed_out.status is RunStatus.TIMED_OUT
    assert rm.apps[apps["r-late"]]["state"] == "KILLED"
    assert "driver logs of" in (tmp_path / "r-late.log").read_text()
    execution = recovery.reattached["r-live"]
    assert isinstance(execution, YarnExecution) and execution.started
    assert execution.handle == f"yarn:{apps['r-live']}"
    assert execution.wait(until=time.monotonic() + 0.3) is None  # still RUNNING on YARN
    rm.set_state(apps["r-live"], "FINISHED", "SUCCEEDED")
    outcome = finish(execution)
    assert (outcome.status, outcome.handle) == (RunStatus.SUCCEEDED, f"yarn:{apps['r-live']}")
    assert (
        outcome.summary
        == f"re-attached after a restart; YARN application {apps['r-live']} finished: SUCCEEDED"
    )
    text = (tmp_path / "r-live.log").read_text()
    assert text.startswith("[peach] run r-live: before the restart\n"), text  # appended to, not replaced
    assert f"re-attached after a scheduler restart to YARN application {apps['r-live']}" in text
    assert "driver logs of" in text and text.rstrip().endswith(f"run ended: SUCCEEDED: {outcome.summary}")


def test_decisions_for_live_applications(tmp_path: Path) -> None:
    now = time.time()
    runs = {
        "r-live": running("r-live", tmp_path, now + 1),
        "r-endless": running("r-endless", tmp_path, None),
        "r-late": running("r-late", tmp_path, now),
    }
    apps = [
        {"id": f"application_1_000{n}", "applicationTags": f"peach,peach-run-{run_id}"}
        for n, run_id in enumerate(["r-live", "r-endless", "r-late", "r-gone"])
    ]
    apps.append({"id": "application_1_0009", "applicationTags": "peach"})
    decisions = decide(apps, runs)
    assert [(d.run_id, d.action, d.why) for d in decisions] == [
        ("r-live", "follow", "its run is still RUNNING"),
        ("r-endless", "follow", "its run is still RUNNING"),
        ("r-late", "follow", "its run is still RUNNING"),  # its supervisor times it out
        ("r-gone", "kill", "its run is unknown or no longer running"),
        (None, "kill", "its run is unknown or no longer running"),
    ]


def test_applications_that_ended_while_the_scheduler_was_down_keep_yarns_truth(
    store: EnvironmentStore, tmp_path: Path, rm: FakeResourceManager
) -> None:
    spark = make_executor(store, tmp_path, rm)
    now = time.time()
    ended = {}
    for run_id, state, final, diagnostics in [
        ("r-ok", "FINISHED", "SUCCEEDED", ""),
        ("r-bad", "FINISHED", "FAILED", "User application exited with status 1"),
        (
            "r-life",
            "KILLED",
            "KILLED",
            "Application is killed by ResourceManager as Application is timed out",
        ),
    ]:
        ended[run_id] = app_id = rm.submit("peach-chrts-x", "chrts", ["peach", f"peach-run-{run_id}"])
        rm.set_state(app_id, state, final, diagnostics)
        rm.apps[app_id]["finishedTime"] = int((now - 60) * 1000)  # a minute ago, while it was down
    runs = [
        RunningRun(
            "r-ok", "chrts", "a", ExecutorKind.SPARK, f"yarn:{ended['r-ok']}", now + 600, tmp_path / "ok"
        ),
        running("r-bad", tmp_path, now + 600),  # no handle recorded: found by its tag
        running("r-life", tmp_path, now - 120),  # killed past its deadline
        RunningRun("r-forgot", "chrts", "a", ExecutorKind.SPARK, "yarn:application_1_9999", None, None),
    ]
    recovery = spark.recover(runs)
    assert sorted(recovery.reattached) == ["r-bad", "r-life", "r-ok"]
    assert recovery.closed["r-forgot"].status is RunStatus.LOST
    assert "YARN no longer knows its application application_1_9999" in recovery.closed["r-forgot"].summary
    outcomes = {run_id: finish(execution) for run_id, execution in recovery.reattached.items()}
    assert {run_id: o.status for run_id, o in outcomes.items()} == {
        "r-ok": RunStatus.SUCCEEDED,
        "r-bad": RunStatus.FAILED,
        "r-life": RunStatus.TIMED_OUT,
    }
    assert all(abs((o.finished_at or 0) - (now - 60)) < 1 for o in outcomes.values())  # YARN's finishedTime
    assert rm.kill_requests == []  # nothing still going: nothing killed
    text = (tmp_path / "ok").read_text()
    assert "while the scheduler was down" in text and "driver logs of" in text


def test_a_reattached_run_is_killed_at_its_deadline(
    store: EnvironmentStore, tmp_path: Path, rm: FakeResourceManager
) -> None:
    spark = make_executor(store, tmp_path, rm)
    app_id = rm.submit("peach-chrts-x", "chrts", ["peach", "peach-run-r-soon"])
    rm.set_state(app_id, "RUNNING")
    recovery = spark.recover([running("r-soon", tmp_path, time.time() + 1.0, b"")])
    execution = recovery.reattached["r-soon"]
    outcome = finish(execution)
    assert outcome.status is RunStatus.TIMED_OUT
    assert outcome.summary == (
        f"re-attached after a restart; deadline passed: YARN application {app_id} killed through the "
        "ResourceManager (KILLED)"
    )
    assert rm.kill_requests == [app_id] and rm.apps[app_id]["state"] == "KILLED"


def test_recover_without_an_answering_resourcemanager_closes_runs_as_local_ones(
    store: EnvironmentStore, tmp_path: Path, rm: FakeResourceManager
) -> None:
    rm.error = 500
    spark = make_executor(store, tmp_path, rm)
    recovery = spark.recover([running("r-1", tmp_path, None)])
    assert recovery.reattached == {}
    assert recovery.closed["r-1"].status is RunStatus.LOST


def test_one_resourcemanager_call_per_interval_follows_every_run(
    store: EnvironmentStore, tmp_path: Path, rm: FakeResourceManager
) -> None:
    spark = make_executor(store, tmp_path, rm)
    executions = [started(spark, request(tmp_path)) for _ in range(5)]
    for execution in executions:
        drive_until(execution, lambda e=execution: e.submitted)
        assert execution.application_id is not None
        rm.set_state(execution.application_id, "RUNNING")
    before = len(rm.requests)
    done = threading.Event()

    def follow(execution: YarnExecution) -> None:
        while not done.is_set() and execution.wait(until=time.monotonic() + 0.05) is None:
            pass

    threads = [threading.Thread(target=follow, args=(e,)) for e in executions]
    for thread in threads:
        thread.start()
    shared = lambda: [p for _, p in rm.requests[before:] if p == "/ws/v1/cluster/apps"]  # noqa: E731
    wait_for(lambda: len(shared()) >= 10, 30, "ten shared answers")
    own = [p for _, p in rm.requests[before:] if p.startswith("/ws/v1/cluster/apps/")]
    assert own == []  # while they run, no run asks for its own report
    for execution in executions:
        assert execution.application_id is not None
        rm.set_state(execution.application_id, "FINISHED", "SUCCEEDED")
    for thread in threads:
        thread.join(30)
    done.set()
    assert [finish(e).status for e in executions] == [RunStatus.SUCCEEDED] * 5
    finals = {p for _, p in rm.requests[before:] if p.startswith("/ws/v1/cluster/apps/")}
    assert {f"/ws/v1/cluster/apps/{e.application_id}" for e in executions} <= finals  # each its final report


SECRET_VALUE = "yarn-secret-value-31337"


def test_secrets_travel_as_a_private_file_never_in_argv_and_are_masked(
    store: EnvironmentStore, tmp_path: Path, rm: FakeResourceManager
) -> None:
    key = tmp_path / "api.key"
    key.write_text(SECRET_VALUE)
    chrts = CHRTS.model_copy(
        update={
            "env": {"MODEL_BUCKET": "s3://models/chrts"},
            "secrets": {"API_KEY": SecretRef(file=key)},
            "hadoop_user": "chrts-svc",
            "view_acls": ("alice", "@chrts-team"),
            "modify_acls": ("@chrts-ops",),
        }
    )
    spark = make_executor(store, tmp_path, rm)
    spark.organisations = {"chrts": chrts}
    spark.runs.organisations = spark.organisations
    req = request(tmp_path)
    execution = started(spark, req)
    assert execution.submit is not None
    command, env = execution.submit.command, execution.submit.env
    secrets_file = spark.runs_root / req.run_id / "work" / "peach-secrets.json"
    assert command[command.index("--files") + 1] == f"{secrets_file}#peach-secrets.json"
    assert command[command.index("--proxy-user") + 1] == "chrts-svc"
    conf = dict(command[i + 1].split("=", 1) for i, arg in enumerate(command) if arg == "--conf")
    assert {k: v for k, v in conf.items() if "acls" in k} == {
        "spark.acls.enable": "true",
        "spark.ui.view.acls": "alice",
        "spark.ui.view.acls.groups": "chrts-team",
        "spark.modify.acls.groups": "chrts-ops",
    }
    assert conf["spark.yarn.appMasterEnv.PEACH_SECRETS_FILE"] == "peach-secrets.json"
    assert conf["spark.yarn.appMasterEnv.MODEL_BUCKET"] == conf["spark.executorEnv.MODEL_BUCKET"]
    assert SECRET_VALUE not in json.dumps(command) and SECRET_VALUE not in json.dumps(
        env
    )  # nor spark-submit's env
    assert SECRET_VALUE not in json.dumps(execution.manifest().spark)
    assert json.loads(secrets_file.read_text()) == {"API_KEY": SECRET_VALUE}
    assert secrets_file.stat().st_mode & 0o777 == 0o600  # owner-only until YARN localises it privately

    drive_until(execution, lambda: execution.submitted)
    app_id = execution.application_id
    assert (
        app_id is not None and rm.apps[app_id]["user"] == "chrts-svc"
    )  # the application runs as the proxy user
    rm.node_logs[rm.container(app_id)] = {"stdout": f"driver printed {SECRET_VALUE}\n", "stderr": ""}
    rm.set_state(app_id, "FINISHED", "FAILED", f"User class threw exception: bad key {SECRET_VALUE}")
    outcome = finish(execution)
    assert outcome.error == "User class threw exception: bad key ***" and SECRET_VALUE not in outcome.summary
    text = execution.read_log().decode()
    assert "driver printed ***" in text and SECRET_VALUE not in text
    assert not secrets_file.exists()  # removed once the run is over


def test_the_runner_reads_the_secrets_file_into_the_environment_and_removes_it(tmp_path: Path) -> None:
    code = "import os\n\ndef main():\n    print('got', os.environ['API_KEY'] == 'v-12345')\n"
    task = make_spark_task(tmp_path / "repo", code, name="reader")
    runner = tmp_path / "runner.py"
    runner.write_text(runner_script(task))
    (tmp_path / "peach-secrets.json").write_text(json.dumps({"API_KEY": "v-12345"}))
    env = {"PATH": os.environ["PATH"], "PEACH_SECRETS_FILE": "peach-secrets.json"}
    done = subprocess.run(
        [sys.executable, str(runner)], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout) == (0, "got True\n"), done.stderr
    assert not (tmp_path / "peach-secrets.json").exists()


def test_kerberos_gives_principal_and_keytab_unless_a_proxy_user_impersonates(tmp_path: Path) -> None:
    kerberos = KerberosSettings(principal="peach/host@EXAMPLE.ORG", keytab=tmp_path / "peach.keytab")
    spark = SparkSettings(master="yarn", deploy_mode="cluster")
    req = request(tmp_path)
    own = submit_command(spark, CHRTS, req, tmp_path / "runner.py", kerberos=kerberos)
    assert own[own.index("--principal") + 1] == "peach/host@EXAMPLE.ORG"
    assert own[own.index("--keytab") + 1] == str(tmp_path / "peach.keytab")
    proxied = CHRTS.model_copy(update={"hadoop_user": "chrts-svc"})
    command = submit_command(spark, proxied, req, tmp_path / "runner.py", kerberos=kerberos)
    assert "--principal" not in command and "--keytab" not in command  # Spark refuses both with --proxy-user
    assert command[command.index("--proxy-user") + 1] == "chrts-svc"
    local = submit_command(SparkSettings(), CHRTS, req, tmp_path / "runner.py", kerberos=kerberos)
    assert "--keytab" not in local  # no YARN, no Kerberos


def test_a_run_reattached_after_a_restart_still_masks_its_organisations_secrets(
    store: EnvironmentStore, tmp_path: Path, rm: FakeResourceManager
) -> None:
    key = tmp_path / "api.key"
    key.write_text(SECRET_VALUE)
    spark = make_executor(store, tmp_path, rm)
    spark.organisations = {"chrts": CHRTS.model_copy(update={"secrets": {"API_KEY": SecretRef(file=key)}})}
    app_id = rm.submit("peach-chrts-x", "chrts", ["peach", "peach-run-r-back"])
    rm.set_state(app_id, "RUNNING")
    recovery = spark.recover([running("r-back", tmp_path, time.time() + 3600, b"[peach] before\n")])
    execution = recovery.reattached["r-back"]
    rm.node_logs[rm.container(app_id)] = {"stdout": f"the key is {SECRET_VALUE}\n", "stderr": ""}
    rm.set_state(app_id, "FINISHED", "FAILED", f"bad key {SECRET_VALUE}")
    outcome = finish(execution)
    text = (tmp_path / "r-back.log").read_text()
    assert "the key is ***" in text and SECRET_VALUE not in text
    assert SECRET_VALUE not in outcome.summary and SECRET_VALUE not in (outcome.error or "")
