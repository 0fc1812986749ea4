"""The spark executor with real spark-submit: local[2] and a standalone master and worker on loopback.

Every test starts a JVM (5-30 s here), so there are few of them and each checks a lot.
"""

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from executors.base import RunRequest
from executors.environments import EnvironmentStore
from executors.logs import LogLimits
from executors.process import ProcessExecution
from executors.spark import SparkExecutor, spark_home
from scheduler.config import OrganisationSettings, Resources, SecretRef, SparkSettings
from scheduler.status import RunStatus
from tests.helpers.executor_fixtures import finish, marked_processes, no_survivors, wait_for
from tests.helpers.spark_fixtures import TEST_CONF, make_spark_task

SMALL = OrganisationSettings(
    queue="default", resources=Resources(executor_memory="512m", driver_memory="512m")
)
WORDS = """\
def main(spark, artifacts, text="to be or not to be"):
    rdd = spark.sparkContext.parallelize(text.split(), 2)
    print("COUNTS", sorted(rdd.countByValue().items()))
    (artifacts / "counts.txt").write_text(str(sorted(rdd.countByValue().items())))
"""
COUNTS = "[('be', 2), ('not', 1), ('or', 1), ('to', 2)]"


def counts_artifact(execution: ProcessExecution) -> str:
    """What the driver wrote to the run's artifacts directory (the driver runs on this host)."""
    assert execution.artifacts_dir is not None and execution.process.env["PEACH_ARTIFACTS_DIR"] == str(
        execution.artifacts_dir
    )
    return (execution.artifacts_dir / "counts.txt").read_text()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> EnvironmentStore:
    return EnvironmentStore(tmp_path_factory.mktemp("environments"))


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[list[str]]:
    """Runs started by a test; after it, no process of theirs (JVM or Python) may be alive."""
    yield from no_survivors()


class Clock:
    """A monotonic clock a test can move forward (to reach a deadline without waiting for it)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def executor(
    store: EnvironmentStore,
    tmp_path: Path,
    master: str,
    clock: Clock | None = None,
    organisation: OrganisationSettings = SMALL,
) -> SparkExecutor:
    settings = SparkSettings(master=master, conf=TEST_CONF)
    return SparkExecutor(
        store,
        tmp_path / "runs",
        settings,
        {"default": organisation},
        grace=2.0,
        limits=LogLimits.capped(4 * 1024 * 1024, 0.1),
        clock=clock or time.monotonic,
    )


def start(
    spark: SparkExecutor, root: Path, code: str, runs: list[str], timeout: float = 180
) -> ProcessExecution:
    task = make_spark_task(root, code)
    request = RunRequest(f"spark-{secrets.token_hex(6)}", task, timeout=timeout)
    runs.append(request.run_id)
    execution = spark.prepare(request)
    assert isinstance(execution, ProcessExecution)  # a local driver: one local process, no remote side
    execution.start()
    return execution


JVM_RUN = 180.0  # seconds a run may take here: a JVM starts for it


SECRET_VALUE = "local-driver-secret-4242"
WORDS_AND_SECRET = (
    WORDS
    + """\
    import os
    print("secret:", os.environ["API_KEY"], "setting:", os.environ["MODEL_BUCKET"])
    conf = repr(spark.sparkContext.getConf().getAll())
    print("secret in the Spark conf:", os.environ["API_KEY"] in conf)
