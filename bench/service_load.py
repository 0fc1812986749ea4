"""Sustained load: 1,000 organisations x 10 tasks on one scheduler process for minutes, with a mix of
fast, failing and timing-out tasks (the loop timeout is set short in the configuration), real git
repositories, real child processes and SQLite. Every window (default 15 s) it samples the scheduler
process itself:

- RSS (``/proc/self/status``), open file descriptors (``/proc/self/fd``), threads (``/proc/self/task``),
  child processes and zombies among them;
- runs finished in the window (by outcome) and runs per second;
- dispatch latency in the window, from a loop picking a due task to the task's process running (p50,
  p99): it includes the git sync before every run, the known bottleneck at this scale.

It prints the table over time, the throughput ratio against a bare loop spawning the same runner
scripts with 4 workers per core (measured in the same run, before and after), what is left after the
service stops (threads, descriptors, children: a leak shows there), and a verdict on flatness: the
least-squares slope of RSS, descriptors and threads over the last half of the run, and the p99 latency
of the last half against the first.

With ``--tracemalloc`` it also traces the Python heap (slower: about half the runs per second): a
"traced MiB" column (the Python objects alive, after a garbage collection), its slope beside RSS's, and
the top growth sites between the first steady-state window and the end (``--top``), so RSS growth can be
told apart into Python objects (a leak or a cache shows as a site growing with the runs) and the
allocator's own (arena fragmentation: RSS grows, traced memory does not; compare with
``MALLOC_ARENA_MAX=2`` in the environment).

Run: .venv/bin/python bench/service_load.py [--orgs 1000] [--tasks 10] [--seconds 300] [--window 15]
     [--failing 2] [--timing-out 1] [--timeout 2s] [--tracemalloc] [--top 15]
"""

import argparse
import ctypes
import ctypes.util
import gc
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from service_1000 import GIT, WORKERS, bare, write_config  # type: ignore[import-not-found]

from executors.process import ProcessExecution
from executors.runner import runner_script
from scheduler.config import load_config
from scheduler.service import loops
from scheduler.service.service import Service
from scheduler.spec.definitions import load_definitions

FAST = "def main():\n    pass\n"
FAILING = "def main():\n    raise RuntimeError('failing on purpose')\n"
HANGING = "import time\n\ndef main():\n    time.sleep(3600)\n"
PROC_SELF = Path("/proc/self")


def make_repos(root: Path, orgs: int, tasks: int, failing: int, timing_out: int) -> dict[str, Path]:
    """Each organisation: ``tasks`` tasks, ``failing`` of them fail, ``timing_out`` hang (in turn per org)."""
    import subprocess

    mix = ["fast"] * (tasks - failing - timing_out) + ["failing"] * failing + ["hanging"] * timing_out

    def one(i: int) -> tuple[str, Path]:
        kinds = mix[i % tasks :] + mix[: i % tasks]  # rotated: every window sees the whole mix
        codops = f"org{i:04d}"
        repo = root / codops
        (repo / "code").mkdir(parents=True)
        for kind, code in (("fast", FAST), ("failing", FAILING), ("hanging", HANGING)):
            (repo / "code" / f"{kind}.py").write_text(code)
        body = {
            f"t{k:02d}": {"notebook": f"code/{kind}.py", "method": "main", "executor": "python"}
            for k, kind in enumerate(kinds)
        }
        (repo / "peach.yaml").write_text(yaml.safe_dump({"codops": codops, "tasks": body}))
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "tasks"]):
            subprocess.run([*GIT, "-C", str(repo), *args], check=True)
        return codops, repo

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, range(orgs)))


def rss_mib() -> float:
    for line in (PROC_SELF / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


MALLINFO2 = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
MALLINFO2 += ("keepcost",)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2]


def heap_mib() -> tuple[float, float, float]:
    """(glibc malloc: bytes in use, bytes free but held in its arenas; SQLite's own memory), MiB."""
    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = _Mallinfo2
    info = mallinfo2()
    sqlite = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")  # the one _sqlite3 uses
    sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    used = info.uordblks + info.hblkhd  # arenas' blocks in use plus mmapped blocks
    return used / 2**20, info.fordblks / 2**20, sqlite.sqlite3_memory_used() / 2**20


def count(path: Path) -> int:
    try:
        return len(os.listdir(path))
    except OSError:
        return 0


def children() -> tuple[int, int]:
    """(children of this process, how many of them are zombies)."""
    me, total, zombies = os.getpid(), 0, 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        state, parent = text[text.rindex(")") + 2 :].split()[:2]
        if int(parent) == me:
            total += 1
            zombies += state == "Z"
    return total, zombies


