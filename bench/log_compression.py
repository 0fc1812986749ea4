"""Benchmark of storing finished runs' logs compressed; prints its figures.

    .venv/bin/python bench/log_compression.py [--lines 100000]

A typical log is written through the real log writer (``executors.logs.CappedLog``: timestamped lines):
Spark-style INFO lines, progress lines with numbers, a few tracebacks. Then:

1. Size: the plain file against ``scheduler.runs.runlogs.compress``'s gzip (ratio).
2. Time to compress, against the bare equivalent: copying the same file (``shutil.copyfile``).
3. Reading it back through ``scheduler.runs.runlogs.read``: the whole log and a 64 KiB range near the end,
   compressed against plain.
"""

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executors.logs import CappedLog, LogLimits
from scheduler.runs import runlogs

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "notebooks/train.ipynb[cell 3]", line 12, in train\n'
    "    model.fit(features, labels)\n"
    "ValueError: Input contains NaN, infinity or a value too large for dtype('float64').\n"
)


def typical_log(path: Path, lines: int) -> None:
    rng = random.Random(42)
    log = CappedLog(path, LogLimits(head_bytes=50 * 1024 * 1024, tail_bytes=50 * 1024 * 1024))
    log.note("run r-20260301-120000-3fa2c1: task chrts/train version 0123456789abcdef")
    for n in range(lines):
        kind = rng.random()
        if kind < 0.5:
            stage, task = rng.randrange(40), rng.randrange(2000)
            text = (
                f"26/03/01 12:{n % 60:02d}:{n % 60:02d} INFO TaskSetManager: Finished task {task}.0 in "
                f"stage {stage}.0 (TID {n}) in {rng.randrange(5, 900)} ms on localhost (executor driver) "
                f"({task}/2000)\n"
            )
        elif kind < 0.9:
            text = f"epoch {n // 1000} batch {n % 1000} loss={rng.random():.6f} acc={rng.random():.4f}\n"
        elif kind < 0.999:
            part = rng.randrange(10**5)
            text = f"fetched {rng.randrange(10**6)} rows from s3://bucket/chrts/part-{part:05d}.parquet\n"
        else:
            text = TRACEBACK
        log.output(text.encode())
    log.close()


def best(action: object, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="peach-bench-logs-") as tmp:
        plain = Path(tmp) / "output.log"
        typical_log(plain, args.lines)
        size = plain.stat().st_size
        copy = best(lambda: shutil.copyfile(plain, Path(tmp) / "copy.log"))
        packing = best(lambda: runlogs.compress(plain))
        packed = plain.with_name("output.log.gz")
        stored = packed.stat().st_size
        read_plain = best(lambda: runlogs.read(plain))
        read_packed = best(lambda: runlogs.read(packed))
        start = max(0, size - 65536)
        range_plain = best(lambda: runlogs.read(plain, start))
        range_packed = best(lambda: runlogs.read(packed, start))
        assert runlogs.read(packed) == runlogs.read(plain)
    mib = 1024 * 1024
    print(f"typical log: {args.lines} lines, {size / mib:.1f} MiB plain, {stored / mib:.2f} MiB gzip")
    print(f"  compression ratio        {size / stored:.1f}x")
    print(
        f"  compress                 {packing * 1000:.0f} ms ({size / mib / packing:.0f} MiB/s); "
        f"copying the file: {copy * 1000:.1f} ms ({packing / copy:.0f}x)"
    )
    print(
        f"  read whole               gzip {read_packed * 1000:.1f} ms, plain {read_plain * 1000:.1f} ms "
        f"({read_packed / read_plain:.0f}x)"
    )
    print(
        f"  read last 64 KiB (Range) gzip {range_packed * 1000:.1f} ms, plain {range_plain * 1000:.2f} ms "
        f"({range_packed / range_plain:.0f}x)"
    )


if __name__ == "__main__":
    main()
