"""The python executor with real child processes: outcomes, timeouts, descendants, logs, isolation."""

import contextlib
import json
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from executors.base import Outcome, RunningRun, RunRequest
from executors.environments import EnvironmentStore
from executors.logs import LogLimits
from executors.process import ProcessExecution, find_run_processes
from executors.python import PythonExecutor
from scheduler.errors import ExecutionError
from scheduler.spec.taskspec import ExecutorKind
from scheduler.status import RunStatus
from tests.helpers.executor_fixtures import alive, finish, make_task, marked_processes, no_survivors, wait_for

STAMP = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", re.M)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> EnvironmentStore:
    return EnvironmentStore(tmp_path_factory.mktemp("environments"))


@pytest.fixture
def executor(store: EnvironmentStore, tmp_path: Path) -> PythonExecutor:
    return PythonExecutor(store, tmp_path / "runs", grace=1.0, limits=LogLimits.capped(1024 * 1024, 0.1))


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[list[str]]:
    """Runs started by a test; after it, none of their processes may be alive (and none is left running)."""
    yield from no_survivors()


def run_id() -> str:
    return f"test-{secrets.token_hex(6)}"


def start(
    executor: PythonExecutor,
    tmp_path: Path,
    code: str,
    runs: list[str],
    timeout: float | None = 60,
    **kw: object,
) -> ProcessExecution:
    task = make_task(tmp_path / f"repo-{len(runs)}", code, **kw)  # type: ignore[arg-type]
    request = RunRequest(run_id(), task, timeout=timeout, version="abc1234")
    runs.append(request.run_id)
    execution = executor.prepare(request)
    execution.start()
    return execution


def test_success_logs_timestamped_output(
    executor: PythonExecutor, tmp_path: Path, no_leftovers: list[str]
) -> None:
    code = "def main(who):\n    print(f'hello, {who}')\n"
    execution = start(executor, tmp_path, code, no_leftovers, args={"who": "peach"})
    outcome = finish(execution)
    assert (outcome.status, outcome.summary, outcome.exit_code) == (RunStatus.SUCCEEDED, "exit code 0", 0)
    assert outcome.error is None and outcome.duration is not None and outcome.duration > 0
    log = execution.read_log()
    assert re.search(STAMP.pattern + rb"hello, peach$", log, re.M), log
    assert all(STAMP.match(line) for line in log.splitlines()), log
    assert b"[peach] run ended: SUCCEEDED: exit code 0" in log
    assert outcome.log_bytes == len(log) and outcome.log_dropped == 0


def test_nonzero_exit_is_failed_in_words(
    executor: PythonExecutor, tmp_path: Path, no_leftovers: list[str]
) -> None:
    code = "import sys\n\ndef main():\n    print('giving up', file=sys.stderr)\n    sys.exit(3)\n"
    outcome = finish(start(executor, tmp_path, code, no_leftovers))
    assert (outcome.status, outcome.summary, outcome.exit_code) == (RunStatus.FAILED, "exit code 3", 3)
    assert outcome.error == "giving up"


def test_exception_traceback_in_log(
    executor: PythonExecutor, tmp_path: Path, no_leftovers: list[str]
) -> None:
    code = "def helper():\n    return 1 / 0\n\n\ndef main():\n    helper()\n"
    execution = start(executor, tmp_path, code, no_leftovers)
    outcome = finish(execution)
    assert (outcome.status, outcome.summary) == (RunStatus.FAILED, "exit code 1")
    assert outcome.error == "ZeroDivisionError: division by zero"
    log = execution.read_log().decode()
    assert "Traceback (most recent call last):" in log
    assert 'File "tasks.py", line 2, in helper' in log and "return 1 / 0" in log


DESCENDANTS = '''
import subprocess, sys, time

CHILD = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    with open(sys.argv[1], "a") as out:
        out.write(f"{os.getpid()} {os.getsid(0)}\\\\n")
    time.sleep(1000)
time.sleep(1000)
"""


def main(pidfile):
    subprocess.Popen(["sh", "-c", "sleep 1000 & sleep 1000"])
    subprocess.Popen([sys.executable, "-c", CHILD, pidfile])
    end = time.time() + 30
    while time.time() < end and not open(pidfile).read().endswith("\\n"):
        time.sleep(0.01)
    print("ready", flush=True)
    time.sleep(1000)
'''


