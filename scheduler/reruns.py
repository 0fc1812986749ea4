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
"""

import logging
import secrets
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from scheduler.definitions import LoopLimits, Task, load_definitions
from scheduler.errors import PeachError, RerunError
from scheduler.models import RunStatus, RunTrigger
from scheduler.records import Manifest, Run, Trigger
from scheduler.runs import Runtime, execute

log = logging.getLogger(__name__)

GIT_TIMEOUT = 120.0


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
    target = workspace / "reruns" / f"{original.id}-{secrets.token_hex(3)}"
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
