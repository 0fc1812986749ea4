"""1,000 organisations x 10 trivial tasks on one scheduler process, with real git repositories, real
child processes and SQLite. Prints, for a sustained period:

- runs per second, next to a bare loop spawning the same runner scripts with 4 workers per core
  (measured in the same run, before and after the service, averaged): the ratio is what the scheduler's
  work (a git sync before every run, records, environments, log capture) costs in throughput;
- the scheduler's own CPU (children excluded) and RSS at start, end and peak;
- dispatch latency: from a slot being granted to a due task (capacity waiting is not overhead) to the
  task's process running (p50, p99);
- the ``/metrics`` scrape time with every task's series present (median of 20);
- git processes started per run, and the service's threads at the end of the period;

and, as its last line, all of it in one: ``scale: runs/s R (bare B, ratio X); dispatch p50 A ms p99 P ms;
own CPU C ms/run; git processes G per run; metrics S ms; rss M MiB; threads T``.

With ``--push RATE``, the period commits RATE times a second to random organisations' repositories, each
with a push webhook (Gitea's), on ``git.freshness: 1h`` (no polling), and prints commit -> run start.

Run: .venv/bin/python bench/service_1000.py [--orgs 1000] [--tasks 10] [--seconds 60] [--freshness 2s]
[--push RATE]
"""

import argparse
import hashlib
import hmac
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import yaml

from executors.process import ProcessExecution
from executors.runner import runner_script
from scheduler.capacity import Capacity
from scheduler.config import load_config
from scheduler.repos import git as gitrun
from scheduler.service import loops
from scheduler.service.service import Service
from scheduler.spec.definitions import load_definitions
from scheduler.store import database

GIT = ["git", "-c", "user.name=b", "-c", "user.email=b@localhost", "-c", "init.defaultBranch=master"]
CODE = "def main():\n    pass\n"
WORKERS = 4 * (os.cpu_count() or 1)


def make_repos(root: Path, orgs: int, tasks: int) -> dict[str, Path]:
    def one(i: int) -> tuple[str, Path]:
        codops = f"org{i:04d}"
        repo = root / codops
        (repo / "code").mkdir(parents=True)
        (repo / "code" / "t.py").write_text(CODE)
        body = {
            f"t{k:02d}": {"notebook": "code/t.py", "method": "main", "executor": "python"}
            for k in range(tasks)
        }
        (repo / "peach.yaml").write_text(yaml.safe_dump({"codops": codops, "tasks": body}))
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "tasks"]):
            subprocess.run([*GIT, "-C", str(repo), *args], check=True)
        return codops, repo

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, range(orgs)))


def rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def bare(runners: list[Path], python: str, seconds: float) -> float:
    """Runs per second of a plain loop spawning the runner scripts with enough workers to fill the cores."""
    done = 0
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while time.monotonic() < end:
            subprocess.run([python, str(runners[i % len(runners)])], check=True, capture_output=True)
            i += WORKERS
            with lock:
                done += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done / seconds


