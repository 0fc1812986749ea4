"""Finding a run's processes in a (fake) /proc tree, exit words, and stopping a run found again."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from executors.base import Deadline, RunRequest
from executors.environments import builder_environment
from executors.process import Launcher, ProcessExecution, describe_exit, find_run_processes, stop_run
from scheduler.status import RunStatus
from tests.helpers.executor_fixtures import alive, make_task, marked_processes, wait_for


def fake_process(proc: Path, pid: int, ppid: int, state: str = "S", environ: bytes | None = b"") -> None:
    folder = proc / str(pid)
    folder.mkdir(parents=True)
    (folder / "stat").write_text(f"{pid} (odd) name) {state} {ppid} {pid} {pid} 0 -1\n")
    if environ is not None:
        (folder / "environ").write_bytes(environ)


def test_marked_processes_and_their_descendants(tmp_path: Path) -> None:
    mine = b"PATH=/bin\0PEACH_RUN_ID=r1\0"
    fake_process(tmp_path, 10, 1, environ=mine)  # the run's child
    fake_process(tmp_path, 11, 1, environ=mine)  # setsid'd grandchild, orphaned to init
    fake_process(tmp_path, 12, 11, environ=b"HOME=/\0")  # exec'd with a scrubbed environment
    fake_process(tmp_path, 13, 10, state="Z", environ=mine)  # zombie: dead already
    fake_process(tmp_path, 14, 1, environ=b"PEACH_RUN_ID=r10\0")  # another run
    fake_process(tmp_path, 15, 1, environ=None)  # unreadable
    fake_process(tmp_path, 16, 20, environ=b"")  # a child of the unreaped root
    fake_process(tmp_path, 20, 1, environ=b"")
    (tmp_path / "self").mkdir()
    assert find_run_processes("r1", tmp_path) == {10, 11, 12}
    assert find_run_processes("r1", tmp_path, roots=[20]) == {10, 11, 12, 16}
    assert find_run_processes("r2", tmp_path) == set()
    assert find_run_processes("r1", tmp_path / "missing") == set()


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (0, "exit code 0"),
        (3, "exit code 3"),
        (-9, "killed by SIGKILL"),
        (-15, "killed by SIGTERM"),
        (-99, "killed by signal 99"),
    ],
)
def test_exit_in_words(code: int, words: str) -> None:
    assert describe_exit(code) == words


def test_stop_run_finds_processes_by_marker_alone() -> None:
    """After a restart the scheduler is nobody's parent: the marker is all it has."""
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('up', flush=True)\ntime.sleep(1000)"
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        env={"PEACH_RUN_ID": "orphan-run-1"},
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"up\n"
        assert stop_run("orphan-run-1", grace=0.3) == 1
        wait_for(lambda: child.poll() is not None, what="the orphan to die")
        assert child.returncode == -9 and not alive(child.pid)
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_builders_do_not_see_scheduler_secrets() -> None:
    env = builder_environment(
        {"PATH": "/bin", "UV_INDEX_URL": "https://idx", "PEACH_API_TOKEN": "s3cret", "HOME": "/h"}
    )
    assert env == {"PATH": "/bin", "UV_INDEX_URL": "https://idx", "HOME": "/h", "NO_COLOR": "1"}


def test_a_local_process_shows_its_output_and_times_out_on_the_shared_deadline(tmp_path: Path) -> None:
    """What spark on YARN builds on: every chunk of output seen (its application id), the deadline of the
    base class enforced, nothing left behind, the handle the pid."""
    seen: list[bytes] = []
    task = make_task(tmp_path / "repo", "def main():\n    pass\n")
    code = "import time\nprint('Submitted application application_1700000000000_0042', flush=True)\n"
    code += "time.sleep(1000)"
    run_id = f"hooks-{secrets.token_hex(4)}"
    launcher = Launcher(grace=0.5)
    request = RunRequest(run_id, task, timeout=1.5)
    process = launcher.process(
        request, [sys.executable, "-c", code], {"PATH": os.defpath}, tmp_path, tmp_path / "log"
    )
    process.on_output = seen.append
    execution = ProcessExecution(process)
    execution.start()
    assert execution.handle == f"pid:{execution.pid}"
    wait_for(lambda: b"application_1700000000000_0042" in b"".join(seen), what="the submission line")
    outcome = execution.wait()
    assert outcome is not None and outcome.status is RunStatus.TIMED_OUT
    assert outcome.summary == "killed by SIGTERM after timeout 1.5 s"
    assert outcome.handle == execution.handle
    assert marked_processes(run_id) == []


def test_deadline_after_a_timeout_or_at_a_wall_clock_time() -> None:
    now = [100.0]
    deadline = Deadline.after(5, lambda: now[0])
    assert (deadline.at, deadline.words, deadline.passed()) == (105.0, "timeout 5 s", False)
    assert deadline.earliest(103.0, None) == 103.0 and deadline.earliest(None) == 105.0
    now[0] = 105.0
    assert deadline.passed() and deadline.left() == 0
    again = Deadline.at_wall(1_000_050.0, lambda: now[0], wall=lambda: 1_000_000.0)
    assert (again.at, again.words) == (155.0, "deadline passed")
    endless = Deadline.after(None, lambda: now[0])
    assert not endless.passed() and endless.earliest(None) is None and endless.left() is None
