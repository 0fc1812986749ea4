"""Progress reporting: the PEACH_PROGRESS line, the peach_progress helper inside a task's own environment,
invalid lines, and the throttled writes of the latest progress to the state store."""

import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from executors.base import RunRequest
from executors.environments import EnvironmentStore
from executors.logs import LogLimits
from executors.peach_progress import line, report
from executors.progress import MAX_LINE, Progress, ProgressScanner
from executors.python import PythonExecutor
from executors.runner import progress_helper
from scheduler.runs.supervise import ProgressRecorder
from scheduler.status import RunStatus
from scheduler.store.store import Store, build_engine
from tests.helpers.executor_fixtures import finish, make_task, no_survivors, wait_for


class Scan:
    """A scanner with its reports and warnings collected."""

    def __init__(self) -> None:
        self.reports: list[Progress] = []
        self.warnings: list[str] = []
        self.scanner = ProgressScanner(self.reports.append, self.warnings.append, lambda: 1000.0)

    def feed(self, *chunks: bytes) -> list[tuple[float, str | None]]:
        for chunk in chunks:
            self.scanner.feed(chunk)
        return [(p.fraction, p.message) for p in self.reports]


def test_progress_lines_are_found_in_any_chunking() -> None:
    scan = Scan()
    assert scan.feed(b"hello\nPEACH_PROG", b"RESS 0.25 a quarter\nmore output\n") == [(0.25, "a quarter")]
    assert scan.feed(b"  PEACH_PROGRESS 1\r\n") == [(0.25, "a quarter"), (1.0, None)]
    assert scan.reports[0].at == 1000.0
    scan.feed(b"PEACH_PROGRESS 0.5 no newline yet")
    assert len(scan.reports) == 2
    scan.scanner.close()
    assert scan.reports[-1].message == "no newline yet"


def test_only_the_latest_of_a_chunk_is_reported_and_messages_are_cleaned() -> None:
    scan = Scan()
    flood = b"".join(b"PEACH_PROGRESS %.4f step %d\n" % (i / 10000, i) for i in range(10001))
    assert scan.feed(flood) == [(1.0, "step 10000")]
    assert scan.feed(b"PEACH_PROGRESS 0.3 tab\there \x1b[31mred\x1b[0m " + b"x" * 500 + b"\n")[-1] == (
        0.3,
        "tab here [31mred [0m " + "x" * (200 - len("tab here [31mred [0m ")),
    )


def test_invalid_lines_are_ignored_with_one_warning() -> None:
    scan = Scan()
    bad = [b"PEACH_PROGRESS abc", b"PEACH_PROGRESS nan", b"PEACH_PROGRESS inf", b"PEACH_PROGRESS 1.5"]
    bad += [b"PEACH_PROGRESS -0.1", b"PEACH_PROGRESS", b"PEACH_PROGRESS 42%", b"PEACH_PROGRESS \xff\xfe"]
    assert scan.feed(b"\n".join(bad) + b"\n") == []
    assert len(scan.warnings) == 1 and "'PEACH_PROGRESS abc'" in scan.warnings[0]
    assert scan.feed(b"PEACH_PROGRESSIVE 0.5\nsay PEACH_PROGRESS 0.5\nPEACH_PROGRESS 0.75 ok\n") == [
        (0.75, "ok")
    ]
    assert len(scan.warnings) == 1  # not a progress line at all: nothing to warn about


def test_a_huge_line_without_newline_keeps_memory_bounded() -> None:
    scan = Scan()
    for _ in range(100):
        scan.feed(b"y" * 100_000)
    assert len(scan.scanner._partial) <= MAX_LINE
    assert scan.feed(b"\nPEACH_PROGRESS 0.5\n") == [(0.5, None)]


def test_helper_prints_the_line_and_never_raises(capsys: pytest.CaptureFixture[str]) -> None:
    assert line(0.42, "epoch 3\nof 7") == "PEACH_PROGRESS 0.42 epoch 3 of 7"
    assert line(2) == "PEACH_PROGRESS 1" and line(-1) == "PEACH_PROGRESS 0"
    assert line(float("nan")) is None and line("x") is None  # type: ignore[arg-type]
    report(0.5, "half")
    with pytest.warns(UserWarning, match="not a fraction"):
        report(float("nan"))
    assert capsys.readouterr().out == "PEACH_PROGRESS 0.5 half\n"


# -- the python executor: a real child in the task's own environment ----------------------------------------

PROGRESSING = """\
import importlib.util
import os
import statistics
import sys

import peach_progress


def main(gate):
    print("scheduler importable:", importlib.util.find_spec("scheduler") is not None, flush=True)
    print("interpreter:", sys.executable, flush=True)
    peach_progress.report(0.25, "a quarter")
    with open(gate) as fifo:  # blocks until the test opens the pipe
        fifo.read()
    print("PEACH_PROGRESS abc", flush=True)
    print("PEACH_PROGRESS 1.5 too far", flush=True)
    print("PEACH_PROGRESS nan", flush=True)
    print("PEACH_PROGRESS 0.75 three quarters", flush=True)
    sys.stdout.write("PEACH_PROGRESS 0.9 the last line, without a newline")
"""


@pytest.fixture(scope="module")
def environments(tmp_path_factory: pytest.TempPathFactory) -> EnvironmentStore:
    return EnvironmentStore(tmp_path_factory.mktemp("environments"))


