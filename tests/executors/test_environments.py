"""Task environments with real uv (and pip) against tiny local wheels, plus one real PyPI package."""

import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from executors.base import RunRequest
from executors.environments import EnvironmentStore, find_uv
from executors.python import PythonExecutor
from scheduler.errors import EnvironmentBuildError
from scheduler.status import RunStatus
from tests.helpers.executor_fixtures import make_task, make_wheel

REPO = Path(__file__).resolve().parents[2]
BASE_PYTHON = str(Path(sys.base_prefix) / "bin" / "python3")  # stands in for the cluster's interpreter


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    make_wheel(
        folder,
        "peachtiny",
        "1.0",
        "VALUE = 'tiny 1.0'\n\ndef hello():\n    print('hello from tiny')\n",
        script="peachtiny-hello = peachtiny:hello",
    )
    make_wheel(folder, "peachdep", "2.0", "from peachtiny import VALUE\n", requires=["peachtiny>=1.0"])
    return folder


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def local_store(root: Path, wheels: Path, **kw: object) -> EnvironmentStore:
    return EnvironmentStore(root, install_args=["--no-index", "--find-links", str(wheels)], **kw)  # type: ignore[arg-type]


def run_python(python: Path | str, code: str) -> str:
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_uv_is_found() -> None:
    uv = find_uv()
    assert uv is not None and Path(uv).is_file()


def test_build_once_then_cache_hit(tmp_path: Path, wheels: Path) -> None:
    store = local_store(tmp_path / "envs", wheels)
    with store.ensure(["peachdep==2.0"]) as env:
        assert store.builds == 1
        assert run_python(env.python, "import peachdep; print(peachdep.VALUE)") == "tiny 1.0"
        meta = json.loads((env.path / "peach-env.json").read_text())
        assert meta["requirements"] == ["peachdep==2.0"] and meta["builder"] == "uv"
    began = time.perf_counter()
    with store.ensure(["peachdep==2.0"]) as again:
        took = time.perf_counter() - began
    assert store.builds == 1 and again.path == env.path and took < 0.5
    other = local_store(tmp_path / "envs", wheels)  # a new process would see the same cache
    other.ensure(["peachdep==2.0"]).release()
    assert other.builds == 0
    assert list((tmp_path / "envs" / "building").iterdir()) == []


def test_key_is_order_and_duplicate_insensitive_and_interpreter_sensitive(tmp_path: Path) -> None:
    store = EnvironmentStore(tmp_path)
    assert store.key(["b==1", "a==2"]) == store.key(["a==2", "b==1", "a==2"])
    assert store.key(["a==2"]) != store.key(["a==3"])
    assert store.key([], sys.executable) == store.key([], sys.executable)
    assert store.key(["a==2"], BASE_PYTHON) != store.key(["a==2"], "/usr/bin/python3")


def test_empty_requirement_set_is_quick_and_usable(tmp_path: Path) -> None:
    store = EnvironmentStore(tmp_path)
    began = time.perf_counter()
    with store.ensure([]) as env:
        assert time.perf_counter() - began < 10
        assert run_python(env.python, "import sys; print(sys.prefix)") == str(env.path)


def test_concurrent_threads_build_once(tmp_path: Path, wheels: Path) -> None:
    store = local_store(tmp_path / "envs", wheels)
    paths: list[Path] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            with store.ensure(["peachtiny==1.0"]) as env:
                paths.append(env.path)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(paths) == 6 and len(set(paths)) == 1
    assert store.builds == 1


