"""The sustained load bench runs at a tiny size, so that it does not rot between the times it is used."""

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench" / "service_load.py"


def test_load_bench_runs_at_a_tiny_size_and_prints_its_figures() -> None:
    tiny = ["--orgs", "3", "--tasks", "3", "--failing", "1", "--timing-out", "1", "--timeout", "1s"]
    done = subprocess.run(
        [sys.executable, str(BENCH), *tiny, "--seconds", "4", "--window", "2", "--bare-seconds", "1"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
        cwd=BENCH.parent,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    rows = [line.split() for line in out.splitlines() if re.match(r"\s+\d+\s+\d+\.\d\s+\d+\s+\d+", line)]
    assert len(rows) == 2, out  # one row per window
    assert sum(int(row[7]) for row in rows) > 0, out  # some runs succeeded
    assert re.search(r"ratio scheduler/bare \d+\.\d\d", out), out
    assert re.search(r"last half slopes \(\d+ windows\): RSS [+-]\d", out), out
    assert re.search(
        r"before start / after stop: fds \d+ / \d+, threads \d+ / \d+, children \d+ / \d+", out
    ), out
