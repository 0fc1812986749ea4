"""Capacity slots under load: 50 organisations share ``capacity.local_runs: 4`` on one scheduler process,
real git repositories, real child processes, SQLite. Each organisation has one task that sleeps
``--task`` seconds, due at every pass. Prints:

- runs per second of the service, next to a bare loop running the same sleeping process with 4 workers
  (measured in the same run, before the service): the ratio is what slots, fair queueing, git syncs,
  records and log capture cost in throughput when the host is the bottleneck;
- the most local runs seen at once, read from ``/proc`` (by the run marker), against the 4 slots;
- the spread of waiting across organisations, over the runs that started in the measured window (after
  a 10 s warm-up: the first round's waits range from nothing to a whole round by construction): per
  organisation, the mean of its runs' ``waited_seconds``; max/min of those means (1.0 is perfectly even),
  and the runs per organisation (min, max).

Run: .venv/bin/python bench/capacity.py [--orgs 50] [--slots 4] [--task 1.0] [--seconds 60]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import yaml

from scheduler.config import load_config
from scheduler.service.service import Service
from scheduler.status import RunStatus
from scheduler.store.records import Run
from scheduler.store.store import MAX_PAGE, Store

GIT = ["git", "-c", "user.name=b", "-c", "user.email=b@localhost", "-c", "init.defaultBranch=master"]
CODE = "import time\n\ndef main(seconds):\n    time.sleep(seconds)\n"


def make_repos(root: Path, orgs: int, seconds: float) -> dict[str, Path]:
    def one(i: int) -> tuple[str, Path]:
        codops = f"org{i:03d}"
        repo = root / codops
        (repo / "code").mkdir(parents=True)
        (repo / "code" / "t.py").write_text(CODE)
        task = {"notebook": "code/t.py", "method": "main", "executor": "python", "args": {"seconds": seconds}}
        (repo / "peach.yaml").write_text(yaml.safe_dump({"codops": codops, "tasks": {"work": task}}))
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "tasks"]):
            subprocess.run([*GIT, "-C", str(repo), *args], check=True)
        return codops, repo

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, range(orgs)))


def all_runs(store: Store) -> list[Run]:
    """Every run, newest first, page by page."""
    runs: list[Run] = []
    while page := store.list_runs(limit=MAX_PAGE, before=runs[-1].id if runs else None):
        runs += page
    return runs


def succeeded(store: Store) -> int:
    return sum(run.status is RunStatus.SUCCEEDED for run in all_runs(store))


def bare(slots: int, seconds: float, task: float) -> float:
    """Runs per second of a plain loop: ``slots`` workers each starting the sleeping process in turn."""
    done, lock, end = 0, threading.Lock(), time.monotonic() + seconds
    command = [sys.executable, "-c", f"import time; time.sleep({task})"]

    def worker() -> None:
        nonlocal done
        while time.monotonic() < end:
            subprocess.run(command, check=True)
            with lock:
                done += 1

    started = time.monotonic()
    with ThreadPoolExecutor(slots) as pool:
        for _ in range(slots):
            pool.submit(worker)
    return done / (time.monotonic() - started)


class Sampler(threading.Thread):
    """The most distinct runs alive at once under ``root``, from ``/proc``."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.most, self.stop = str(root).encode(), 0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            runs: set[bytes] = set()
            for pid in (p for p in os.listdir("/proc") if p.isdigit()):
                try:
                    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if any(item.startswith(b"PEACH_ARTIFACTS_DIR=" + self.root) for item in env):
                    runs.update(item for item in env if item.startswith(b"PEACH_RUN_ID="))
            self.most = max(self.most, len(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orgs", type=int, default=50)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--task", type=float, default=1.0, help="seconds each run sleeps")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the service runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="peach-bench-capacity-") as tmp:
        root = Path(tmp)
        repos = make_repos(root / "repos", args.orgs, args.task)
        config = {
            "workspace": str(root / "workspace"),
            "http": {"host": "127.0.0.1", "port": 0},
            "loops": {"pause": "0.1s"},
            "capacity": {"local_runs": args.slots, "metadata_local_runs": 0},
            "organisations": {
                codops: {"repositories": [{"url": str(repo)}]} for codops, repo in repos.items()
            },
        }
        path = root / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        print(
            f"{args.orgs} organisations, local_runs {args.slots}, runs of {args.task:g} s, {args.seconds:g} s"
        )
        bare_rate = bare(args.slots, min(args.seconds, 20.0), args.task)
        print(f"bare loop, {args.slots} workers:     {bare_rate:6.2f} runs/s")
        service = Service(load_config(path), environ={})
        sampler = Sampler(root / "workspace")
        sampler.start()
        service.start()
        warm = time.monotonic() + 10  # environments built, every loop past its first sync
        while time.monotonic() < warm:
            time.sleep(0.5)
        before, started, window = succeeded(service.store), time.monotonic(), datetime.now(UTC)
        time.sleep(args.seconds)
        rate = (succeeded(service.store) - before) / (time.monotonic() - started)
        service.request_force_stop()
        service.wait_stopped(30)
        sampler.stop.set()
        sampler.join()
        runs = [run for run in all_runs(service.store) if run.started_at >= window]  # the steady state
        service.close()
    ratio = rate / bare_rate
    print(f"scheduler, local_runs {args.slots}:      {rate:6.2f} runs/s  ({ratio:.2f} of the bare loop)")
    print(f"most local runs at once (/proc):  {sampler.most} (slots: {args.slots})")
    waits: dict[str, list[float]] = {}
    for run in runs:
        waits.setdefault(run.codops, []).append(run.waited_seconds or 0.0)
    means = {codops: statistics.mean(found) for codops, found in waits.items()}
    counts = [len(found) for found in waits.values()]
    low, high = min(means.values()), max(means.values())
    spread = f"{high / low:.2f}" if low > 0 else "inf"
    print(
        f"mean wait per organisation:       min {low:.2f} s, max {high:.2f} s, max/min {spread} "
        f"({len(means)} of {args.orgs} organisations ran)"
    )
    print(f"runs per organisation:            min {min(counts)}, max {max(counts)}")


if __name__ == "__main__":
    main()
