"""Benchmark of the python executor and the environment store; prints its figures.

    .venv/bin/python bench/python_executor.py [--runs 20] [--lookups 2000]

1. Run overhead: the same runner script in the same environment, run by the python executor (prepare,
   start, wait: run directory, sanitized environment, log capture, /proc sweep) vs a bare
   ``python runner.py`` through ``subprocess.run``.
2. Environment build: one requirement set from local wheels (no network; installer caches warm) with
   ``uv venv`` + ``uv pip install`` vs ``python -m venv`` + ``pip install``.
3. Cache-hit lookup: ``EnvironmentStore.ensure`` of a built set (hash, stat, lock, touch).
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executors.base import RunRequest
from executors.environments import EnvironmentStore
from executors.python import PythonExecutor
from executors.runner import runner_script
from scheduler.status import RunStatus
from tests.helpers.executor_fixtures import make_task, make_wheel


def timed(action: object) -> float:
    began = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - began


def run_overhead(root: Path, store: EnvironmentStore, runs: int) -> None:
    task = make_task(root / "repo", "def main():\n    print('hello')\n")
    executor = PythonExecutor(store, root / "runs")
    env = store.ensure(task.requirements)
    runner = root / "runner.py"
    runner.write_text(runner_script(task))

    def bare() -> None:
        subprocess.run([str(env.python), str(runner)], check=True, capture_output=True)

    def executed(number: int) -> None:
        execution = executor.prepare(RunRequest(f"bench-{number}", task, timeout=60))
        execution.start()
        outcome = execution.wait()
        assert outcome is not None and outcome.status is RunStatus.SUCCEEDED, outcome

    bare()
    executed(-1)  # warm both paths
    bare_times = [timed(bare) for _ in range(runs)]
    exec_times = [timed(lambda n=n: executed(n)) for n in range(runs)]
    env.release()
    b, e = statistics.median(bare_times), statistics.median(exec_times)
    print(
        f"run overhead ({runs} runs, median): bare python runner.py {b * 1000:.1f} ms, "
        f"python executor {e * 1000:.1f} ms -> ratio {e / b:.2f}x (+{(e - b) * 1000:.1f} ms per run)"
    )


def build_speed(root: Path) -> None:
    wheels = root / "wheels"
    make_wheel(wheels, "benchtiny", "1.0", "VALUE = 1\n", script="benchtiny = benchtiny:main")
    make_wheel(wheels, "benchdep", "1.0", "import benchtiny\n", requires=["benchtiny"])
    args = ["--no-index", "--find-links", str(wheels)]
    requirements = ["benchdep==1.0"]
    figures = {}
    for name, uv in (("uv", "auto"), ("venv+pip", None)):
        times = []
        for attempt in range(3):
            store = EnvironmentStore(root / f"store-{name}-{attempt}", uv=uv, install_args=args)
            store.key(requirements)  # interpreter identity outside the timing
            times.append(timed(lambda store=store: store.ensure(requirements).release()))
        figures[name] = statistics.median(times)
    print(
        f"environment build (median of 3, {requirements} from local wheels): uv {figures['uv']:.2f} s, "
        f"python -m venv + pip {figures['venv+pip']:.2f} s "
        f"-> pip/uv {figures['venv+pip'] / figures['uv']:.1f}x"
    )


def lookup_speed(root: Path, lookups: int) -> None:
    store = EnvironmentStore(root / "store-lookup")
    store.ensure([]).release()
    times = [timed(lambda: store.ensure([]).release()) for _ in range(lookups)]
    print(
        f"cache-hit lookup ({lookups} lookups): median {statistics.median(times) * 1e6:.0f} us, "
        f"p99 {sorted(times)[int(lookups * 0.99)] * 1e6:.0f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--lookups", type=int, default=2000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="peach-bench-") as folder:
        root = Path(folder)
        run_overhead(root, EnvironmentStore(root / "store"), options.runs)
        build_speed(root)
        lookup_speed(root, options.lookups)


if __name__ == "__main__":
    main()
