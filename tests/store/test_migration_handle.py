"""Migration 0005: a run's opaque handle replaces its pid, pid_start and application_id columns."""

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from scheduler.store.database import MIGRATIONS
from scheduler.store.store import Store, build_engine
from tests.helpers.backends import create_database, drop_database

INSERT = (
    "INSERT INTO runs (id, codops, task, loop, executor, status, trigger, started_at, application_id, pid, "
    "pid_start) VALUES (:id, 'chrts', :id, 'chrts', :executor, 'FAILED', 'schedule', '2026-03-01 00:00:00', "
    ":app, :pid, :start)"
)
RUNS = [  # id, executor, application_id, pid, pid_start
    ("r-local", "python", None, 4242, 987654321),
    ("r-yarn", "spark", "application_1700000000000_0001", 5151, 123),  # spark-submit's pid, then the app
    ("r-unknown", "python", None, None, None),
]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_handles_are_taken_from_the_replaced_columns_and_given_back(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        url = create_database(request.getfixturevalue("postgres_admin_url"), "peach_handle_upgrade")
    engine = build_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0004")
            for run_id, executor, app, pid, start in RUNS:
                connection.execute(
                    text(INSERT), {"id": run_id, "executor": executor, "app": app, "pid": pid, "start": start}
                )
        store = Store(engine)  # upgrades to the head
        runs = {run_id: store.get_run(run_id) for run_id, *_ in RUNS}
        assert {run_id: (run.handle, run.application_id) for run_id, run in runs.items()} == {
            "r-local": ("pid:4242", None),
            "r-yarn": ("yarn:application_1700000000000_0001", "application_1700000000000_0001"),
            "r-unknown": (None, None),
        }
        assert runs["r-yarn"].as_dict()["application_id"] == "application_1700000000000_0001"  # SPEC §5
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0004")
            back = connection.execute(text("SELECT id, application_id, pid FROM runs ORDER BY id")).all()
        assert sorted(tuple(row) for row in back) == [
            ("r-local", None, 4242),
            ("r-unknown", None, None),
            ("r-yarn", "application_1700000000000_0001", None),  # one handle: the application won
        ]
    finally:
        engine.dispose()
        if backend == "postgresql":
            drop_database(request.getfixturevalue("postgres_admin_url"), "peach_handle_upgrade")


def test_the_store_reads_application_ids_from_handles_as_the_yarn_executor_writes_them() -> None:
    from executors.yarn.execution import YARN_HANDLE, application_of, yarn_handle
    from scheduler.store import records

    assert records.YARN_HANDLE == YARN_HANDLE
    assert application_of(yarn_handle("application_1_0001")) == "application_1_0001"
    assert application_of("pid:12") is None and application_of(None) is None
