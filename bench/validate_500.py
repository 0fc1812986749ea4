"""How fast `peach-scheduler validate` checks a repository of 500 tasks.

Prints the library call and the whole CLI process, next to the bare equivalent measured in the same run:
a safe YAML load (libyaml when present) of every task file plus json + ast.parse of every notebook
(what any validator must do).
Run: .venv/bin/python bench/validate_500.py
"""

import ast
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from scheduler.spec.definitions import load_definitions

TASKS, NOTEBOOKS, FILES = 500, 50, 5


def make_repo(root: Path) -> None:
    per_notebook = TASKS // NOTEBOOKS
    for n in range(NOTEBOOKS):
        cells = [
            {
                "cell_type": "code",
                "metadata": {},
                "outputs": [],
                "source": "import math\n%matplotlib inline\n",
            }
        ]
        for f in range(per_notebook):
            body = (
                f"def task_{f}(x=1, scale=2.0):\n"
                "    y = [math.sqrt(i) * scale for i in range(x)]\n    return sum(y)\n"
            )
            cells.append({"cell_type": "code", "metadata": {}, "outputs": [], "source": body})
        (root / "notebooks").mkdir(exist_ok=True)
        (root / f"notebooks/nb{n}.ipynb").write_text(json.dumps({"nbformat": 4, "cells": cells}, indent=1))
    (root / "peach.conf").mkdir()
    per_file = TASKS // FILES
    for k in range(FILES):
        lines = ["codops: chrts", "dependencies: [numpy==2.1.0]", "tasks:"]
        for t in range(k * per_file, (k + 1) * per_file):
            lines += [
                f"  task_{t}:",
                f"    notebook: notebooks/nb{t // per_notebook}.ipynb",
                f"    method: task_{t % per_notebook}",
                "    executor: python",
                "    timeout: 10m",
                f"    args: {{x: {t}}}",
            ]
        (root / f"peach.conf/f{k}.yaml").write_text("\n".join(lines) + "\n")


def bare(root: Path) -> None:
    for path in sorted((root / "peach.conf").glob("*.yaml")):
        yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            with contextlib.suppress(SyntaxError):
                ast.parse(cell["source"])


def best(fn: object, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_repo(root)
        result = load_definitions(root)
        assert len(result.tasks) == TASKS and not result.errors, result.errors[:3]
        ours = best(lambda: load_definitions(root))
        baseline = best(lambda: bare(root))
        cli = [sys.executable, "-m", "scheduler.cli.main", "validate", str(root)]
        walls = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run(cli, check=True, capture_output=True)
            walls.append(time.perf_counter() - start)
        startup = best(
            lambda: subprocess.run([sys.executable, "-c", "import scheduler.spec.definitions"], check=True), 5
        )
    print(f"tasks: {TASKS} in {FILES} files, {NOTEBOOKS} notebooks ({TASKS // NOTEBOOKS + 1} cells each)")
    print(f"load_definitions:          {ours * 1000:8.1f} ms")
    print(f"bare yaml+json+ast parse:  {baseline * 1000:8.1f} ms")
    print(f"ratio (ours / bare):       {ours / baseline:8.2f}x")
    print(
        f"validate CLI process:      {statistics.median(walls) * 1000:8.1f} ms median "
        f"(interpreter + imports alone: {startup * 1000:.1f} ms)"
    )


if __name__ == "__main__":
    main()