def test_timeout_kills_every_descendant_even_after_setsid(
    executor: PythonExecutor, tmp_path: Path, no_leftovers: list[str]
) -> None:
    pidfile = tmp_path / "pids"
    pidfile.touch()
    execution = start(
        executor, tmp_path, DESCENDANTS, no_leftovers, timeout=6, args={"pidfile": str(pidfile)}
    )
    wait_for(lambda: b"ready" in execution.read_log(), what="the task to spawn its descendants")
    escaped, session = map(int, pidfile.read_text().split())
    assert session == escaped != execution.pid  # the grandchild left the run's session

    def sleeps() -> int:
        names = []
        for pid in find_run_processes(execution.run_id):
            with contextlib.suppress(OSError):
                names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        return names.count("sleep")

    wait_for(lambda: sleeps() == 2, what="both shell sleeps to run")
    running = find_run_processes(execution.run_id)
    assert escaped in running and execution.pid in running, running
    outcome = finish(execution)
    assert outcome.status is RunStatus.TIMED_OUT
    assert outcome.summary == "killed by SIGTERM after timeout 6 s"
    assert not alive(escaped)
    assert not any(alive(pid) for pid in running)
    assert marked_processes(execution.run_id) == []
    assert b"timeout 6 s: stopping the run" in execution.read_log()


def test_sigterm_ignoring_task_gets_sigkill(
    executor: PythonExecutor, tmp_path: Path, no_leftovers: list[str]
) -> None:
    code = (
        "import signal, time\n\ndef main():\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "    print('stubborn', flush=True)\n    time.sleep(1000)\n"
    )
    execution = start(executor, tmp_path, code, no_leftovers, timeout=2)
    began = time.monotonic()
    outcome = finish(execution)
    assert (outcome.status, outcome.signal) == (RunStatus.TIMED_OUT, 9)
    assert outcome.summary == "killed by SIGKILL after timeout 2 s"
    assert time.monotonic() - began < 2 + 1.0 + 5  # timeout + grace + slack
    assert not alive(execution.pid or 0)


def test_kill_on_request(executor: PythonExecutor, tmp_path: Path, no_leftovers: list[str]) -> None:
    code = "import time\n\ndef main():\n    print('working', flush=True)\n    time.sleep(1000)\n"
    execution = start(executor, tmp_path, code, no_leftovers)
    assert execution.wait(until=time.monotonic() + 0.3) is None  # still running: wait gives up at `until`
    outcome = execution.kill("operator request")
    assert (outcome.status, outcome.summary) == (RunStatus.KILLED, "killed by SIGTERM: operator request")
    assert execution.wait() is outcome and execution.kill("again") is outcome


def test_kill_from_another_thread_while_waiting(
    executor: PythonExecutor, tmp_path: Path, no_leftovers: list[str]
) -> None:
    code = "import time\n\ndef main():\n    print('working', flush=True)\n    time.sleep(1000)\n"
    execution = start(executor, tmp_path, code, no_leftovers)
    waited: list[Outcome | None] = []
    waiter = threading.Thread(target=lambda: waited.append(execution.wait()))
    waiter.start()
    wait_for(lambda: b"working" in execution.read_log(), what="the task to start")
    outcome = execution.kill("scheduler shutdown")
    waiter.join(30)
    assert waited == [outcome] and outcome.status is RunStatus.KILLED
    assert outcome.log_bytes == execution.log_path.stat().st_size


def test_leftover_background_processes_are_stopped_when_task_exits(
    executor: PythonExecutor, tmp_path: Path, no_leftovers: list[str]
) -> None:
    code = "import subprocess\n\ndef main():\n    subprocess.Popen(['sleep', '1000'])\n    print('bye')\n"
    execution = start(executor, tmp_path, code, no_leftovers)
    outcome = finish(execution)
    assert outcome.status is RunStatus.SUCCEEDED
    assert b"left processes behind" in execution.read_log()
    assert marked_processes(execution.run_id) == []