@dataclass
class Sample:
    at: float
    rss: float
    fds: int
    threads: int
    children: int
    zombies: int
    finished: Counter[str]
    latencies: list[float]
    seen: int  # distinct tasks that have run at least once so far
    malloc_used: float  # MiB glibc malloc has handed out and not had back
    malloc_free: float  # MiB free inside malloc's arenas, not returned to the system (fragmentation)
    sqlite: float  # MiB SQLite holds (page caches of the pooled connections, mostly)
    traced: float = float("nan")  # MiB of Python objects alive (with --tracemalloc)
    snapshot: tracemalloc.Snapshot | None = None  # the first steady-state window's (with --tracemalloc)

    @property
    def runs(self) -> int:
        return sum(self.finished.values())


@dataclass
class Recorder:
    """What the hooks collect from the loops, taken by the sampler once per window."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    picked: dict[int, float] = field(default_factory=dict)
    seen: set[tuple[str, str]] = field(default_factory=set)

    def take(self) -> tuple[Counter[str], list[float]]:
        with self.lock:
            finished, latencies = self.finished, self.latencies
            self.finished, self.latencies = Counter(), []
        return finished, latencies


def hook(recorder: Recorder) -> None:
    """Count finished runs and time dispatches, by wrapping the loops' entry points (restored by unhook)."""
    run_due, execute, start = loops.Loop.run_due, loops.execute, ProcessExecution.start

    def timed_run_due(self, organisation, name, triggered, synced=None):  # type: ignore[no-untyped-def]
        recorder.picked[threading.get_ident()] = time.monotonic()
        return run_due(self, organisation, name, triggered, synced)

    def counted_execute(*args, **kwargs):  # type: ignore[no-untyped-def]
        run = execute(*args, **kwargs)
        if run is not None:
            with recorder.lock:
                recorder.finished[run.status.value] += 1
                recorder.seen.add((run.codops, run.task))
        return run

    def timed_start(self):  # type: ignore[no-untyped-def]
        start(self)
        picked = recorder.picked.pop(threading.get_ident(), None)
        if picked is not None:
            with recorder.lock:
                recorder.latencies.append(time.monotonic() - picked)

    loops.Loop.run_due, loops.execute, ProcessExecution.start = timed_run_due, counted_execute, timed_start  # type: ignore[method-assign,assignment]
    _originals.extend([run_due, execute, start])


_originals: list[object] = []


def unhook() -> None:
    loops.Loop.run_due, loops.execute, ProcessExecution.start = _originals  # type: ignore[method-assign,assignment]
    _originals.clear()


def sample(recorder: Recorder, started: float, tasks: int, first_steady: bool) -> Sample:
    finished, latencies = recorder.take()
    kids, zombies = children()
    traced, snapshot = float("nan"), None
    if tracemalloc.is_tracing():
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] / 2**20
        if first_steady and len(recorder.seen) >= tasks:
            snapshot = tracemalloc.take_snapshot()
    return Sample(
        time.monotonic() - started,
        rss_mib(),
        count(PROC_SELF / "fd"),
        count(PROC_SELF / "task"),
        kids,
        zombies,
        finished,
        latencies,
        len(recorder.seen),
        *heap_mib(),
        traced,
        snapshot,
    )


def quantile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100)[q - 1]


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def print_table(samples: list[Sample], window: float) -> None:
    print(
        f"{'t (s)':>6} {'RSS MiB':>8} {'fds':>5} {'threads':>7} {'children':>8} {'zombies':>7} "
        f"{'runs/s':>7} {'ok':>6} {'failed':>6} {'timeout':>7} {'other':>5} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'tasks run':>9} {'malloc':>6} {'free':>5} {'sqlite':>6}"
        + (f" {'traced MiB':>10}" if tracemalloc.is_tracing() else "")
    )
    for s in samples:
        ok, failed, timed = s.finished["SUCCEEDED"], s.finished["FAILED"], s.finished["TIMED_OUT"]
        print(
            f"{s.at:6.0f} {s.rss:8.1f} {s.fds:5d} {s.threads:7d} {s.children:8d} {s.zombies:7d} "
            f"{s.runs / window:7.1f} {ok:6d} {failed:6d} {timed:7d} {s.runs - ok - failed - timed:5d} "
            f"{1000 * quantile(s.latencies, 50):7.0f} {1000 * quantile(s.latencies, 99):7.0f} {s.seen:9d} "
            f"{s.malloc_used:6.1f} {s.malloc_free:5.1f} {s.sqlite:6.1f}"
            + (f" {s.traced:10.1f}" if tracemalloc.is_tracing() else "")
        )


