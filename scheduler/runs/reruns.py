"""Running a past run again: its task at the run's recorded commit, with its dependency set and arguments.

A rerun is requested (API, CLI, dashboard) as a trigger carrying ``rerun_of``; the task's loop takes it
like a manual trigger, so it obeys the same rules (one run at a time per loop, the same timeouts). The
loop then:

1. finds the commit in one of the organisation's checkouts (``git cat-file``; nothing is fetched: a commit
   the repository no longer has is a clear error, not a guess);
2. writes that commit's tree into ``<workspace>/reruns/<id>/`` with ``git archive`` (read-only for the
   live checkout, which the loops keep moving to the branch head), and loads its task definitions;
3. runs the task found there, its requirements replaced by the original run's installed set (the frozen
   ``name==version`` pins of its manifest), as a new run with ``trigger = rerun`` and ``rerun_of``;
4. removes the directory.

When the commit or the task is gone, the rerun is still recorded, as a FAILED run saying why.

A service killed mid-rerun (SIGKILL) leaves its directory behind. Nothing stops two processes (``run``
and ``once``) from sharing a workspace, so ``remove_leftovers`` (at restart recovery and every
housekeeping pass) only removes a directory that no RUNNING run in the store is a rerun of and that is
older than the longest a run can take (the longest loop timeout, plus a margin for environment builds,
kill grace and log collection).
"""

import logging
import secrets
import shutil
import subprocess
import tarfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from scheduler.errors import PeachError, RerunError
from scheduler.limits import LoopLimits
from scheduler.runs.supervise import Runtime, execute
from scheduler.spec.definitions import Task, load_definitions
from scheduler.status import RunStatus
from scheduler.store.models import RunTrigger
from scheduler.store.records import Manifest, Run, Trigger
from scheduler.store.store import Store

log = logging.getLogger(__name__)

GIT_TIMEOUT = 120.0
LEFTOVER_MARGIN = 1800.0  # seconds past the longest loop timeout before a rerun directory is a leftover


def find_checkout(checkouts: Sequence[Path], commit: str, codops: str, timeout: float = GIT_TIMEOUT) -> Path:
    """The first checkout of ``codops`` that holds ``commit``; ``RerunError`` when none does."""
    for path in checkouts:
        if not (path / ".git").exists():
            continue
        probe = ["git", "-C", str(path), "cat-file", "-e", f"{commit}^{{commit}}"]
        try:
            if subprocess.run(probe, capture_output=True, timeout=timeout, check=False).returncode == 0:
                return path
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("%s: cannot look for commit %s in %s: %s", codops, commit[:12], path, exc)
    raise RerunError(
        f"commit {commit[:12]} is no longer in the repositories of {codops} "
        "(force-pushed away or garbage-collected): it cannot be run again"
    )


def check_request(checkouts: Sequence[Path], run: Run, manifest: Manifest) -> None:
    """Refuse a rerun request at once when the run's commit is gone from every checkout."""
    if manifest.commit is None:
        raise RerunError(f"run {run.id} has no recorded commit to run again")
    find_checkout(checkouts, manifest.commit, run.codops)


def task_at(
    checkouts: Sequence[Path], run: Run, commit: str, target: Path, limits: LoopLimits | None = None
) -> Task:
    """Write ``commit``'s tree into ``target`` and return the run's task as defined there."""
    source = find_checkout(checkouts, commit, run.codops)
    target.mkdir(parents=True)
    archive = ["git", "-C", str(source), "archive", "--format=tar", commit]
    with subprocess.Popen(archive, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as git:
        assert git.stdout is not None
        try:
            with tarfile.open(fileobj=git.stdout, mode="r|") as tar:
                tar.extractall(target, filter="data")
        except tarfile.TarError as exc:
            git.kill()
            raise RerunError(f"cannot extract commit {commit[:12]}: {exc}") from exc
        error = git.stderr.read().decode("utf-8", "replace").strip() if git.stderr else ""
        if git.wait(GIT_TIMEOUT) != 0:
            raise RerunError(f"cannot extract commit {commit[:12]}: {error or 'git archive failed'}")
    definitions = load_definitions(target, allowed_codops=[run.codops], limits=limits)
    task = next((t for t in definitions.tasks if t.name == run.task), None)
    if task is None:
        why = [str(p) for p in definitions.errors if p.task in (run.task, None)]
        detail = f": {'; '.join(why[:3])}" if why else ""
        raise RerunError(f"task {run.codops}/{run.task} is not defined at commit {commit[:12]}{detail}")
    return task


def rerun(
    runtime: Runtime,
    request: Trigger,
    checkouts: Sequence[Path],
    workspace: Path,
    limits: LoopLimits | None = None,
) -> Run | None:
    """Run ``request.rerun_of`` again (in the calling loop's thread); its new run, or None when the task
    already has a running run."""
    assert request.rerun_of is not None
    store = runtime.store
    original = store.get_run(request.rerun_of)
    target = rerun_directory(workspace, original.id)
    try:
        manifest = store.get_manifest(original.id)
        if manifest.commit is None:
            raise RerunError(f"run {original.id} has no recorded commit to run again")
        task = task_at(checkouts, original, manifest.commit, target, limits)
        pins = manifest.frozen if manifest.frozen is not None else task.requirements
        log.info(
            "rerun of %s (%s) at %s with %d pinned requirement(s)",
            original.id,
            task.key,
            manifest.commit[:12],
            len(pins),
        )
        return execute(
            runtime,
            replace(task, requirements=tuple(pins)),
            manifest.commit,
            RunTrigger.RERUN,
            rerun_of=original.id,
        )
    except PeachError as exc:
        return _not_started(runtime, original, str(exc))
    finally:
        shutil.rmtree(target, ignore_errors=True)


def rerun_directory(workspace: Path, original: str) -> Path:
    """A fresh directory name for a rerun of run ``original``: ``<workspace>/reruns/<original>-<hex>``."""
    return workspace / "reruns" / f"{original}-{secrets.token_hex(3)}"


def remove_leftovers(
    workspace: Path, store: Store, limits: LoopLimits, now: float | None = None
) -> list[Path]:
    """Remove the rerun directories no run can still be using (see the module's docstring); the removed."""
    root = workspace / "reruns"
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    oldest = max(limits.codops, limits.metadata) + LEFTOVER_MARGIN
    in_use = {run.rerun_of for run in store.running_runs() if run.rerun_of}
    removed = []
    for entry in sorted(root.iterdir()):
        try:
            age = now - entry.lstat().st_mtime
        except FileNotFoundError:  # its rerun has just ended
            continue
        if entry.name.rpartition("-")[0] in in_use or age < oldest:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        log.info("removed the rerun leftover %s (%.0f s old)", entry, age)
        removed.append(entry)
    return removed


def _not_started(runtime: Runtime, original: Run, why: str) -> Run | None:
    """Record a rerun that could not start, so that whoever asked for it sees why."""
    log.warning("rerun of %s (%s/%s) not started: %s", original.id, original.codops, original.task, why)
    try:
        run = runtime.store.start_run(
            original.codops,
            original.task,
            loop=original.loop,
            executor=original.executor,
            version=original.version,
            trigger=RunTrigger.RERUN,
            rerun_of=original.id,
        )
    except PeachError:
        return None  # the task is running: the reason is in the service log
    runtime.metrics.run_started(run)
    finished = runtime.store.finish_run(run.id, RunStatus.FAILED, f"not started: {why}", error=why)
    runtime.metrics.run_finished(finished)
    return finished