def test_log_is_readable_while_running_and_capped(
    store: EnvironmentStore, tmp_path: Path, no_leftovers: list[str]
) -> None:
    executor = PythonExecutor(store, tmp_path / "runs", grace=1.0, limits=LogLimits(8192, 8192, 0.1))
    code = (
        "import time\n\ndef main():\n    print('first line', flush=True)\n"
        "    for i in range(3000):\n        print(f'line {i:05d} ' + 'x' * 80)\n"
        "    print('LAST', flush=True)\n    time.sleep(1000)\n"
    )
    execution = start(executor, tmp_path, code, no_leftovers)
    wait_for(lambda: b"LAST" in execution.read_log(), what="the tail to reach the file")
    assert execution.wait(until=time.monotonic()) is None  # still running
    log = execution.read_log()
    assert b"first line" in log and b"line 00000" in log and b"line 02999" in log
    assert b"line 01500" not in log
    dropped = int(re.search(rb"\.\.\. (\d+) bytes dropped", log).group(1))  # type: ignore[union-attr]
    assert dropped > 3000 * 90 - 2 * 8192
    assert len(log) < 2 * 8192 + 200
    execution.kill("done looking")


@pytest.mark.slow
def test_one_gigabyte_of_output_is_capped_with_flat_memory(
    store: EnvironmentStore, tmp_path: Path, no_leftovers: list[str]
) -> None:
    cap = 4 * 1024 * 1024
    executor = PythonExecutor(store, tmp_path / "runs", grace=1.0, limits=LogLimits.capped(cap, 0.5))
    code = (
        "import sys\n\ndef main():\n"
        "    block = b''.join(b'%07d ' % i + b'y' * 1015 + b'\\n' for i in range(1024))\n"
        "    for _ in range(1024):\n        sys.stdout.buffer.write(block)\n    print('THE END')\n"
    )

    def rss() -> int:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]

    baseline, peak = rss(), 0
    execution = start(executor, tmp_path, code, no_leftovers, timeout=110)
    while (outcome := execution.wait(until=time.monotonic() + 0.05)) is None:
        peak = max(peak, rss())
    assert outcome.status is RunStatus.SUCCEEDED, outcome
    size = execution.log_path.stat().st_size
    assert size <= cap + 1024 and outcome.log_bytes == size
    assert outcome.log_dropped > 1024**3 - cap
    with execution.log_path.open("rb") as log:
        head = log.read(4096)
        log.seek(-4096, 2)
        tail = log.read()
    assert b"0000000 yyy" in head and b"THE END" in tail
    assert peak - baseline < 64 * 1024 * 1024, f"memory grew by {(peak - baseline) >> 20} MiB"


