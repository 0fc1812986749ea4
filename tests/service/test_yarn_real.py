"""Spark tasks on a real single-node Hadoop YARN (``-m yarn``; skipped unless PEACH_HADOOP_HOME is set).

Everything is real: the ResourceManager, NodeManager and timeline server of tests/helpers/hadoop.py,
``spark-submit`` of the scheduler's own pyspark in cluster mode, the environment archive shipped with
``--archives``, the service (in this process, or as a child killed with SIGKILL and restarted). Each
scenario prints what it saw (status, outcome, seconds) so the suite's output is its report.
"""

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from scheduler.config import load_config
from scheduler.service.service import Service
from scheduler.status import RunStatus
from scheduler.store.records import Run
from scheduler.store.store import Store
from tests.conftest import start_service
from tests.helpers.backends import wait_for
from tests.helpers.hadoop import YarnCluster, peach_config, spark_repo
from tests.helpers.orgs import log_text

pytestmark = [pytest.mark.yarn, pytest.mark.timeout(600)]

HELLO = (
    "def main(spark):\n    print('hello from the driver', flush=True)\n    print(spark.range(10).count())\n"
)
FAIL = "def main(spark):\n    raise RuntimeError('boom on the cluster')\n"
SLEEP = (
    "import time\n\n"
    "def main(spark, seconds=600):\n    print('sleeping', flush=True)\n    time.sleep(seconds)\n"
)
UDF = (
    "def main(spark):\n"
    "    import six\n"
    "    rdd = spark.sparkContext.parallelize(range(4), 2)\n"
    "    print('executors import', set(rdd.map(lambda _: __import__('six').__name__).collect()))\n"
)


@pytest.fixture
def cluster_env(yarn_cluster: YarnCluster, monkeypatch: pytest.MonkeyPatch) -> YarnCluster:
    """The client side of the cluster in this process's environment (spark-submit inherits it)."""
    for key in ("HADOOP_CONF_DIR", "YARN_CONF_DIR", "JAVA_HOME"):
        monkeypatch.setenv(key, yarn_cluster.env[key])
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    return yarn_cluster


@pytest.fixture
def no_leftover_apps(yarn_cluster: YarnCluster) -> Iterator[None]:
    """Every application a test started is ended by the test's end (killed if needed, then failed)."""
    yield
    live = apps(yarn_cluster, "ACCEPTED,RUNNING")
    for app in live:
        requests.put(
            f"{yarn_cluster.rm}/ws/v1/cluster/apps/{app['id']}/state", json={"state": "KILLED"}, timeout=10
        )
    assert live == [], "a scenario left YARN applications running"


def apps(cluster: YarnCluster, states: str = "") -> list[dict[str, Any]]:
    params = {"applicationTags": "peach", **({"states": states} if states else {})}
    answer = requests.get(f"{cluster.rm}/ws/v1/cluster/apps", params=params, timeout=10).json()
    return list((answer.get("apps") or {}).get("app") or [])


def app(cluster: YarnCluster, app_id: str) -> dict[str, Any]:
    report: dict[str, Any] = requests.get(f"{cluster.rm}/ws/v1/cluster/apps/{app_id}", timeout=10).json()[
        "app"
    ]
    return report


def finished(store: Store, run_id: str) -> Run | None:
    run = store.get_run(run_id)
    return run if run.status is not RunStatus.RUNNING else None


def report(name: str, run: Run, started: float) -> None:
    print(
        f"\n[yarn] {name}: {run.status.value} in {time.monotonic() - started:.1f} s "
        f"(app {run.application_id}): {run.outcome}"
    )


def once(tmp_path: Path, cluster: YarnCluster, tasks: dict[str, tuple[str, dict[str, object]]]) -> Service:
    service = Service(load_config(peach_config(tmp_path, cluster, spark_repo(tmp_path, tasks))))
    service.once()
    return service


@pytest.mark.usefixtures("no_leftover_apps")
def test_success_has_the_driver_output_in_its_log(tmp_path: Path, cluster_env: YarnCluster) -> None:
    started = time.monotonic()
    service = once(tmp_path, cluster_env, {"hello": (HELLO, {})})
    try:
        run = service.store.list_runs(codops="alpha", task="hello")[0]
        report("success", run, started)
        assert run.status is RunStatus.SUCCEEDED, log_text(run)
        assert run.application_id and run.application_id.startswith("application_")
        yarn = app(cluster_env, run.application_id)
        assert (yarn["state"], yarn["finalStatus"], yarn["queue"]) == ("FINISHED", "SUCCEEDED", "alpha")
        assert f"peach-run-{run.id}" in yarn["applicationTags"].split(",")
        assert "hello from the driver" in log_text(run)
    finally:
        service.close()


