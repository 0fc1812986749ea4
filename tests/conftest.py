import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.store.database import default_url
from tests.helpers.backends import create_database, drop_database, postgres_server
from tests.helpers.hadoop import YarnCluster, hadoop_home, running_cluster

pytest_plugins = ["tests.helpers.browser"]  # browser and page: real Chromium for the dashboard tests


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """One real PostgreSQL server for the whole session (started on first use, always stopped)."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def yarn_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[YarnCluster]:
    """A real single-node YARN for the session (``-m yarn``); skipped without PEACH_HADOOP_HOME."""
    home = hadoop_home()
    with running_cluster(home, tmp_path_factory.mktemp("yarn")) as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A state database, once on SQLite (in the workspace) and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield default_url(tmp_path / "workspace")
        return
    admin = request.getfixturevalue("postgres_admin_url")
    name = f"peach_{uuid.uuid4().hex[:12]}"
    yield create_database(admin, name)
    drop_database(admin, name)


def start_service(config: Path, log: Path) -> "subprocess.Popen[bytes]":
    """``peach-scheduler run`` as a child process in its own session, its output appended to ``log``."""
    with log.open("ab") as output:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli.main", "run", "--config", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PEACH_TEST_TOKEN": "t"},
        )


def stopped(service: "subprocess.Popen[bytes]", log: Path, timeout: float = 60) -> int:
    """The exit code of ``service`` after SIGTERM; on ``timeout``, fails with every thread's stack
    (the service dumps them on SIGUSR1) and the log's tail."""
    service.send_signal(signal.SIGTERM)
    try:
        return service.wait(timeout)
    except subprocess.TimeoutExpired:
        service.send_signal(signal.SIGUSR1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.wait(5)
        lines = log.read_text(errors="replace").splitlines()[-300:]
        pytest.fail(f"the service did not stop {timeout} s after SIGTERM:\n" + "\n".join(lines))


@pytest.fixture
def services() -> Iterator[list["subprocess.Popen[bytes]"]]:
    """Service processes a test starts; any still alive at its end are killed with their session."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