"""
)


def test_local_notebook_task_gets_a_spark_session_and_succeeds(
    store: EnvironmentStore, tmp_path: Path, no_leftovers: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEACH_TEST_API_KEY", SECRET_VALUE)
    organisation = SMALL.model_copy(
        update={
            "env": {"MODEL_BUCKET": "s3://b"},
            "secrets": {"API_KEY": SecretRef(env="PEACH_TEST_API_KEY")},
        }
    )
    spark = executor(store, tmp_path, "local[2]", organisation=organisation)
    execution = start(spark, tmp_path / "repo", WORDS_AND_SECRET, no_leftovers)
    assert execution.process.env["API_KEY"] == SECRET_VALUE  # the driver's own environment, this run's only
    assert SECRET_VALUE not in json.dumps(execution.process.command)
    assert execution.process.command[0] == str(spark_home() / "bin" / "spark-submit")  # type: ignore[operator]
    assert execution.process.command[1:3] == ["--master", "local[2]"]
    driver_python = execution.process.env["PYSPARK_DRIVER_PYTHON"]
    assert driver_python.startswith(str(store.root))  # the task's interpreter
    manifest = execution.manifest()  # what the run's manifest records, read back from the command line
    assert manifest.spark is not None and manifest.spark["master"] == "local[2]"
    assert str(manifest.python) == driver_python and manifest.runner == Path(execution.process.command[-1])
    outcome = finish(execution, JVM_RUN)
    text = execution.read_log().decode()
    assert outcome.status is RunStatus.SUCCEEDED, text[-3000:]
    assert "COUNTS [('be', 2), ('not', 1), ('or', 1), ('to', 2)]" in text
    assert "secret: *** setting: s3://b" in text and SECRET_VALUE not in text
    assert "secret in the Spark conf: False" in text
    assert "exploration cell" not in text
    assert counts_artifact(execution) == COUNTS


def test_local_task_failure_in_a_python_worker_fails_the_run(
    store: EnvironmentStore, tmp_path: Path, no_leftovers: list[str]
) -> None:
    code = "def main(spark):\n    spark.sparkContext.parallelize([1, 2], 2).map(lambda x: x // 0).collect()\n"
    execution = start(executor(store, tmp_path, "local[2]"), tmp_path / "repo", code, no_leftovers)
    outcome = finish(execution, JVM_RUN)
    assert outcome.status is RunStatus.FAILED
    assert outcome.exit_code == 1
    assert "ZeroDivisionError" in execution.read_log().decode()


def test_local_timeout_kills_the_jvm_and_the_python_driver(
    store: EnvironmentStore, tmp_path: Path, no_leftovers: list[str]
) -> None:
    clock = Clock()
    code = "import time\n\ndef main(spark):\n    print('READY', flush=True)\n    time.sleep(600)\n"
    execution = start(executor(store, tmp_path, "local[2]", clock), tmp_path / "repo", code, no_leftovers, 60)
    wait_for(lambda: b"READY" in execution.read_log(), 120, "the task to hold a SparkSession")
    names = {Path(f"/proc/{pid}/exe").resolve().name for pid in marked_processes(execution.run_id)}
    assert {"java"} <= names and any(name.startswith("python") for name in names), names
    assert execution.wait(until=clock() + 0.1) is None
    clock.offset += 3600  # past the run's deadline
    outcome = finish(execution, 60)
    assert outcome.status is RunStatus.TIMED_OUT
    assert "timeout 60 s" in outcome.summary
    assert marked_processes(execution.run_id) == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Spark standalone master and one worker on loopback, in their own process group, stopped after:
    ``spark://127.0.0.1:<port>|<web UI port>``."""
    home = spark_home()
    assert home is not None
    logs = tmp_path_factory.mktemp("standalone")
    port, ui = _free_port(), _free_port()
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOG_DIR": str(logs), "SPARK_WORKER_DIR": str(logs)}
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    master = ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port)]
    master += ["--webui-port", str(ui)]
    worker = ["org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}", "--host", "127.0.0.1"]
    worker += ["--webui-port", str(_free_port()), "--cores", "2", "--memory", "1g"]
    started = []
    try:
        for args in (master, worker):
            with (logs / f"{args[0].rsplit('.', 1)[-1]}.out").open("wb") as out:
                started.append(
                    subprocess.Popen(
                        [str(home / "bin" / "spark-class"), *args],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

        def worker_alive() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as response:
                    workers = json.load(response).get("workers", [])
            except OSError:
                return False
            return any(w.get("state") == "ALIVE" for w in workers)

        wait_for(worker_alive, 90, "the standalone worker to register")
        yield f"spark://127.0.0.1:{port}|{ui}"
    finally:
        for proc in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_standalone_master_runs_the_task_in_client_mode(
    store: EnvironmentStore, tmp_path: Path, standalone: str, no_leftovers: list[str]
) -> None:
    standalone, ui = standalone.split("|")
    spark = executor(store, tmp_path, standalone)
    execution = start(spark, tmp_path / "repo", WORDS, no_leftovers)
    assert execution.process.command[1:5] == ["--master", standalone, "--deploy-mode", "client"]
    outcome = finish(execution, JVM_RUN)
    text = execution.read_log().decode()
    assert outcome.status is RunStatus.SUCCEEDED, text[-3000:]
    assert "COUNTS [('be', 2), ('not', 1), ('or', 1), ('to', 2)]" in text
    assert counts_artifact(execution) == COUNTS
    with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as response:
        completed = json.load(response)["completedapps"]
    assert [app["name"] for app in completed] == ["peach-default-job"]  # it really ran on the master