def test_concurrent_processes_build_once(tmp_path: Path, wheels: Path) -> None:
    script = (
        "import sys\nfrom pathlib import Path\nfrom executors.environments import EnvironmentStore\n"
        "args = ['--no-index', '--find-links', sys.argv[2]]\n"
        "store = EnvironmentStore(Path(sys.argv[1]), install_args=args)\n"
        "env = store.ensure(['peachtiny==1.0'])\nprint(store.builds, env.path)\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "envs"), str(wheels)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [process.communicate(timeout=90)[0].split() for process in processes]
    assert all(process.returncode == 0 for process in processes)
    assert sorted(int(builds) for builds, _ in results) == [0, 0, 1]
    assert len({path for _, path in results}) == 1


def test_broken_requirement_is_a_clear_error_with_backoff(tmp_path: Path, wheels: Path) -> None:
    clock = Clock()
    store = local_store(tmp_path / "envs", wheels, wall=clock, backoff=60)
    with pytest.raises(EnvironmentBuildError) as first:
        store.ensure(["peachtiny==1.0", "peachtiny-missing==9.9"])
    message = str(first.value)
    assert message.startswith("could not install 'peachtiny-missing==9.9': "), message
    assert "peachtiny-missing" in message.split(": ", 1)[1]  # the resolver's own words follow
    assert first.value.retry_at == clock.now + 60
    assert store.builds == 1 and not list((tmp_path / "envs" / "envs").glob("*"))
    assert store.backing_off(["peachtiny==1.0"]) is None  # another set never failed
    clock.now += 30  # within the backoff: no new attempt, the same error; the loop is told before a run
    waiting = store.backing_off(["peachtiny-missing==9.9", "peachtiny==1.0"])
    assert waiting and waiting.startswith("environment failing: could not install 'peachtiny-missing==9.9'")
    assert waiting.endswith("(failed 1 time(s)); next try at 2027-01-15 08:01:00 UTC"), waiting
    with pytest.raises(EnvironmentBuildError, match=r"failed 1 time\(s\); next try in 30 s"):
        store.ensure(["peachtiny-missing==9.9", "peachtiny==1.0"])
    assert store.builds == 1
    clock.now += 31  # backoff over: one more attempt, then twice as long
    assert store.backing_off(["peachtiny==1.0", "peachtiny-missing==9.9"]) is None
    with pytest.raises(EnvironmentBuildError) as second:
        store.ensure(["peachtiny==1.0", "peachtiny-missing==9.9"])
    assert store.builds == 2 and second.value.retry_at == clock.now + 120


def test_options_and_bad_syntax_never_reach_the_installer(tmp_path: Path) -> None:
    store = EnvironmentStore(tmp_path)
    for bad in ("--index-url=https://evil.example", "-e .", "not a requirement!"):
        with pytest.raises(EnvironmentBuildError, match="is not a valid requirement"):
            store.ensure([bad])
    assert store.builds == 0
    with pytest.raises(EnvironmentBuildError, match="is missing or does not run"):
        store.ensure([], python=str(tmp_path / "no-python"))


def test_failed_environment_fails_the_run_before_it_starts(tmp_path: Path, wheels: Path) -> None:
    store = local_store(tmp_path / "envs", wheels)
    executor = PythonExecutor(store, tmp_path / "runs")
    task = make_task(tmp_path / "repo", "def main():\n    pass\n", dependencies=["peachtiny==7.0"])
    with pytest.raises(EnvironmentBuildError, match=r"could not install 'peachtiny==7\.0'"):
        executor.prepare(RunRequest("run-broken", task))
    assert (
        "could not install 'peachtiny==7.0'" in (tmp_path / "runs" / "run-broken" / "output.log").read_text()
    )


def test_task_runs_with_its_dependencies(tmp_path: Path, wheels: Path) -> None:
    store = local_store(tmp_path / "envs", wheels)
    executor = PythonExecutor(store, tmp_path / "runs")
    code = "import peachtiny\nimport subprocess\n\ndef main():\n    print(peachtiny.VALUE)\n"
    code += "    subprocess.run(['peachtiny-hello'], check=True)\n"
    task = make_task(tmp_path / "repo", code, dependencies=["peachtiny==1.0"])
    execution = executor.prepare(RunRequest("run-deps", task, timeout=60))
    execution.start()
    outcome = execution.wait()
    assert outcome is not None and outcome.status is RunStatus.SUCCEEDED, execution.read_log()
    assert b"tiny 1.0" in execution.read_log() and b"hello from tiny" in execution.read_log()


def test_archive_unpacks_elsewhere_and_imports(tmp_path: Path, wheels: Path) -> None:
    store = local_store(tmp_path / "envs", wheels)
    with store.archive(["peachdep==2.0"], python=BASE_PYTHON) as packed:
        archive = packed.archive
        assert archive is not None and archive.name == f"{store.key(['peachdep==2.0'], BASE_PYTHON)}.tar.gz"
        assert store.evict(max_age=-1) == []  # leased while the run ships it
    with store.archive(["peachdep==2.0"], python=BASE_PYTHON) as again:
        assert again.archive == archive and store.builds == 1
    target = tmp_path / "node" / "container_1" / "environment"
    target.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="tar")
    python = target / "bin" / "python"
    assert Path(os.readlink(python)).resolve() == Path(BASE_PYTHON).resolve()  # the node's own interpreter
    assert run_python(python, "import peachdep, sys; print(peachdep.VALUE, sys.prefix)") == (
        f"tiny 1.0 {target}"
    )
    hello = subprocess.run(
        [str(target / "bin" / "peachtiny-hello")], capture_output=True, text=True, check=False
    )
    assert hello.stdout.strip() == "hello from tiny", hello.stderr


def test_eviction_by_age_and_size_spares_leased(tmp_path: Path, wheels: Path) -> None:
    clock = Clock()
    store = local_store(tmp_path / "envs", wheels, wall=clock)
    store.ensure([]).release()
    old = store.ensure(["peachtiny==1.0"])
    old.release()
    leased = store.ensure(["peachdep==2.0"])
    clock.now += 3600  # everything is an hour old
    assert set(store.evict(max_age=60)) == {old.key, store.key([])}
    assert not old.path.exists() and leased.path.exists()
    leased.release()
    assert store.evict(max_bytes=0) == [leased.key] and not leased.path.exists()
    store.ensure(["peachtiny==1.0"]).release()  # evicted environments are simply built again
    assert store.builds == 4


@pytest.mark.slow
def test_pip_fallback_without_uv(tmp_path: Path, wheels: Path) -> None:
    store = local_store(tmp_path / "envs", wheels, uv=None)
    with store.ensure(["peachtiny==1.0"]) as env:
        assert json.loads((env.path / "peach-env.json").read_text())["builder"] == "pip"
        assert run_python(env.python, "import peachtiny; print(peachtiny.VALUE)") == "tiny 1.0"
        hello = subprocess.run([str(env.path / "bin" / "peachtiny-hello")], capture_output=True, text=True)
        assert hello.stdout.strip() == "hello from tiny", hello.stderr  # scripts point at the final path


@pytest.mark.slow
def test_real_pypi_package(tmp_path: Path) -> None:
    store = EnvironmentStore(tmp_path)
    with store.ensure(["six==1.16.0"]) as env:
        assert run_python(env.python, "import six; print(six.__version__)") == "1.16.0"
