import contextlib
import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from scheduler.errors import AlreadyRunning, RunNotFound, StateError, TaskNotFound
from scheduler.spec.definitions import Problem, Severity, Task, load_definitions
from scheduler.status import RunStatus
from scheduler.store.database import MIGRATIONS
from scheduler.store.models import Base, RunTrigger, TaskState
from scheduler.store.store import Store, build_engine, default_url, new_run_id
from tests.helpers.backends import create_database, drop_database

START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(state_url: str, clock: Clock) -> Iterator[Store]:
    store = Store(build_engine(state_url), clock=clock, host="node-1")
    yield store
    store.close()


def start(store: Store, task: str = "train", codops: str = "chrts", **kwargs: object) -> str:
    kwargs.setdefault("loop", codops)
    kwargs.setdefault("executor", "python")
    kwargs.setdefault("version", "0123456789abcdef0123456789abcdef01234567")
    return store.start_run(codops, task, **kwargs).id  # type: ignore[arg-type]


def sample_tasks(tmp_path: Path, names: list[str], codops: str = "chrts") -> tuple[Task, ...]:
    repo = tmp_path / f"repo-{codops}-{len(names)}-{'-'.join(names)}"
    (repo / "nb").mkdir(parents=True, exist_ok=True)
    (repo / "nb" / "job.py").write_text("def main():\n    return 1\n")
    tasks = "".join(
        f"  {name}:\n    notebook: nb/job.py\n    method: main\n    executor: python\n"
        + ("    loop: metadata\n" if name.startswith("meta") else "")
        for name in names
    )
    (repo / "peach.yaml").write_text(f"codops: {codops}\ntasks:\n{tasks or '  {}'}\n")
    definitions = load_definitions(repo)
    assert not definitions.errors, definitions.errors
    return definitions.tasks


def test_run_ids_are_time_ordered_and_safe() -> None:
    run_id = new_run_id(datetime(2026, 3, 1, 13, 4, 5, tzinfo=UTC))
    assert re.fullmatch(r"r-20260301-130405-[0-9a-f]{6}", run_id)
    assert new_run_id(START) < new_run_id(START + timedelta(seconds=1))


def test_run_lifecycle(store: Store, clock: Clock) -> None:
    run_id = start(store, trigger=RunTrigger.MANUAL, log_path="/logs/x", deadline=START + timedelta(hours=1))
    run = store.get_run(run_id)
    assert (
        run.status is RunStatus.RUNNING
        and run.host == "node-1"
        and run.deadline == START + timedelta(hours=1)
    )
    assert store.task_states("chrts")[0].state is TaskState.RUNNING

    assert store.attach(run_id, handle="pid:4242").handle == "pid:4242"
    assert store.attach(run_id, handle="pid:4242").application_id is None  # a local process's handle
    store.attach(run_id, handle="yarn:application_1700000000000_0001")  # spark-submit, then its application
    clock.advance(90.5)
    done = store.finish_run(run_id, RunStatus.FAILED, "exited with status 1", error="ValueError: boom")

    assert (done.handle, done.application_id) == (
        "yarn:application_1700000000000_0001",
        "application_1700000000000_0001",
    )
    assert done.as_dict() == {
        "id": run_id,
        "codops": "chrts",
        "task": "train",
        "loop": "chrts",
        "executor": "python",
        "version": "0123456789abcdef0123456789abcdef01234567",
        "short_version": "0123456789ab",
        "status": "FAILED",
        "trigger": "manual",
        "started_at": "2026-03-01T12:00:00.000Z",
        "finished_at": "2026-03-01T12:01:30.500Z",
        "duration_seconds": 90.5,
        "outcome": "exited with status 1",
        "error": "ValueError: boom",
        "application_id": "application_1700000000000_0001",
        "rerun_of": None,
        "progress": None,
        "progress_message": None,
        "progress_at": None,
        "keep": False,
        "artifacts": None,
        "waited_seconds": None,
        "peak_memory_bytes": None,
    }
    assert store.get_run(run_id) == done
    task = store.task_states("chrts")[0]
    assert (task.state, task.last_status, task.last_run_id) == (TaskState.FINISHED, RunStatus.FAILED, run_id)
    assert task.last_duration_seconds == 90.5 and task.last_success_at is None

    with pytest.raises(StateError, match="already FAILED"):
        store.finish_run(run_id, RunStatus.SUCCEEDED, "again")
    with pytest.raises(ValueError, match="not a final status"):
        store.finish_run(run_id, RunStatus.RUNNING, "no")
    with pytest.raises(RunNotFound):
        store.get_run("r-19990101-000000-000000")


