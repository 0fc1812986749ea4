import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import postgres_server

pytest_plugins = ["tests.browser"]  # browser and page: real Chromium for the dashboard tests


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """One real PostgreSQL server for the whole session (started on first use, always stopped)."""
    with postgres_server() as url:
        yield url


def start_service(config: Path, log: Path) -> "subprocess.Popen[bytes]":
    """``peach-scheduler run`` as a child process in its own session, its output appended to ``log``."""
    with log.open("ab") as output:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "run", "--config", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PEACH_TEST_TOKEN": "t"},
        )


@pytest.fixture
def services() -> Iterator[list["subprocess.Popen[bytes]"]]:
    """Service processes a test starts; any still alive at its end are killed with their session."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
