"""Progress and ETA through the running service: a real task in a real repository reports progress while it
runs; the API, the CLI and the store show it, the ETA comes from the task's history, and a flood of progress
lines makes only a bounded number of database writes."""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.config import load_config
from scheduler.service.service import Service
from scheduler.status import RunStatus
from scheduler.store.store import Store, build_engine
from tests.helpers.backends import wait_for
from tests.helpers.orgs import QUICK, org_repo, write_config

CRUNCH = """\
import peach_progress


def main(first, second):
    peach_progress.report(0.5, "halfway")
    with open(first) as gate:  # the test opens the pipe once it has seen the progress
        gate.read()
    for step in range(20000):
        print(f"PEACH_PROGRESS {0.5 + step / 200000:.6f} flooding", flush=True)
    print("PEACH_PROGRESS 0.6 flood over", flush=True)
    with open(second) as gate:
        gate.read()
"""
HOURLY = {"every": "1h"}


class Seeded:
    """A clock for seeding history: runs that took as long as we say."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC) - timedelta(days=1)

    def __call__(self) -> datetime:
        return self.now


def seed(url: str, codops: str, task: str, durations: list[tuple[float, RunStatus]]) -> None:
    clock = Seeded()
    store = Store(build_engine(url), clock=clock)
    for seconds, status in durations:
        run = store.start_run(codops, task, loop=codops, executor="python", version=None)
        clock.now += timedelta(seconds=seconds)
        store.finish_run(run.id, status, "seeded")
        clock.now += timedelta(minutes=1)
    store.close()


def get(service: Service, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{service.port}{path}", timeout=10) as response:
        return json.load(response)


def open_gate(path: Path) -> None:
    with path.open("w") as gate:
        gate.write("go")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    first, second = tmp_path / "first", tmp_path / "second"
    os.mkfifo(first)
    os.mkfifo(second)
    repo = org_repo(
        tmp_path,
        "alpha",
        {
            "crunch": (CRUNCH, {**HOURLY, "args": {"first": str(first), "second": str(second)}}),
            "quick": (QUICK, HOURLY),
        },
    )
    config = load_config(write_config(tmp_path, {"alpha": repo}))
    seed(
        config.database_url,
        "alpha",
        "crunch",
        [
            (100, RunStatus.SUCCEEDED),
            (5, RunStatus.FAILED),
            (300, RunStatus.SUCCEEDED),
            (120, RunStatus.SUCCEEDED),
        ],
    )
    started = Service(config, environ={})
    yield started
    started.request_force_stop()
    started.wait_stopped(30)
    started.close()


@pytest.mark.timeout(180)
def test_progress_and_eta_of_a_running_run(service: Service, tmp_path: Path) -> None:
    writes: list[float] = []
    lock = threading.Lock()
    real = service.store.record_progress

    def counted(run_id: str, fraction: float, message: str | None, at: datetime | None = None) -> bool:
        with lock:
            writes.append(time.monotonic())
        return real(run_id, fraction, message, at)

    service.store.record_progress = counted  # type: ignore[method-assign]
    service.start()

    def running() -> dict[str, Any] | None:
        page = get(service, "/api/v1/runs?codops=alpha&task=crunch&status=RUNNING")
        return page["runs"][0] if page["runs"] and page["runs"][0]["progress"] is not None else None

    listed = wait_for(running, 90, "the running run's progress in the API")
    run = get(service, f"/api/v1/runs/{listed['id']}")
    elapsed = (datetime.now(UTC) - datetime.fromisoformat(run["started_at"])).total_seconds()
    assert (run["status"], run["progress"], run["progress_message"]) == ("RUNNING", 0.5, "halfway")
    assert (
        run["expected_seconds"] == 120.0
    )  # median of the successes 100, 300, 120; the failure is not history
    # half done: the rest of the work at the blended pace, 0.5 * (t + 0.5 * 120), i.e. 30 s + t / 2
    assert 30.0 <= run["eta_seconds"] <= 30.0 + elapsed / 2 + 0.2, (run, elapsed)
    assert run["overdue"] is False and run["eta_at"] > run["progress_at"]

    tasks = {task["task"]: task for task in get(service, "/api/v1/organisations/alpha/tasks")}
    crunch = tasks["crunch"]
    assert (crunch["state"], crunch["running_run_id"], crunch["progress"]) == ("RUNNING", run["id"], 0.5)
    assert crunch["expected_seconds"] == 120.0 and crunch["eta_seconds"] is not None
    assert tasks["quick"]["progress"] is None and tasks["quick"]["eta_seconds"] is None
    [alpha] = get(service, "/api/v1/organisations")
    assert (alpha["expected_pass_seconds"], alpha["tasks_without_history"]) == (120.0, 1)  # quick: none yet
    assert get(service, "/api/v1/loops") == [
        {"loop": "alpha", "tasks": 2, "expected_pass_seconds": 120.0, "tasks_without_history": 1}
    ]

    config = tmp_path / "config.yaml"
    shown = subprocess.run(
        [sys.executable, "-m", "scheduler.cli.main", "runs", "--config", str(config), "--task", "crunch"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    header, *rows = shown.stdout.splitlines()
    assert header.split()[-1] == "PROGRESS"
    [line] = [row for row in rows if row.startswith(run["id"])]
    assert "50% halfway, ETA " in line

    with lock:
        before = len(writes)
    flood_started = time.monotonic()
    open_gate(tmp_path / "first")
    wait_for(
        lambda: get(service, f"/api/v1/runs/{run['id']}")["progress_message"] == "flood over",
        60,
        "the latest progress after the flood",
    )
    flood_seconds = time.monotonic() - flood_started
    with lock:
        flood_writes = len(writes) - before
    # 20,001 progress lines; at most one write per second per run (plus the one in flight at the start)
    assert 1 <= flood_writes <= flood_seconds / service.runtime.progress_interval + 2, (
        flood_writes,
        flood_seconds,
    )

    open_gate(tmp_path / "second")
    wait_for(lambda: service.store.get_run(run["id"]).status.final, 60, "the run to end")
    done = get(service, f"/api/v1/runs/{run['id']}")
    assert (done["status"], done["progress"], done["eta_seconds"]) == ("SUCCEEDED", 0.6, None)
    assert done["duration_seconds"] < 100
    # four successes now, 100, 300, 120 and this short one: the median moves down to (100 + 120) / 2
    assert service.store.expected_seconds("alpha", "crunch") == 110.0