def test_never_two_running_runs_of_one_task(store: Store) -> None:
    first = start(store)
    with pytest.raises(AlreadyRunning):
        start(store)
    start(store, task="other")
    store.finish_run(first, RunStatus.SUCCEEDED, "exited 0")
    second = start(store)
    assert {run.id for run in store.running_runs()} >= {second}
    assert store.task_states("chrts")[1].last_success_at is not None


def test_pagination_is_stable_while_runs_are_added(store: Store, clock: Clock) -> None:
    for number in range(23):
        run_id = start(store, task=f"t{number:02d}")
        store.finish_run(run_id, RunStatus.SUCCEEDED, "exited 0")
        if number % 3:  # several runs share a start time: the id breaks the tie
            clock.advance(1)
    expected = [run.id for run in store.list_runs(limit=100)]
    assert len(expected) == 23
    assert expected == sorted(expected, key=lambda i: (store.get_run(i).started_at, i), reverse=True)

    seen: list[str] = []
    before = None
    while True:
        page = store.list_runs(limit=5, before=before)
        clock.advance(1)
        start(store, task="newcomer" + str(len(seen)))  # newer runs must not shift the pages
        if not page:
            break
        seen += [run.id for run in page]
        before = page[-1].id
    assert seen == expected

    only = store.list_runs(codops="chrts", task="t05", limit=10)
    assert [run.task for run in only] == ["t05"]
    assert store.list_runs(status=RunStatus.RUNNING, limit=100) != []
    with pytest.raises(ValueError, match="limit"):
        store.list_runs(limit=0)
    with pytest.raises(RunNotFound):
        store.list_runs(before="r-nope")


def test_concurrent_writers_from_threads(state_url: str) -> None:
    store = Store(build_engine(state_url))
    errors: list[BaseException] = []
    winners: list[str] = []
    barrier = threading.Barrier(8)

    def loop(number: int) -> None:
        try:
            barrier.wait()
            for iteration in range(15):
                run_id = start(store, task=f"task{number}", codops=f"org{number}")
                store.attach(run_id, handle=f"pid:{1000 + iteration}")
                store.list_runs(codops=f"org{number}", limit=5)
                store.finish_run(run_id, RunStatus.SUCCEEDED, "exited 0")
            with contextlib.suppress(AlreadyRunning):  # all race for one task once: exactly one wins
                winners.append(start(store, task="shared", codops="shared"))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=loop, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    store.close()
    assert errors == []
    assert len(winners) == 1
    reopened = Store(build_engine(state_url))
    assert len(reopened.list_runs(status=RunStatus.SUCCEEDED, limit=1000)) == 8 * 15
    assert [run.id for run in reopened.running_runs()] == winners
    reopened.close()


