"""Crash and restart: the real service killed with SIGKILL at random moments, restarted each time.

Three organisations run quick, failing, slow, timing-out, process-spawning and metadata tasks from real
git repositories. The service (a ``peach-scheduler run`` child process) is killed with SIGKILL at a
random moment (during start-up and recovery, or while runs are going), then started again, many times;
a last start recovers and is stopped gracefully. Afterwards:

- no run is left RUNNING and no task is left in the RUNNING state;
- no process of any run survives (the ``PEACH_RUN_ID`` marker sweep finds none, and nobody holds a
  task's lock file, which every run's processes inherit);
- no task ran twice at once: each run takes an exclusive ``flock`` on its task's lock file outside the
  workspace and stamps ``start``/``overlap``/``end`` with its run id into a file; no ``overlap`` may
  appear, and the stored runs' intervals of one task do not overlap either;
- every run's record is complete: final status, finish time, duration, outcome, and a log file that
  says how the run ended (a run closed at restart says so in its log);
- every stamped process belongs to a stored run of its task, and a run recorded SUCCEEDED did its
  whole work.

The random moments come from a seed printed with the figures (``PEACH_CRASH_SEED`` replays one);
``PEACH_CRASH_KILLS`` sets the number of kills on SQLite (default 6; PostgreSQL gets half). Heavier:
``PEACH_CRASH_KILLS=100 .venv/bin/pytest -m crash``.
"""

import fcntl
import itertools
import os
import random
import signal
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from executors.process import find_run_processes
from scheduler.config import load_config
from scheduler.service.service import Service
from scheduler.status import RunStatus
from scheduler.store.models import TaskState
from scheduler.store.records import Run
from scheduler.store.store import Store
from tests.conftest import start_service, stopped
from tests.helpers.backends import create_database, drop_database, wait_for
from tests.helpers.orgs import log_text, org_repo, write_config

KILLS = int(os.environ.get("PEACH_CRASH_KILLS", "6"))
SEED = int(os.environ.get("PEACH_CRASH_SEED", str(random.SystemRandom().randrange(10**6))))

pytestmark = [pytest.mark.crash, pytest.mark.timeout(120 + 25 * KILLS)]

# Every task runs this: a non-blocking exclusive flock on its task's lock file (inherited by the
# children it starts, so a surviving child keeps holding it), then start/overlap/end stamps.
STAMPED = """\
import fcntl, os, subprocess, time


def stamp(stamps, key, event, run):
    with open(os.path.join(stamps, key + ".stamps"), "a") as out:
        out.write(f"{event} {run} {time.time():.6f}\\n")


def main(stamps, seconds=0.0, fail=False, children=False):
    run, key = os.environ["PEACH_RUN_ID"], os.environ["PEACH_CODOPS"] + "." + os.environ["PEACH_TASK"]
    lock = open(os.path.join(stamps, key + ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        stamp(stamps, key, "start", run)
    except BlockingIOError:
        stamp(stamps, key, "overlap", run)
    if children:
        subprocess.Popen(["sleep", "1000"], pass_fds=[lock.fileno()])
        subprocess.Popen(["setsid", "sleep", "1000"], pass_fds=[lock.fileno()])
    time.sleep(seconds)
    stamp(stamps, key, "end", run)
    if fail:
        raise RuntimeError("boom")
"""

# codops -> task -> extra YAML keys (args added below)
ORGS: dict[str, dict[str, dict[str, object]]] = {
    "alpha": {
        "quick": {},
        "fails": {"args": {"seconds": 0.2, "fail": True}},
        "slow": {"args": {"seconds": 2.5}},
    },
    "beta": {
        "family": {"args": {"seconds": 1.5, "children": True}},
        "quick": {},
        "hangs": {"args": {"seconds": 60, "children": True}, "timeout": "1.5s"},
    },
    "gamma": {
        "slow": {"args": {"seconds": 1.0}},
        "meta": {"args": {"seconds": 0.5}, "loop": "metadata"},
        "quick": {},
    },
}


