"""Rerun directories a killed service left behind (``<workspace>/reruns/``) are removed at the next start
and by housekeeping, once no run can still be using them: not while a RUNNING run is a rerun of their run,
nor while they are younger than the longest a run can take (another process may share the workspace)."""

import os
import time
from pathlib import Path

from scheduler.config import load_config
from scheduler.runs.reruns import LEFTOVER_MARGIN, rerun_directory, task_at
from scheduler.service.service import Service
from scheduler.status import RunStatus
from scheduler.store.models import RunTrigger
from scheduler.store.records import Run
from tests.helpers.orgs import QUICK, org_repo, write_config


def leftover(service: Service, run: Run) -> Path:
    """What a rerun of ``run`` writes before its service is killed: the run's commit, really extracted."""
    assert run.version is not None
    target = rerun_directory(service.config.workspace, run.id)
    task_at(service.checkouts(run.codops), run, run.version, target)
    assert (target / "code" / "job.py").read_text() == QUICK
    return target


def age(path: Path, service: Service) -> None:
    """Make ``path`` older than the longest a run of ``service`` can take."""
    limits = service.config.loops.limits
    old = time.time() - max(limits.codops, limits.metadata) - LEFTOVER_MARGIN - 60
    os.utime(path, (old, old))


def start_rerun(service: Service, run: Run) -> Run:
    return service.store.start_run(
        run.codops,
        run.task,
        loop=run.loop,
        executor=run.executor,
        version=run.version,
        trigger=RunTrigger.RERUN,
        rerun_of=run.id,
    )


def test_leftovers_of_a_killed_rerun_are_removed_at_restart_and_by_housekeeping(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"alpha": org_repo(tmp_path, "alpha", {"job": (QUICK, {})})})
    first = Service(load_config(config), environ={})
    try:
        (run,) = first.once()
        assert run.status is RunStatus.SUCCEEDED
        # The service is killed mid-rerun: the rerun is RUNNING, its directory written. An older leftover
        # is there from an earlier kill; a young one may be an extraction another process is doing.
        killed = start_rerun(first, run)
        old, young = leftover(first, run), leftover(first, run)
        age(old, first)
        stray_file = first.config.workspace / "reruns" / "stray"
        stray_file.write_text("not a directory")
        age(stray_file, first)
    finally:
        first.close()

    restarted = Service(load_config(config), environ={})
    try:
        closed = restarted.recover()
        assert [(r.id, r.status) for r in closed] == [(killed.id, RunStatus.LOST)]
        assert not old.exists() and not stray_file.exists()
        assert (young / "code" / "job.py").is_file(), "too young: it may be in use by another process"

        age(young, restarted)
        running = start_rerun(restarted, run)  # a RUNNING rerun of the same run: its directory is in use
        restarted.housekeeping.run_pass()
        assert young.is_dir()

        restarted.store.finish_run(running.id, RunStatus.SUCCEEDED, "exit code 0")
        restarted.housekeeping.run_pass()
        assert not young.exists()
        assert list((restarted.config.workspace / "reruns").iterdir()) == []
    finally:
        restarted.close()