def test_task_states_follow_definitions_and_runs(store: Store, tmp_path: Path, clock: Clock) -> None:
    assert store.upsert_tasks("chrts", sample_tasks(tmp_path, ["alpha", "beta", "meta_fetch"])) == []
    states = {task.task: task for task in store.task_states("chrts")}
    assert set(states) == {"alpha", "beta", "meta_fetch"}
    assert all(task.state is TaskState.PENDING and task.last_status is None for task in states.values())
    assert states["meta_fetch"].loop == "metadata" and states["alpha"].file == "peach.yaml"
    assert states["alpha"].as_dict()["state"] == "PENDING"
    assert [task.task for task in store.task_states(loop="metadata")] == ["meta_fetch"]

    run_id = start(store, task="alpha")
    clock.advance(5)
    store.finish_run(run_id, RunStatus.SUCCEEDED, "exited 0", next_due=clock.now + timedelta(hours=6))
    alpha = store.task_states("chrts")[0]
    assert (alpha.state, alpha.last_status, alpha.next_due) == (
        TaskState.FINISHED,
        RunStatus.SUCCEEDED,
        START + timedelta(seconds=5, hours=6),
    )
    store.set_pending("chrts", ["alpha", "beta"])
    assert store.task_states("chrts")[0].state is TaskState.PENDING

    assert store.upsert_tasks("chrts", sample_tasks(tmp_path, ["alpha"])) == ["beta", "meta_fetch"]
    assert [task.task for task in store.task_states("chrts")] == ["alpha"]
    removed = [task for task in store.task_states("chrts", include_removed=True) if task.removed]
    assert [task.task for task in removed] == ["beta", "meta_fetch"]
    store.upsert_tasks("chrts", sample_tasks(tmp_path, ["alpha", "beta"]))
    assert [task.task for task in store.task_states("chrts")] == ["alpha", "beta"]
    assert store.task_states("chrts")[0].last_status is RunStatus.SUCCEEDED  # history survives reloads

    with pytest.raises(ValueError, match="does not belong"):
        store.upsert_tasks("sesr", sample_tasks(tmp_path, ["alpha"]))


def test_problems_are_replaced_per_repository(store: Store) -> None:
    store.replace_problems(
        "chrts", "chrts/tasks", [Problem("peach.yaml", 3, "unknown key 'notbook'", task="a")]
    )
    store.replace_problems(
        "chrts",
        "chrts/more",
        [
            Problem("nb/x.ipynb", 2, "uses %magic", severity=Severity.WARNING, cell=4),
            Problem("peach.conf/b.yaml", None, "no tasks"),
        ],
    )
    store.replace_problems("sesr", "sesr/tasks", [Problem("peach.yaml", 1, "bad codops")])
    assert len(store.problems("chrts")) == 3

    store.replace_problems("chrts", "chrts/tasks", [])
    remaining = store.problems("chrts")
    assert [problem.repository for problem in remaining] == ["chrts/more", "chrts/more"]
    assert remaining[0].as_dict() | {"found_at": None} == {
        "repository": "chrts/more",
        "codops": "chrts",
        "file": "nb/x.ipynb",
        "line": 2,
        "cell": 4,
        "task": None,
        "severity": "warning",
        "message": "uses %magic",
        "found_at": None,
    }
    assert [problem.message for problem in store.problems(repository="sesr/tasks")] == ["bad codops"]


def test_running_runs_survive_a_restart_for_recovery(store: Store, state_url: str, clock: Clock) -> None:
    finished = start(store, task="done")
    store.finish_run(finished, RunStatus.SUCCEEDED, "exited 0")
    clock.advance(1)
    local = start(store, task="local")
    store.attach(local, handle="pid:31337")
    clock.advance(1)
    spark = start(store, task="spark", executor="spark")
    store.attach(spark, handle="yarn:application_1_0002")
    store.close()

    restarted = Store(build_engine(state_url), clock=clock, host="node-1")
    running = restarted.running_runs()
    assert [run.id for run in running] == [local, spark]
    assert (running[0].handle, running[0].host) == ("pid:31337", "node-1")
    assert running[1].application_id == "application_1_0002"
    assert restarted.running_runs(host="node-2") == []
    clock.advance(10)
    lost = restarted.finish_run(local, RunStatus.LOST, "process 31337 was gone after the scheduler restarted")
    assert lost.status is RunStatus.LOST and lost.duration_seconds == 11
    assert [run.id for run in restarted.running_runs()] == [spark]
    restarted.close()