SECRET_VALUE = "cluster-secret-value-2718"
SECRETS = (
    "import os\n\n"
    "def main(spark):\n"
    "    key = os.environ['API_KEY']\n"
    "    print('secret', key, key == 'cluster-secret-value-2718', flush=True)\n"
    "    print('bucket', os.environ['MODEL_BUCKET'], 'user', spark.sparkContext.sparkUser(), flush=True)\n"
)


@pytest.mark.usefixtures("no_leftover_apps")
def test_proxy_user_acls_and_secrets_on_the_cluster(tmp_path: Path, cluster_env: YarnCluster) -> None:
    """The application runs as the organisation's user, carries its ACLs, and its secret reaches the
    driver through the private file: in no Spark setting (read from the event log), masked in the log."""
    started = time.monotonic()
    path = peach_config(tmp_path, cluster_env, spark_repo(tmp_path, {"secrets": (SECRETS, {})}))
    config = yaml.safe_load(path.read_text())
    events = tmp_path / "events"
    events.mkdir()
    config["spark"]["conf"].update(
        {
            "spark.eventLog.enabled": True,
            "spark.eventLog.dir": f"file://{events}",
            "spark.eventLog.compress": False,
        }
    )
    (tmp_path / "api.key").write_text(SECRET_VALUE)
    config["organisations"]["alpha"].update(
        env={"MODEL_BUCKET": "s3://alpha"},
        secrets={"API_KEY": {"file": "api.key"}},
        hadoop_user="alpha-svc",
        view_acls=["alice", "@alpha-team"],
        modify_acls=["@alpha-ops"],
    )
    path.write_text(yaml.safe_dump(config))
    service = Service(load_config(path))
    try:
        service.once()
        run = service.store.list_runs(codops="alpha", task="secrets")[0]
        report("proxy user, ACLs, secrets", run, started)
        text = log_text(run)
        assert run.status is RunStatus.SUCCEEDED, text
        assert run.application_id is not None
        assert app(cluster_env, run.application_id)["user"] == "alpha-svc"
        assert "secret *** True" in text and "bucket s3://alpha user alpha-svc" in text
        assert SECRET_VALUE not in text
        # Spark 4 writes a rolling event log: a directory of event files per application
        event_text = "".join(
            f.read_text()
            for f in sorted(events.rglob("*"))
            if f.is_file() and not f.name.startswith("appstatus")
        )
        environment = next(
            json.loads(line) for line in event_text.splitlines() if '"SparkListenerEnvironmentUpdate"' in line
        )
        spark_conf = dict(environment["Spark Properties"])
        assert SECRET_VALUE not in event_text
        assert spark_conf["spark.acls.enable"] == "true"
        assert (spark_conf["spark.ui.view.acls"], spark_conf["spark.ui.view.acls.groups"]) == (
            "alice",
            "alpha-team",
        )
        assert spark_conf["spark.modify.acls.groups"] == "alpha-ops"
        # the file was shipped; Spark's own redaction hides even its path (the name says "secrets")
        assert spark_conf["spark.yarn.dist.files"] == "*********(redacted)"
    finally:
        service.close()


@pytest.mark.usefixtures("no_leftover_apps")
def test_a_pip_dependency_is_importable_in_a_udf(tmp_path: Path, cluster_env: YarnCluster) -> None:
    started = time.monotonic()
    service = once(tmp_path, cluster_env, {"udf": (UDF, {"dependencies": ["six==1.16.0"]})})
    try:
        run = service.store.list_runs(codops="alpha", task="udf")[0]
        report("udf dependency", run, started)
        assert run.status is RunStatus.SUCCEEDED, log_text(run)
        assert "executors import {'six'}" in log_text(run)
    finally:
        service.close()


@pytest.mark.usefixtures("no_leftover_apps")
def test_a_failure_keeps_its_traceback(tmp_path: Path, cluster_env: YarnCluster) -> None:
    started = time.monotonic()
    service = once(tmp_path, cluster_env, {"broken": (FAIL, {})})
    try:
        run = service.store.list_runs(codops="alpha", task="broken")[0]
        report("failure", run, started)
        assert run.status is RunStatus.FAILED
        text = log_text(run)
        assert "RuntimeError: boom on the cluster" in text, text
        assert app(cluster_env, str(run.application_id))["finalStatus"] == "FAILED"
    finally:
        service.close()


@pytest.mark.usefixtures("no_leftover_apps")
def test_a_timeout_kills_the_application_and_keeps_the_driver_log(
    tmp_path: Path, cluster_env: YarnCluster
) -> None:
    started = time.monotonic()  # 75 s: on 2 cores the driver's main may start 40 s after the run
    service = once(tmp_path, cluster_env, {"slow": (SLEEP, {"timeout": "75s"})})
    try:
        run = service.store.list_runs(codops="alpha", task="slow")[0]
        report("timeout", run, started)
        assert run.status is RunStatus.TIMED_OUT
        assert app(cluster_env, str(run.application_id))["state"] == "KILLED"
        assert "sleeping" in log_text(run), log_text(run)
    finally:
        service.close()


