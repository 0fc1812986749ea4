"""What recording a run's manifest costs, next to the run itself; and what a diff costs. Prints its figures.

    .venv/bin/python bench/manifests.py [--runs 20]

1. Per run: ``manifests.capture`` (read the runner, freeze the environment, parse) plus the store write
   (SQLite), against the run it describes (python executor: prepare, start, wait of a trivial task in the
   same environment), measured in the same process. The freeze (``uv pip freeze``) is shown uncached
   (first run in an environment) and cached (later runs: one stat of site-packages).
2. ``diff_runs`` of two runs whose task code has 2,000 lines, 10 of them changed.
"""

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executors import environments
from executors.base import RunRequest
from executors.environments import EnvironmentStore, freeze
from executors.python import PythonExecutor
from executors.runner import runner_script
from scheduler.runs.manifests import capture
from scheduler.runs.rundiff import diff_runs
from scheduler.status import RunStatus
from scheduler.store.database import default_url
from scheduler.store.records import Manifest
from scheduler.store.store import Store
from tests.helpers.executor_fixtures import make_task, make_wheel


def timed(action: object) -> float:
    began = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - began


def per_run(root: Path, runs: int) -> None:
    wheels = root / "wheels"
    make_wheel(wheels, "benchtiny", "1.0", "VALUE = 1\n")
    store = EnvironmentStore(root / "envs", install_args=["--no-index", "--find-links", str(wheels)])
    task = make_task(root / "repo", "def main():\n    print('hello')\n", dependencies=["benchtiny==1.0"])
    executor = PythonExecutor(store, root / "runs")
    state = Store.from_url(default_url(root / "workspace"))
    python = store.ensure(task.requirements).python
    environments._FROZEN.clear()
    uncached = timed(lambda: freeze(python))

    def one() -> tuple[float, float]:
        run = state.start_run("bench", "job", loop="bench", executor="python", version="c" * 40)
        execution = executor.prepare(RunRequest(run.id, task, timeout=60))
        began = time.perf_counter()
        execution.start()
        outcome = execution.wait()
        ran = time.perf_counter() - began
        assert outcome is not None and outcome.status is RunStatus.SUCCEEDED, outcome
        recorded = timed(lambda: state.save_manifest(capture(task, run.id, "c" * 40, execution)))
        state.finish_run(run.id, RunStatus.SUCCEEDED, "exit code 0")
        return ran, recorded

    one()  # warm
    run_times, record_times = zip(*(one() for _ in range(runs)), strict=True)
    state.close()
    r, m = statistics.median(run_times), statistics.median(record_times)
    print(
        f"per run ({runs} runs, median): run {r * 1000:.1f} ms, manifest capture + store {m * 1000:.1f} ms "
        f"-> {m / r:.1%} of the run; uncached freeze (first run of an environment) {uncached * 1000:.1f} ms"
    )


def diff_cost(root: Path) -> None:
    lines = [f"    total += {n}  # step {n}\n" for n in range(2000)]
    old = make_task(root / "a", "def main():\n    total = 0\n" + "".join(lines))
    lines[::200] = [f"    total -= {n}  # changed\n" for n in range(10)]
    new = make_task(root / "b", "def main():\n    total = 0\n" + "".join(lines))
    state = Store.from_url(default_url(root / "diff"))
    runs = [
        state.start_run("bench", f"t{i}", loop="bench", executor="python", version=None) for i in range(2)
    ]
    base = Manifest(
        runs[0].id, datetime.now(UTC), "a" * 40, runner_script(old), (), (), None, {}, "p.yaml", ""
    )
    second = replace(base, run_id=runs[1].id, runner=runner_script(new))
    a, b = runs[0], replace(runs[1], task=runs[0].task)
    times = [timed(lambda: diff_runs(a, base, b, second)) for _ in range(20)]
    changed = diff_runs(a, base, b, second).code.count("\n-    total")
    state.close()
    median = statistics.median(times) * 1000
    print(f"diff of 2,000-line task code ({changed} lines changed): median {median:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="peach-bench-") as folder:
        per_run(Path(folder), options.runs)
        diff_cost(Path(folder))


if __name__ == "__main__":
    main()