def test_organisations_and_triggers(store: Store, tmp_path: Path) -> None:
    store.upsert_tasks("chrts", sample_tasks(tmp_path, ["alpha", "meta_fetch"]))
    failed = start(store, task="alpha")
    store.finish_run(failed, RunStatus.TIMED_OUT, "killed after 3600 s timeout")
    start(store, task="meta_fetch", loop="metadata")
    store.replace_problems("sesr", "sesr/tasks", [Problem("peach.yaml", 1, "bad")])
    summary = {org.codops: org.as_dict() for org in store.organisations()}
    assert summary["chrts"] | {"last_started_at": None} == {
        "codops": "chrts",
        "tasks": 2,
        "running": 1,
        "failing": 1,
        "errors": 0,
        "last_started_at": None,
    }
    assert summary["sesr"]["errors"] == 1 and summary["sesr"]["tasks"] == 0

    trigger = store.request_trigger("chrts", "alpha", requested_by="api")
    assert store.request_trigger("chrts", "alpha") == trigger  # one waiting request per task
    with pytest.raises(TaskNotFound):
        store.request_trigger("chrts", "nope")
    assert store.take_triggers("metadata") == []
    taken = store.take_triggers("chrts")
    assert [(t.id, t.task, t.requested_by) for t in taken] == [(trigger.id, "alpha", "api")]
    assert taken[0].taken_at is not None
    assert store.take_triggers("chrts") == []


def migrations_head() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


def test_migrated_schema_matches_the_models(store: Store, state_url: str) -> None:
    with store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        assert MigrationContext.configure(connection).get_current_revision() == migrations_head()
    again = Store(build_engine(state_url))  # migrating an up-to-date database changes nothing
    assert again.list_runs() == []
    again.close()


def test_postgresql_connections_are_reestablished(postgres_admin_url: str, clock: Clock) -> None:
    name = f"peach_{uuid.uuid4().hex[:12]}"
    store = Store(build_engine(create_database(postgres_admin_url, name)), clock=clock)
    first = start(store)
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s", (name,)
        ).fetchone()
    assert killed is not None and killed[0] >= 1
    assert store.finish_run(first, RunStatus.SUCCEEDED, "exited 0").status is RunStatus.SUCCEEDED
    store.close()
    drop_database(postgres_admin_url, name)


def test_sqlite_settings(tmp_path: Path) -> None:
    file_store = Store.from_url(default_url(tmp_path))
    with file_store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    assert (tmp_path / "state.db").is_file()
    file_store.close()
    memory = Store.from_url("sqlite://")  # one shared connection: every thread sees the same database
    run_id = start(memory)
    seen: list[str] = []
    thread = threading.Thread(target=lambda: seen.extend(run.id for run in memory.running_runs()))
    thread.start()
    thread.join(10)
    assert seen == [run_id]
    memory.close()


def test_a_waiting_reason_shows_the_task_pending_until_its_run_starts(store: Store, tmp_path: Path) -> None:
    store.upsert_tasks("chrts", sample_tasks(tmp_path, ["train"]))
    store.set_waiting("chrts", "train", "waiting for a local slot (3/3 in use)")
    [waiting] = store.task_states("chrts")
    assert (waiting.state, waiting.reason) == (TaskState.PENDING, "waiting for a local slot (3/3 in use)")
    assert waiting.as_dict()["reason"] == "waiting for a local slot (3/3 in use)"
    run = store.start_run(
        "chrts", "train", loop="chrts", executor="python", version=None, waited_seconds=4.25
    )
    assert run.waited_seconds == 4.25 and run.as_dict()["waited_seconds"] == 4.25
    [running] = store.task_states("chrts")
    assert (running.state, running.reason) == (TaskState.RUNNING, None)
    store.set_waiting("chrts", "train", "waiting for a local slot (1/1 in use)")  # a RUNNING task stays so
    assert store.task_states("chrts")[0].state is TaskState.RUNNING
    done = store.finish_run(run.id, RunStatus.SUCCEEDED, "exit code 0", peak_memory_bytes=123 * 2**20)
    assert done.peak_memory_bytes == 123 * 2**20
    store.set_waiting("chrts", "train", None)
    assert store.task_states("chrts")[0].reason is None