Services = list["subprocess.Popen[bytes]"]


def start(tmp_path: Path, config: Path, services: Services) -> "subprocess.Popen[bytes]":
    process = start_service(config, tmp_path / "service.log")
    services.append(process)
    return process


def kill9(process: "subprocess.Popen[bytes]") -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def running_app(store: Store, task: str, cluster: YarnCluster, state: str = "RUNNING") -> Run:
    def going() -> Run | None:
        runs = store.list_runs(codops="alpha", task=task, limit=1)
        if runs and runs[0].application_id and app(cluster, runs[0].application_id)["state"] == state:
            return runs[0]
        return None

    run: Run = wait_for(going, 180, f"{task}'s application {state}", interval=0.5)
    return run


def across_a_restart(
    root: Path,
    cluster: YarnCluster,
    services: Services,
    scenario: str,
    tasks: dict[str, tuple[str, dict[str, object]]],
    while_down: Callable[[Run], bool] = lambda run: True,
    **yarn: object,
) -> tuple[Run, Run]:
    """Start the service, wait for the (one) task's application to run, SIGKILL the service, wait until
    ``while_down(run)`` holds, restart it: (the run as it was, the run as the restarted service closed it)."""
    task = next(iter(tasks))
    config = peach_config(root, cluster, spark_repo(root, tasks), **yarn)
    store = Store.from_url(load_config(config).database_url)
    try:
        started = time.monotonic()
        process = start(root, config, services)
        run = running_app(store, task, cluster)
        kill9(process)
        wait_for(lambda: while_down(run), 180, f"{scenario}: while the service is down", interval=0.5)
        start(root, config, services)
        done: Run = wait_for(
            lambda: finished(store, run.id), 240, f"{scenario}: the run closed", interval=0.5
        )
        report(scenario, done, started)
        return run, done
    finally:
        store.close()


def state(cluster: YarnCluster, run: Run) -> str:
    return str(app(cluster, str(run.application_id))["state"])


@pytest.mark.usefixtures("no_leftover_apps")
def test_killed_service_reattaches_and_records_the_success(
    tmp_path: Path, cluster_env: YarnCluster, services: Services
) -> None:
    tasks = {"nap": (SLEEP, {"args": {"seconds": 25}, "every": "1h"})}
    scenario = "kill -9 while running, restart, re-attach"
    run, done = across_a_restart(tmp_path, cluster_env, services, scenario, tasks)
    assert (done.id, done.status) == (run.id, RunStatus.SUCCEEDED), log_text(done)
    assert "sleeping" in log_text(done)


@pytest.mark.usefixtures("no_leftover_apps")
def test_an_application_that_ends_while_the_service_is_down_keeps_its_status(
    tmp_path: Path, cluster_env: YarnCluster, services: Services
) -> None:
    tasks = {"nap": (SLEEP, {"args": {"seconds": 5}, "every": "1h"})}
    scenario = "app ended while the service was down"
    ended = lambda run: state(cluster_env, run) == "FINISHED"  # noqa: E731
    run, done = across_a_restart(tmp_path, cluster_env, services, scenario, tasks, ended)
    assert (done.id, done.status) == (run.id, RunStatus.SUCCEEDED), done.outcome
    assert "sleeping" in log_text(done)


@pytest.mark.usefixtures("no_leftover_apps")
def test_an_application_past_its_deadline_at_restart_is_killed_and_timed_out(
    tmp_path: Path, cluster_env: YarnCluster, services: Services
) -> None:
    tasks = {"slow": (SLEEP, {"timeout": "40s", "every": "1h"})}
    late = lambda run: run.deadline is not None and time.time() > run.deadline.timestamp()  # noqa: E731
    scenario = "past its deadline at restart"
    run, done = across_a_restart(tmp_path, cluster_env, services, scenario, tasks, late)
    assert (done.id, done.status) == (run.id, RunStatus.TIMED_OUT), done.outcome
    assert state(cluster_env, run) == "KILLED"


@pytest.mark.usefixtures("no_leftover_apps")
def test_a_lifetime_kill_while_the_service_is_down_is_a_timeout(
    tmp_path: Path, cluster_env: YarnCluster, services: Services
) -> None:
    tasks = {"slow": (SLEEP, {"timeout": "45s", "every": "1h"})}  # YARN says RUNNING after up to 30 s
    killed = lambda run: state(cluster_env, run) == "KILLED"  # noqa: E731
    scenario = "LIFETIME kill while the service was down"
    run, done = across_a_restart(
        tmp_path, cluster_env, services, scenario, tasks, killed, lifetime_grace="5s"
    )
    assert (done.id, done.status) == (run.id, RunStatus.TIMED_OUT), done.outcome