class TimedLock:
    """The SQLite writer lock, timing how long each writer waited for it."""

    def __init__(self, lock: "threading.RLock") -> None:
        self.lock, self.waits, self.writers = lock, [], Counter()

    def __enter__(self) -> None:
        t0 = time.perf_counter()
        self.lock.acquire()
        self.waits.append(time.perf_counter() - t0)
        frame = sys._getframe(1)
        while frame is not None and not (
            frame.f_code.co_filename.endswith("store/store.py") and not frame.f_code.co_name.startswith("_")
        ):
            frame = frame.f_back
        self.writers[frame.f_code.co_name if frame is not None else "?"] += 1

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def push_commits(repos: dict[str, Path], url: str, secret: bytes, rate: float, until: float) -> list:
    """Commits to random organisations' repositories, ``rate`` per second until ``until``, each followed
    by a Gitea push webhook; (commit, pushed at) of each."""
    rng, pushed = random.Random(18), []
    while time.monotonic() < until:
        repo = repos[rng.choice(sorted(repos))]
        (repo / "code" / "t.py").write_text(f"{CODE}# {time.time()}\n")
        subprocess.run([*GIT, "-C", str(repo), "commit", "-qam", "push"], check=True)
        head = subprocess.run([*GIT, "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
        body = json.dumps({"ref": "refs/heads/master", "repository": {"clone_url": str(repo)}}).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Gitea-Event": "push",
            "X-Gitea-Signature": hmac.new(secret, body, hashlib.sha256).hexdigest(),
        }
        request = urllib.request.Request(url, body, headers)  # noqa: S310 (http on loopback)
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            response.read()
        pushed.append((head.stdout.strip(), datetime.now(UTC)))
        time.sleep(1 / rate)  # the pace of the pushes: the bench's input
    return pushed


def write_config(
    root: Path, repos: dict[str, Path], loops: dict[str, object], git: dict[str, object] | None = None
) -> Path:
    """``root/config.yaml``: one organisation per repository, workspace under ``root``, any free port."""
    path = root / "config.yaml"
    organisations = {codops: {"repositories": [{"url": str(repo)}]} for codops, repo in repos.items()}
    path.write_text(
        yaml.safe_dump(
            {
                "workspace": str(root / "ws"),
                "http": {"host": "127.0.0.1", "port": 0},
                "loops": loops,
                "git": git or {},
                "organisations": organisations,
            }
        )
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orgs", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--freshness", default="2s", help="git.freshness (default: the default, 2s)")
    parser.add_argument(
        "--push",
        type=float,
        default=0,
        metavar="RATE",
        help="commit RATE times a second, each with a push webhook, and git.freshness 1h (no polling)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.monotonic()
        repos = make_repos(root / "repos", args.orgs, args.tasks)
        print(
            f"{args.orgs} organisations x {args.tasks} tasks: "
            f"repositories made in {time.monotonic() - started:.0f} s"
        )
        freshness = "1h" if args.push else args.freshness
        config_path = write_config(root, repos, {"pause": "1s"}, {"freshness": freshness})
        os.environ["PEACH_WEBHOOK_SECRET"] = secret = "bench-webhook-secret"  # noqa: S105
        picked: dict[int, float] = {}
        latencies: list[float] = []
        original_run_due, original_start = loops.Loop.run_due, ProcessExecution.start

        def run_due(self, organisation, name, triggered, synced=None):  # type: ignore[no-untyped-def]
            picked[threading.get_ident()] = time.monotonic()
            return original_run_due(self, organisation, name, triggered, synced)

        original_acquire = Capacity.acquire

        def acquire(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            grant = original_acquire(self, *args, **kwargs)
            picked[threading.get_ident()] = time.monotonic()  # a slot is free and the task is due
            return grant

        Capacity.acquire = acquire  # type: ignore[method-assign]

        def start(self):  # type: ignore[no-untyped-def]
            original_start(self)
            t0 = picked.get(threading.get_ident())
            if t0 is not None:
                latencies.append(time.monotonic() - t0)

        loops.Loop.run_due, ProcessExecution.start = run_due, start  # type: ignore[method-assign]
        git_started, commands = [0], []
        original_git = gitrun.run

        def counted_git(*args, **kwargs):  # type: ignore[no-untyped-def]
            git_started[0] += 1  # one git process per call (its remote helper not counted)
            commands.append(args[1][0])
            return original_git(*args, **kwargs)

        gitrun.run = counted_git
        definitions = load_definitions(next(iter(repos.values())))
        runners = []
        for task in definitions.tasks:
            runners.append(root / f"{task.name}.py")
            runners[-1].write_text(runner_script(task))
        bare_seconds = min(args.seconds, 15)
        bare_before = bare(runners, sys.executable, bare_seconds)  # before and after: same background load
        service = Service(load_config(config_path))
        writer = database._SQLITE_WRITERS[service.store.engine] = TimedLock(
            database._SQLITE_WRITERS[service.store.engine]
        )
        rss_start = rss_kib()
        service.start()

        def finished_runs() -> int:
            with service.store.engine.connect() as connection:
                query = "select count(*) from runs where status != 'RUNNING'"
                return int(connection.exec_driver_sql(query).scalar_one())

        def organisations_served() -> int:
            with service.store.engine.connect() as connection:
                return int(connection.exec_driver_sql("select count(distinct codops) from runs").scalar_one())

        warm_until = time.monotonic() + max(args.seconds, 120)
        while organisations_served() < args.orgs and time.monotonic() < warm_until:
            time.sleep(1)  # warm-up: every organisation cloned and run once (first syncs are set-up)
        cpu_start = resource.getrusage(resource.RUSAGE_SELF)
        runs_before, git_at_start, commands[:], latencies[:] = finished_runs(), git_started[0], [], []
        writer.waits[:] = []
        writer.writers.clear()
        pushes: list = []
        if args.push:
            hook = f"http://127.0.0.1:{service.port}/api/v1/hooks/git"
            pushes = push_commits(repos, hook, secret.encode(), args.push, time.monotonic() + args.seconds)
        else:
            time.sleep(args.seconds)  # the measured period: the service works on its own meanwhile
        cpu_end = resource.getrusage(resource.RUSAGE_SELF)
        rss_end, rss_peak = rss_kib(), rss_kib("VmHWM")
        gits, threads = git_started[0] - git_at_start, threading.active_count()
        waits, writes, period_latencies = list(writer.waits), writer.writers.copy(), list(latencies)
        period_commands, runs = list(commands), finished_runs() - runs_before  # the period's only

        def push_delays() -> list[float]:
            """Seconds from each push to the first run at its commit, for those run yet."""
            delays = []
            with service.store.engine.connect() as connection:
                for commit, at in pushes:
                    query = "select min(started_at) from runs where version = ?"
                    started = connection.exec_driver_sql(query, (commit,)).scalar_one()
                    if started is not None:
                        started_at = datetime.fromisoformat(str(started)).replace(tzinfo=UTC)
                        delays.append((started_at - at).total_seconds())
            return delays

        tail_until = time.monotonic() + 300  # a saturated host runs a pushed commit when its turn comes
        while len(delays := push_delays()) < len(pushes) and time.monotonic() < tail_until:
            time.sleep(2)
        scrapes = []
        for _ in range(20):
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{service.port}/metrics", timeout=60) as response:
                size = len(response.read())
            scrapes.append(time.perf_counter() - t0)
        service.request_force_stop()
        service.wait_stopped(60)
        service.close()
        loops.Loop.run_due, ProcessExecution.start = original_run_due, original_start  # type: ignore[method-assign]
        gitrun.run = original_git
        Capacity.acquire = original_acquire  # type: ignore[method-assign]
        env_python = str(next((root / "ws" / "environments" / "envs").glob("*/bin/python")))
        bare_rate = (bare_before + bare(runners, env_python, bare_seconds)) / 2

    cpu = (cpu_end.ru_utime + cpu_end.ru_stime) - (cpu_start.ru_utime + cpu_start.ru_stime)
    rate = runs / args.seconds
    print(f"runs finished in {args.seconds:.0f} s:   {runs}  ({rate:.1f} runs/s)")
    print(
        f"bare spawn loop ({WORKERS} workers): {bare_rate:.1f} runs/s"
        f"  -> ratio scheduler/bare {rate / bare_rate:.2f}"
    )
    print(
        f"scheduler CPU (own, children excluded): {cpu:.1f} s = {100 * cpu / args.seconds:.0f}% of one core"
    )
    print(
        f"scheduler RSS: start {rss_start / 1024:.0f} MiB, end {rss_end / 1024:.0f} MiB, "
        f"peak {rss_peak / 1024:.0f} MiB"
    )
    if period_latencies:
        q = statistics.quantiles(period_latencies, n=100)
        print(
            f"dispatch latency (slot granted -> process running): p50 {q[49] * 1000:.0f} ms, "
            f"p99 {q[98] * 1000:.0f} ms "
            f"over {len(period_latencies)} runs"
        )
    if len(waits) > 1:
        w = statistics.quantiles(waits, n=100)
        print(
            f"state writes: {len(waits) / args.seconds:.0f}/s; waited for SQLite's writer lock: "
            f"p50 {w[49] * 1000:.1f} ms, p99 {w[98] * 1000:.1f} ms, "
            f"{100 * sum(waits) / args.seconds / max(threads, 1):.1f}% of the threads' time"
        )
        print("state writes by kind:", dict(writes.most_common()))
    if pushes:
        d = statistics.quantiles(delays, n=100) if len(delays) > 1 else [float("nan")] * 99
        print(
            f"push: {len(pushes)} commits pushed, {len(delays)} run within 300 s after the period; "
            f"commit -> run start p50 {d[49]:.1f} s p99 {d[98]:.1f} s"
        )
    metrics_ms = statistics.median(scrapes) * 1000
    print("git commands in the period:", {c: period_commands.count(c) for c in sorted(set(period_commands))})
    print(f"/metrics scrape: median {metrics_ms:.0f} ms for {size / 1024:.0f} KiB")
    q = statistics.quantiles(period_latencies, n=100) if len(period_latencies) > 1 else [float("nan")] * 99
    print(
        f"scale: runs/s {rate:.1f} (bare {bare_rate:.1f}, ratio {rate / bare_rate:.2f}); "
        f"dispatch p50 {q[49] * 1000:.0f} ms p99 {q[98] * 1000:.0f} ms; "
        f"own CPU {1000 * cpu / max(runs, 1):.0f} ms/run; git processes {gits / max(runs, 1):.2f} per run; "
        f"metrics {metrics_ms:.0f} ms; rss {rss_peak / 1024:.0f} MiB; threads {threads}"
    )


if __name__ == "__main__":
    sys.exit(main())
