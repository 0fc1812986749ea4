"""Capacity in the running service: real git repositories, real child processes.

Five organisations with a 2 s task each share ``local_runs: 2``: how many run at once is read from the
processes themselves (``/proc``, by the run marker in their environment), not from the records.
"""

import os
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.config import load_config
from scheduler.service.service import Service
from scheduler.status import RunStatus
from scheduler.store.models import TaskState
from tests.helpers.backends import wait_for
from tests.helpers.orgs import org_repo, write_config

TWO_SECONDS = (
    "import os, pathlib, time\n\n"
    "def main(out):\n"
    "    start = time.time()\n"
    "    time.sleep(2)\n"
    "    name = os.environ['PEACH_CODOPS'] + '-' + os.environ['PEACH_RUN_ID']\n"
    "    (pathlib.Path(out) / name).write_text(f'{start} {time.time()}')\n"
)
ORGS = ("cap1", "cap2", "cap3", "cap4", "cap5")


def environ_of(pid: str) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


class Sampler(threading.Thread):
    """Counts, every 20 ms, the distinct runs whose processes are alive under ``root``."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.most, self.seen = str(root), 0, set[str]()
        self.metadata_seen_while_full = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            runs: dict[str, str] = {}
            for pid in (p for p in os.listdir("/proc") if p.isdigit()):
                env = environ_of(pid)
                if env.get("PEACH_ARTIFACTS_DIR", "").startswith(self.root) and "PEACH_RUN_ID" in env:
                    runs[env["PEACH_RUN_ID"]] = env.get("PEACH_TASK", "")
            organisation_runs = [run for run, task in runs.items() if task != "meta"]
            self.most = max(self.most, len(organisation_runs))
            if len(organisation_runs) == 2 and len(runs) == 3:
                self.metadata_seen_while_full += 1
            self.seen.update(runs)


def capacity_config(tmp_path: Path, repos: dict[str, Path], **capacity: Any) -> Path:
    path = write_config(tmp_path, repos)
    config = yaml.safe_load(path.read_text())
    config["capacity"] = capacity
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    out = tmp_path / "out"
    out.mkdir()
    repos = {}
    for codops in ORGS:
        tasks: dict[str, tuple[str, dict[str, object]]] = {"work": (TWO_SECONDS, {"args": {"out": str(out)}})}
        if codops == "cap1":  # a metadata task, quick and frequent
            tasks["meta"] = ("def main():\n    print('meta')\n", {"loop": "metadata", "timeout": "1m"})
        repos[codops] = org_repo(tmp_path, codops, tasks)
    config = capacity_config(tmp_path, repos, local_runs=2, metadata_local_runs=1)
    service = Service(load_config(config), environ={})
    yield service
    service.request_force_stop()
    service.wait_stopped(30)
    service.close()


def finished(tmp_path: Path) -> list[tuple[str, float, float]]:
    """(codops, start, end) of every 2 s run that ended, read from what the processes wrote."""
    rows = []
    for path in (tmp_path / "out").iterdir():
        start, end = path.read_text().split()
        rows.append((path.name.split("-", 1)[0], float(start), float(end)))
    return sorted(rows, key=lambda row: row[1])


def ended_runs(tmp_path: Path) -> list[str]:
    return [codops for codops, _, _ in finished(tmp_path)]


def served_twice_while_waiting(service: Service) -> None:
    """No organisation got a second slot while one that was already waiting at its first had none: a
    run's wait began at its start less its ``waited_seconds`` (a loop still syncing was not waiting)."""
    runs: dict[str, list[Any]] = {}
    for run in sorted(service.store.list_runs(limit=500), key=lambda r: r.started_at):
        if run.task == "work":
            runs.setdefault(run.codops, []).append(run)
    for codops, own in runs.items():
        first, second = own[0].started_at, own[1].started_at
        for other, theirs in runs.items():
            began = theirs[0].started_at - timedelta(seconds=theirs[0].waited_seconds or 0.0)
            if other != codops and began < first - timedelta(seconds=0.05):
                assert theirs[0].started_at <= second, f"{codops} served twice while {other} waited"


@pytest.mark.slow
def test_two_local_slots_shared_fairly_by_five_organisations(tmp_path: Path, service: Service) -> None:
    sampler = Sampler(tmp_path)
    sampler.start()
    service.start()
    try:
        reason = wait_for(
            lambda: next(
                (t.reason for t in service.store.task_states() if t.reason and t.state is TaskState.PENDING),
                None,
            ),
            60,
            "a task PENDING with a reason",
        )
        assert reason.startswith("waiting for a local slot (2/2 in use")
        api = next(t.as_dict() for t in service.store.task_states() if t.reason)
        assert api["state"] == "PENDING" and api["reason"].startswith("waiting for a local slot")
        wait_for(
            lambda: min(map(ended_runs(tmp_path).count, ORGS)) >= 2, 90, "two runs of every organisation"
        )
    finally:
        sampler.stop.set()
        sampler.join()
    runs = finished(tmp_path)
    assert sampler.most == 2, f"{sampler.most} runs at once"
    for _, start, _ in runs:  # from the processes' own clocks: never three at once
        assert sum(s <= start < e for _, s, e in runs) <= 2
    served_twice_while_waiting(service)
    # the metadata loop has its own slot: it ran while both shared slots were busy, without waiting
    assert sampler.metadata_seen_while_full > 0
    meta = service.store.list_runs(codops="cap1", task="meta", limit=100)
    assert meta and all(run.status is RunStatus.SUCCEEDED for run in meta if run.status.final)
    assert max(run.waited_seconds or 0.0 for run in meta) < 1.0
    waited = [run.waited_seconds or 0.0 for run in service.store.list_runs(limit=200) if run.task == "work"]
    assert max(waited) > 1.0  # organisation runs did wait for their slot, and it is recorded
    series = list(service.metrics.series())
    slots = {labels["kind"]: value for name, labels, value in series if name == "peach_capacity_slots"}
    assert slots["local"] == 2 and slots["metadata_local"] == 1
    waits = {labels["codops"]: v for name, labels, v in series if name == "peach_capacity_wait_seconds_count"}
    assert set(ORGS) <= set(waits) and all(waits[codops] >= 2 for codops in ORGS)