def verdict(samples: list[Sample], tasks: int) -> None:
    """Slopes over the last half, or from the steady state if it comes later (before: environments,
    caches, the database warm up, and each task's first run adds its metric series)."""
    steady = next((i for i, s in enumerate(samples) if s.seen >= tasks), None)
    if steady is None:
        print(
            f"warm-up only: {samples[-1].seen if samples else 0} of {tasks} tasks have run at least once; "
            "RSS still includes first-run growth (a longer run, or fewer organisations, reaches steady state)"
        )
    else:
        print(f"steady state (every task has run once) from t = {samples[steady].at:.0f} s")
    cut = max(len(samples) // 2, steady or 0)
    half = samples[cut:]
    first = [x for s in samples[:cut] for x in s.latencies]
    last = [x for s in half for x in s.latencies]
    rss = slope_per_minute([(s.at, s.rss) for s in half])
    fds = slope_per_minute([(s.at, s.fds) for s in half])
    threads = slope_per_minute([(s.at, s.threads) for s in half])
    traced = slope_per_minute([(s.at, s.traced) for s in half])
    used, free, sqlite = (
        slope_per_minute([(s.at, getattr(s, name)) for s in half])
        for name in ("malloc_used", "malloc_free", "sqlite")
    )
    mean_rss = statistics.fmean(s.rss for s in half) if half else 0.0
    rss_flat = abs(rss) * 60 < 0.10 * mean_rss  # less than 10% of the RSS per hour at that slope
    print(
        f"last half slopes ({len(half)} windows): RSS {rss:+.2f} MiB/min "
        f"({'flat' if rss_flat else 'GROWING'}: "
        f"{abs(rss) * 60 / mean_rss * 100 if mean_rss else 0:.1f}% of {mean_rss:.0f} MiB per hour), "
        f"fds {fds:+.2f}/min, threads {threads:+.2f}/min"
        + (f", traced Python heap {traced:+.2f} MiB/min" if tracemalloc.is_tracing() else "")
    )
    print(
        f"of RSS: malloc in use {used:+.2f} MiB/min, free in malloc's arenas {free:+.2f} MiB/min, "
        f"SQLite {sqlite:+.2f} MiB/min (MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', 'unset')})"
    )
    if first and last:
        p99_first, p99_last = quantile(first, 99), quantile(last, 99)
        ratio = p99_last / p99_first if p99_first else float("nan")
        print(
            f"dispatch p99: before {1000 * p99_first:.0f} ms, last half {1000 * p99_last:.0f} ms "
            f"(ratio {ratio:.2f}; {'stable' if ratio < 1.5 else 'DRIFTING'})"
        )


REPO = str(Path(__file__).resolve().parent.parent)
PRODUCT = tuple(f"{REPO}/{package}/" for package in ("scheduler", "executors", "queues"))


def where(frame: tracemalloc.Frame) -> str:
    name = frame.filename
    for prefix in (f"{REPO}/", *(f"{p}/" for p in sys.path if p and "site-packages" in p)):
        name = name.removeprefix(prefix)
    return f"{name}:{frame.lineno}"


def growth(samples: list[Sample], end: tracemalloc.Snapshot, top: int) -> None:
    """The Python heap's top growth sites from the first steady-state window to the end, by allocation
    site (its innermost frame) with the product's frame that led there."""
    first = next((i for i, s in enumerate(samples) if s.snapshot is not None), None)
    if first is None:
        print("tracemalloc: no steady state reached, no growth sites (a longer run, or fewer organisations)")
        return
    start = samples[first].snapshot
    assert start is not None
    runs = sum(s.runs for s in samples[first + 1 :])
    minutes = (samples[-1].at - samples[first].at) / 60
    diffs = [d for d in end.compare_to(start, "traceback") if d.size_diff]
    total = sum(d.size_diff for d in diffs)
    rss = samples[-1].rss - samples[first].rss
    print(
        f"tracemalloc, t = {samples[first].at:.0f} s to {samples[-1].at:.0f} s "
        f"({runs} runs, {minutes:.1f} min): "
        f"Python heap {total / 2**20:+.2f} MiB ({total / max(runs, 1):+.0f} B per run), "
        f"RSS {rss:+.1f} MiB ({rss * 2**20 / max(runs, 1):+.0f} B per run)"
    )
    sites: dict[str, list[int]] = {}  # "allocated at <- product frame" -> [bytes, blocks]
    for d in diffs:
        frames = list(reversed(d.traceback))  # the allocation first (a traceback lists the oldest first)
        ours = next((f for f in frames if f.filename.startswith(PRODUCT)), None)
        site = where(frames[0]) + (f"  <- {where(ours)}" if ours not in (None, frames[0]) else "")
        grown = sites.setdefault(site, [0, 0])
        grown[0] += d.size_diff
        grown[1] += d.count_diff
    print(f"{'KiB':>8} {'blocks':>7}  allocated at  <- product frame that led there")
    for site, (size, blocks) in sorted(sites.items(), key=lambda item: -item[1][0])[:top]:
        print(f"{size / 1024:+8.1f} {blocks:+7d}  {site}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orgs", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--failing", type=int, default=2, help="failing tasks per organisation")
    parser.add_argument("--timing-out", type=int, default=1, help="hanging tasks per organisation")
    parser.add_argument("--timeout", default="2s", help="loops.timeout: what the hanging tasks reach")
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--window", type=float, default=15)
    parser.add_argument("--bare-seconds", type=float, default=15)
    parser.add_argument("--tracemalloc", action="store_true", help="trace the Python heap: growth sites")
    parser.add_argument("--top", type=int, default=15, help="growth sites printed with --tracemalloc")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the timeouts are on purpose: keep their warnings out
    if args.failing + args.timing_out >= args.tasks:
        parser.error("--failing + --timing-out must leave at least one fast task")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.monotonic()
        repos = make_repos(root / "repos", args.orgs, args.tasks, args.failing, args.timing_out)
        fast = args.tasks - args.failing - args.timing_out
        print(
            f"{args.orgs} organisations x {args.tasks} tasks ({fast} fast, {args.failing} failing, "
            f"{args.timing_out} timing out after {args.timeout}): repositories made in "
            f"{time.monotonic() - t0:.0f} s; {args.seconds:.0f} s sustained, {args.window:.0f} s windows"
        )
        config_path = write_config(root, repos, {"pause": "1s", "timeout": args.timeout, "drain": "1s"})
        definitions = load_definitions(next(iter(repos.values())))
        runners = []
        for task in definitions.tasks[:fast]:  # the bare loop runs what a fast task runs
            runners.append(root / f"{task.name}.py")
            runners[-1].write_text(runner_script(task))
        bare_seconds = min(args.seconds, args.bare_seconds)
        bare_before = bare(runners, sys.executable, bare_seconds)

        recorder = Recorder()
        hook(recorder)
        before = (count(PROC_SELF / "fd"), count(PROC_SELF / "task"), children()[0])
        if args.tracemalloc:
            tracemalloc.start(12)
        service = Service(load_config(config_path))
        started = time.monotonic()
        service.start()
        start_seconds = time.monotonic() - started
        samples: list[Sample] = []
        end = started + args.seconds
        while time.monotonic() < end - 0.01:
            time.sleep(min(args.window, end - time.monotonic()))  # the bench's clock: sample, sleep, sample
            first_steady = not any(s.snapshot for s in samples)
            samples.append(sample(recorder, started, args.orgs * args.tasks, first_steady))
        gc.collect()
        end_snapshot = tracemalloc.take_snapshot() if args.tracemalloc else None
        stop = time.monotonic()
        service.request_force_stop()
        service.wait_stopped(60)
        service.close()
        stopped = time.monotonic() - stop
        unhook()
        after = (count(PROC_SELF / "fd"), count(PROC_SELF / "task"), children()[0])
        envs = sorted((root / "ws" / "environments" / "envs").glob("*/bin/python"))
        env_python = str(envs[0]) if envs else sys.executable
        bare_rate = (bare_before + bare(runners, env_python, bare_seconds)) / 2

    print_table(samples, args.window)
    total = sum(s.runs for s in samples)
    rate = total / args.seconds
    fast_rate = sum(s.finished["SUCCEEDED"] for s in samples) / args.seconds
    print(
        f"runs finished: {total} ({rate:.1f} runs/s, {fast_rate:.1f} succeeded/s); bare spawn loop "
        f"({WORKERS} workers): {bare_rate:.1f} runs/s -> ratio scheduler/bare {rate / bare_rate:.2f}"
    )
    all_latencies = [x for s in samples for x in s.latencies]
    if all_latencies:
        print(
            f"dispatch latency over the run: p50 {1000 * quantile(all_latencies, 50):.0f} ms, "
            f"p99 {1000 * quantile(all_latencies, 99):.0f} ms over {len(all_latencies)} runs"
        )
    print(
        f"stopped in {stopped:.1f} s; before start / after stop: fds {before[0]} / {after[0]}, "
        f"threads {before[1]} / {after[1]}, children {before[2]} / {after[2]}"
    )
    print(f"service.start() took {start_seconds:.1f} s ({args.orgs + 1} loop threads started)")
    verdict(samples, args.orgs * args.tasks)
    if end_snapshot is not None:
        growth(samples, end_snapshot, args.top)
    back = after[1] == before[1] and after[2] == 0
    print(f"threads back to their count before start and no child left after stop: {'yes' if back else 'NO'}")


if __name__ == "__main__":
    sys.exit(main())