def make_orgs(root: Path, stamps: Path) -> dict[str, Path]:
    repos = {}
    for codops, tasks in ORGS.items():
        files: dict[str, tuple[str, dict[str, object]]] = {}
        for name, extra in tasks.items():
            args = {"stamps": str(stamps), **extra.get("args", {})}  # type: ignore[dict-item]
            files[name] = (STAMPED, {**extra, "args": args})
        repos[codops] = org_repo(root, codops, files)
    return repos


def all_runs(store: Store) -> list[Run]:
    runs: list[Run] = []
    while page := store.list_runs(limit=1000, before=runs[-1].id if runs else None):
        runs += page
    return runs


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def crash_and_restart(tmp_path: Path, state_url: str | None, kills: int, services: list) -> None:
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    config = write_config(tmp_path, make_orgs(tmp_path, stamps), state_url, drain="2s")
    store = Store.from_url(load_config(config).database_url)
    log = tmp_path / "service.log"
    rng = random.Random(SEED)
    print(f"crash and restart: seed {SEED} (PEACH_CRASH_SEED={SEED} replays it), {kills} kills")
    with_runs = 0
    for kill in range(kills):
        before = {run.id for run in all_runs(store)}
        services.append(service := start_service(config, log))
        if rng.random() < 0.3 and (with_runs or kill < kills - 1):  # during start-up: migrations,
            # recovery, the first syncs (the last kill waits for runs if none was hit yet)
            moment = rng.uniform(0.0, 2.0)
        else:  # once this incarnation has started a run, at a random point of the runs going on
            wait_for(lambda b=before: {r.id for r in all_runs(store)} - b, 60, f"a run after restart {kill}")
            moment = rng.uniform(0.0, 3.0)
        try:  # the random moment is the input of the test, not a synchronisation: the service must live
            code = service.wait(moment)
            pytest.fail(f"the service exited by itself ({code}) before kill {kill + 1}:\n{tail(log)}")
        except subprocess.TimeoutExpired:
            pass
        os.kill(service.pid, signal.SIGKILL)
        service.wait()
        with_runs += bool(store.running_runs())
        with log.open("a") as out:
            out.write(f"--- test: SIGKILL {kill + 1} of {kills}\n")

    # the last start recovers, runs again, and is stopped gracefully (SIGTERM, 2 s drain, then kill)
    before = {run.id for run in all_runs(store)}
    services.append(service := start_service(config, log))
    wait_for(
        lambda: [r for r in all_runs(store) if r.id not in before and r.status.final],
        90,
        "a run finished after the last restart",
    )
    assert stopped(service, log) == 0, tail(log)
    assert "still going" not in log.read_text(errors="replace"), tail(log, 300)  # a loop stuck at stop

    runs = all_runs(store)
    print(
        f"kills survived: {kills} ({with_runs} with runs going); {len(runs)} runs, by status: "
        + ", ".join(
            f"{s}: {sum(r.status is s for r in runs)}" for s in RunStatus if s is not RunStatus.RUNNING
        )
    )
    assert with_runs > 0, "no kill hit a running run: the test proved nothing about recovery"
    check_no_run_left(store, runs)
    check_no_survivor(runs, stamps)
    check_no_overlap(runs, stamps)
    check_records(runs)
    store.close()


def check_no_run_left(store: Store, runs: list[Run]) -> None:
    assert [r.id for r in runs if r.status is RunStatus.RUNNING] == []
    assert [(t.codops, t.task) for t in store.task_states() if t.state is TaskState.RUNNING] == []


def check_no_survivor(runs: list[Run], stamps: Path) -> None:
    survivors = {run.id: pids for run in runs if (pids := find_run_processes(run.id))}
    assert survivors == {}
    for lock in stamps.glob("*.lock"):  # a process holding the lock would be a survivor without marker
        with lock.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if held


def stamped(stamps: Path) -> dict[str, list[tuple[str, str, float]]]:
    """task key (codops.task) -> (event, run id, time) in order."""
    events = {}
    for path in stamps.glob("*.stamps"):
        events[path.stem] = [
            (event, run, float(at))
            for event, run, at in (line.split() for line in path.read_text().splitlines())
        ]
    return events