@pytest.fixture
def runs() -> Iterator[list[str]]:
    yield from no_survivors()


def test_a_task_reports_progress_from_its_own_environment(
    environments: EnvironmentStore, tmp_path: Path, runs: list[str]
) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    task = make_task(tmp_path / "repo", PROGRESSING, args={"gate": str(gate)})
    executor = PythonExecutor(
        environments, tmp_path / "runs", grace=1.0, limits=LogLimits.capped(1 << 20, 0.05)
    )
    request = RunRequest(f"test-{secrets.token_hex(6)}", task, timeout=60)
    runs.append(request.run_id)
    execution = executor.prepare(request)
    execution.start()

    wait_for(lambda: execution.progress is not None, 60, "the first progress line")
    assert execution.progress is not None and execution.outcome is None
    assert (execution.progress.fraction, execution.progress.message) == (0.25, "a quarter")
    assert abs(execution.progress.at - time.time()) < 60

    with open(gate, "w") as fifo:
        fifo.write("go")
    outcome = finish(execution)
    assert outcome.status is RunStatus.SUCCEEDED, execution.read_log().decode()
    assert execution.progress is not None
    assert (execution.progress.fraction, execution.progress.message) == (
        0.9,
        "the last line, without a newline",
    )
    log = execution.read_log().decode()
    assert "scheduler importable: False" in log  # the task's own venv, without the scheduler's packages
    assert f"interpreter: {sys.executable}" not in log
    assert log.count("ignored an invalid progress line") == 1
    assert "'PEACH_PROGRESS abc'" in log


# -- throttled writes to the store -------------------------------------------------------------------------


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_writes_are_throttled_and_keep_the_latest(tmp_path: Path) -> None:
    store = Store(build_engine(f"sqlite:///{tmp_path / 'state.db'}"))
    run = store.start_run("alpha", "job", loop="alpha", executor="python", version=None)
    writes: list[float] = []
    real = store.record_progress

    def counted(run_id: str, fraction: float, message: str | None, at: datetime | None = None) -> bool:
        writes.append(fraction)
        return real(run_id, fraction, message, at)

    store.record_progress = counted  # type: ignore[method-assign]
    ticks = Ticks()
    recorder = ProgressRecorder(store, run.id, interval=1.0, clock=ticks)
    for step in range(1, 1001):  # 1000 reports over 10 s, offered as a supervisor sees them
        ticks.now = step / 100
        recorder.offer(Progress(step / 1000, f"step {step}", 1_700_000_000 + step / 100))
    assert 9 <= len(writes) <= 11  # about one per second, never more
    recorder.offer(Progress(0.999, "last", 1_700_000_010.0), final=True)  # the run ended: written at once
    recorder.offer(None)
    stored = store.get_run(run.id)
    assert (stored.progress, stored.progress_message) == (0.999, "last")
    assert stored.progress_at == datetime.fromtimestamp(1_700_000_010.0, UTC)
    assert recorder.writes == len(writes) <= 12

    store.finish_run(run.id, RunStatus.SUCCEEDED, "exit code 0")
    assert store.record_progress(run.id, 0.1, "too late") is False  # a finished run keeps its last progress
    assert store.get_run(run.id).progress == 0.999
    store.close()


def test_helper_module_runs_standalone_with_a_bare_python(tmp_path: Path) -> None:
    """The helper is standard-library only: a bare interpreter (-I, -S: no site, no scheduler) runs it."""
    script = tmp_path / "peach_progress.py"
    script.write_text(progress_helper())
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import peach_progress; peach_progress.report(0.5, 'ok')"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(tmp_path)], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "PEACH_PROGRESS 0.5 ok\n", "")


# -- migration 0004 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_takes_expected_durations_from_stored_history(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from scheduler.store.database import MIGRATIONS
    from tests.helpers.backends import create_database, drop_database

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        admin = request.getfixturevalue("postgres_admin_url")
        url = create_database(admin, "peach_progress_upgrade")
    engine = build_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:  # a database of the first release, with some history in it
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        for task in ("train", "fresh"):
            connection.execute(
                text(
                    "INSERT INTO tasks (codops, task, loop, executor, state, enabled, updated_at) "
                    "VALUES ('chrts', :task, 'chrts', 'python', 'FINISHED', true, '2026-03-01 00:00:00')"
                ),
                {"task": task},
            )
        history = [(n, "SUCCEEDED", 100.0 + n) for n in range(12)] + [(12, "FAILED", 5.0)]
        for n, status, seconds in history:  # the two oldest successes (100, 101 s) are past the last 10
            connection.execute(
                text(
                    "INSERT INTO runs (id, codops, task, loop, executor, status, trigger, started_at, "
                    "duration_seconds) VALUES (:id, 'chrts', 'train', 'chrts', 'python', :status, "
                    "'schedule', :started, :seconds)"
                ),
                {
                    "id": f"r-{n:02d}",
                    "status": status,
                    "started": f"2026-03-01 00:{n:02d}:00",
                    "seconds": seconds,
                },
            )
    store = Store(engine)  # upgrades to the head
    try:
        expected = {task.task: task.expected_seconds for task in store.task_states("chrts")}
        assert expected == {"fresh": None, "train": statistics.median(100.0 + n for n in range(2, 12))}
        assert store.get_run("r-11").progress is None
    finally:
        store.close()
        if backend == "postgresql":
            drop_database(request.getfixturevalue("postgres_admin_url"), "peach_progress_upgrade")