def test_environment_is_sanitized(
    executor: PythonExecutor, tmp_path: Path, no_leftovers: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEACH_API_TOKEN", "hunter2-token")
    monkeypatch.setenv("DATABASE_URL", "postgresql://peach:hunter2@db/peach")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    code = (
        "import json, os\n\ndef main():\n    print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()}))"
    )
    execution = start(executor, tmp_path, code, no_leftovers)
    assert finish(execution).status is RunStatus.SUCCEEDED
    log = execution.read_log()
    assert b"hunter2" not in log
    line = next(line for line in log.splitlines() if b'{"env"' in line)
    seen = json.loads(line.split(b" ", 1)[1])
    env, workdir = seen["env"], str(executor.run_dir(execution.run_id) / "work")
    assert "PEACH_API_TOKEN" not in env and "DATABASE_URL" not in env
    assert env["PEACH_RUN_ID"] == execution.run_id and env["PEACH_TASK"] == "job"
    assert env["PEACH_VERSION"] == "abc1234" and env["LC_ALL"] == "C.UTF-8"
    assert env["HOME"] == seen["cwd"] == workdir and env["TMPDIR"] == workdir + "/tmp"
    assert (
        env["PEACH_ARTIFACTS_DIR"] == str(execution.artifacts_dir) == workdir.replace("/work", "/artifacts")
    )
    allowed = {"PATH", "LC_ALL", "LANG", "LANGUAGE", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR", "VIRTUAL_ENV"}
    allowed |= {
        "HOME",
        "TMPDIR",
        "PYTHONUNBUFFERED",
        "PEACH_RUN_ID",
        "PEACH_CODOPS",
        "PEACH_TASK",
        "PEACH_VERSION",
        "PEACH_ARTIFACTS_DIR",
    }
    assert set(env) - allowed <= {"LC_CTYPE"}, set(env) - allowed  # LC_CTYPE: CPython's locale coercion


def test_runs_get_isolated_fresh_working_directories(
    executor: PythonExecutor, tmp_path: Path, no_leftovers: list[str]
) -> None:
    code = (
        "import os\n\ndef main():\n    print('before:', sorted(os.listdir('.')))\n"
        "    open('scratch.txt', 'w').write(os.environ['PEACH_RUN_ID'])\n    print('cwd:', os.getcwd())\n"
    )
    first, second = (start(executor, tmp_path, code, no_leftovers) for _ in range(2))
    for execution in (first, second):
        assert finish(execution).status is RunStatus.SUCCEEDED
        assert b"before: ['tmp']" in execution.read_log()
    cwd = [re.search(rb"cwd: (\S+)", e.read_log()).group(1) for e in (first, second)]  # type: ignore[union-attr]
    assert cwd[0] != cwd[1]
    assert not (executor.run_dir(first.run_id) / "work").exists()  # removed after the run; the log stays
    assert first.log_path.exists()
    with pytest.raises(ExecutionError, match="already exists"):
        executor.prepare(first.request)
    with pytest.raises(ExecutionError, match="not usable as a directory name"):
        executor.prepare(RunRequest("../escape", first.request.task))


def test_start_failure_leaves_nothing_behind(store: EnvironmentStore, tmp_path: Path) -> None:
    def broken_popen(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        raise FileNotFoundError(2, "No such file or directory", "python")

    executor = PythonExecutor(store, tmp_path / "runs", popen=broken_popen)
    task = make_task(tmp_path / "repo", "def main():\n    pass\n")
    execution = executor.prepare(RunRequest(run_id(), task))
    with pytest.raises(ExecutionError, match="could not start"):
        execution.start()
    assert b"could not start" in execution.read_log()
    assert store.evict(max_age=-1) != []  # the environment lease was released, so it can be evicted


def test_runner_script_uses_environment_interpreter(
    executor: PythonExecutor, tmp_path: Path, no_leftovers: list[str]
) -> None:
    code = "import sys\n\ndef main():\n    print('prefix:', sys.prefix)\n"
    execution = start(executor, tmp_path, code, no_leftovers)
    assert finish(execution).status is RunStatus.SUCCEEDED
    prefix = re.search(rb"prefix: (\S+)", execution.read_log()).group(1).decode()  # type: ignore[union-attr]
    assert prefix.startswith(str(executor.environments.root)) and prefix != sys.prefix


def test_recover_kills_a_survivor_found_by_its_marker_and_closes_its_run_lost(
    executor: PythonExecutor, no_leftovers: list[str]
) -> None:
    """After a restart the scheduler is nobody's parent: a survivor carrying the run's marker is killed
    (it even ignores SIGTERM), a run whose process is gone is closed too; both LOST."""
    survivor_run, gone_run = run_id(), run_id()
    no_leftovers.extend([survivor_run, gone_run])
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\n"
    survivor = subprocess.Popen(
        [sys.executable, "-c", code + "time.sleep(1000)"],
        env={"PEACH_RUN_ID": survivor_run},
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert survivor.stdout is not None and survivor.stdout.readline() == b"up\n"
        recovery = executor.recover(
            [
                RunningRun(survivor_run, "default", "job", ExecutorKind.PYTHON, handle=f"pid:{survivor.pid}"),
                RunningRun(gone_run, "default", "other", ExecutorKind.PYTHON, deadline=time.time() + 60),
            ]
        )
        wait_for(lambda: survivor.poll() is not None, what="the survivor to die")
        assert survivor.returncode == -9 and not alive(survivor.pid)
    finally:
        survivor.kill()
        survivor.wait()
        if survivor.stdout is not None:
            survivor.stdout.close()
    assert recovery.reattached == {}
    assert {run: (outcome.status, outcome.summary) for run, outcome in recovery.closed.items()} == {
        survivor_run: (
            RunStatus.LOST,
            "the scheduler restarted while this run was going; its output could no longer be captured, "
            f"so its processes ({survivor.pid}) were killed",
        ),
        gone_run: (
            RunStatus.LOST,
            "the scheduler stopped while this run was going; its process was gone at restart",
        ),
    }


def test_manifest_names_the_runner_and_the_interpreter_of_the_run(
    executor: PythonExecutor, store: EnvironmentStore, tmp_path: Path, no_leftovers: list[str]
) -> None:
    execution = start(executor, tmp_path, "def main():\n    pass\n", no_leftovers)
    finish(execution)
    manifest = execution.manifest()
    assert manifest.runner == executor.run_dir(execution.run_id) / "runner.py"
    assert manifest.runner == Path(execution.process.command[-1])  # the file the command line runs
    assert manifest.python is not None and str(manifest.python) == execution.process.command[0]
    assert manifest.python.is_relative_to(store.root) and manifest.spark is None