def check_no_overlap(runs: list[Run], stamps: Path) -> None:
    events = stamped(stamps)
    overlaps = {key: [e for e in found if e[0] == "overlap"] for key, found in events.items()}
    assert {key: found for key, found in overlaps.items() if found} == {}
    by_task: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_task[f"{run.codops}.{run.task}"].append(run)
    for key, task_runs in by_task.items():
        task_runs.sort(key=lambda r: r.started_at)
        for earlier, later in itertools.pairwise(task_runs):
            assert earlier.finished_at is not None and earlier.finished_at <= later.started_at, (
                f"{key}: run {later.id} started at {later.started_at} while {earlier.id} went on "
                f"until {earlier.finished_at}"
            )
        ids = {run.id for run in task_runs}
        unknown = {run for _, run, _ in events.get(key, []) if run not in ids}
        assert unknown == set(), f"{key}: processes ran for runs the store does not know"
    for run in runs:
        mine = [event for event, run_id, _ in events.get(f"{run.codops}.{run.task}", []) if run_id == run.id]
        if run.status is RunStatus.SUCCEEDED or (run.status is RunStatus.FAILED and run.task == "fails"):
            assert mine == ["start", "end"], f"{run.id} ({run.status}): stamps {mine}"


def check_records(runs: list[Run]) -> None:
    for run in runs:
        what = f"run {run.id} of {run.codops}/{run.task} ({run.status}: {run.outcome})"
        assert run.status.final, what
        assert run.finished_at is not None and run.finished_at >= run.started_at, what
        assert run.duration_seconds is not None and run.duration_seconds >= 0, what
        assert run.outcome, what
        assert run.log_path is not None, f"{what}: no log"
        text = log_text(run)
        assert "run ended" in text or "closed as LOST" in text, f"{what}: its log does not say how it ended"
        if run.status is RunStatus.TIMED_OUT:
            assert run.task == "hangs", what
        if run.task == "hangs":
            assert run.status in (RunStatus.TIMED_OUT, RunStatus.LOST), what


def test_sigkill_at_random_moments_on_sqlite(tmp_path: Path, services: list) -> None:
    crash_and_restart(tmp_path, None, KILLS, services)


def test_sigkill_at_random_moments_on_postgresql(
    tmp_path: Path, services: list, postgres_admin_url: str
) -> None:
    url = create_database(postgres_admin_url, "crash_restart")
    try:
        crash_and_restart(tmp_path, url, max(2, KILLS // 2), services)
    finally:
        drop_database(postgres_admin_url, "crash_restart")


def test_recovery_ends_a_lost_runs_log_with_why_and_gives_one_to_a_run_without(tmp_path: Path) -> None:
    """What the fuzz found: a LOST run's log stopped mid-output, or did not exist when the service died
    between recording the run and preparing it."""
    repo = org_repo(tmp_path, "alpha", {"quick": (STAMPED, {"args": {"stamps": str(tmp_path)}})})
    service = Service(load_config(write_config(tmp_path, {"alpha": repo})), environ={})
    store = service.store
    unprepared = store.start_run("alpha", "quick", loop="alpha", executor="python", version=None)
    halfway_log = tmp_path / "halfway.log"
    halfway_log.write_text("2026-01-01T00:00:00.000Z half a line")
    halfway = store.start_run(
        "beta", "quick", loop="beta", executor="python", version=None, log_path=str(halfway_log)
    )

    assert {run.id for run in service.recover()} == {unprepared.id, halfway.id}

    given = store.get_run(unprepared.id)
    assert given.status is RunStatus.LOST and given.log_path is not None
    assert Path(given.log_path) == tmp_path / "workspace" / "runs" / unprepared.id / "output.log.gz"
    assert "[peach] run closed as LOST at restart: the scheduler stopped" in log_text(given)
    lines = log_text(store.get_run(halfway.id)).splitlines()  # compressed when the run was settled
    assert lines[0] == "2026-01-01T00:00:00.000Z half a line"
    assert lines[1].endswith(
        "[peach] run closed as LOST at restart: " + (store.get_run(halfway.id).outcome or "")
    )
    service.close()
