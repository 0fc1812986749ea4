"""Restart recovery, the service's side: each executor is asked about the runs of its kind, and its answer
is applied here, in one place for every kind.

The store's RUNNING runs go to the executor of their kind as ``RunningRun`` (executors never see the
store); each executor answers with a ``Recovery`` (``executors.base``). A closed run gets why in its log
(a run the previous process had not given a log yet gets one), its artifacts and log settled, its record
finished and counted. A re-attached run gets a supervisor thread (``scheduler.runs.supervise.resume``)
that finishes it by the same path as any run. No kind is named here.
"""

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from executors.base import Executor, Recovery, RunningRun
from executors.logs import append_note
from scheduler.runs.artifacts import settle
from scheduler.runs.supervise import Runtime, resume
from scheduler.status import RunStatus
from scheduler.store.records import Run

log = logging.getLogger(__name__)


@dataclass
class Recovered:
    """What a restart recovery did: the runs it closed, and the supervisors of the runs it re-attached."""

    closed: list[Run] = field(default_factory=list)
    resumed: list[threading.Thread] = field(default_factory=list)


def running_run(run: Run) -> RunningRun:
    return RunningRun(
        run_id=run.id,
        codops=run.codops,
        task=run.task,
        executor=run.executor,
        handle=run.handle,
        deadline=run.deadline.timestamp() if run.deadline is not None else None,
        log_path=Path(run.log_path) if run.log_path else None,
    )


def recover(runtime: Runtime, log_path: Callable[[str], Path]) -> Recovered:
    """Close or re-attach every run the store holds RUNNING; ``log_path(run_id)`` is where a run that
    has none recorded gets its log."""
    running = runtime.store.running_runs()
    records = {run.id: run for run in running}
    recovery = Recovery()
    for kind, executor in runtime.executors.items():
        mine = [running_run(run) for run in running if run.executor == kind]
        if mine:
            recovery.merge(_ask(executor, mine))
    for run in running:  # a kind no executor is configured for: nothing can be asked about it
        if run.id not in recovery.reattached and run.id not in recovery.closed:
            recovery.close(
                run.id, RunStatus.LOST, f"no {run.executor.value} executor to recover it at restart"
            )
    recovered = Recovered()
    for run_id, outcome in recovery.closed.items():
        recovered.closed.append(_close(runtime, records[run_id], outcome.status, outcome.summary, log_path))
    for run_id, execution in recovery.reattached.items():
        thread = threading.Thread(
            target=resume,
            args=(runtime, records[run_id], execution),
            name=f"peach-resume-{run_id}",
            daemon=True,
        )
        thread.start()
        recovered.resumed.append(thread)
    return recovered


def _ask(executor: Executor, runs: list[RunningRun]) -> Recovery:
    """An executor's answer; one that fails closes its runs LOST rather than leave them RUNNING."""
    try:
        return executor.recover(runs)
    except Exception as exc:
        log.exception("restart recovery: the %s executor failed", executor.name)
        recovery = Recovery()
        why = f"restart recovery of the {executor.name} executor failed: {exc!r}"
        for run in runs:
            recovery.close(run.run_id, RunStatus.LOST, why)
        return recovery


def _close(
    runtime: Runtime, run: Run, status: RunStatus, summary: str, log_path: Callable[[str], Path]
) -> Run:
    ended = last_alive(run)  # not the restart: the time the scheduler was down is not the run's
    _note(runtime, run, f"run closed as {status.value} at restart: {summary}", log_path)
    try:  # what it wrote is kept as for any run; its log compressed
        settle(runtime.store, run.id, runtime.artifacts)
    except Exception:
        log.exception("run %s: keeping its artifacts and log at restart failed", run.id)
    finished = runtime.store.finish_run(run.id, status, summary, ended_at=ended)
    runtime.metrics.run_finished(finished)
    log.warning("run %s of %s/%s closed as %s: %s", run.id, run.codops, run.task, status.value, summary)
    return finished


def last_alive(run: Run) -> datetime | None:
    """The last moment a run left RUNNING by a dead scheduler was known alive: its log's last write (its
    supervisor touches it every few seconds, ``supervise.HEARTBEAT``) or its last progress, whichever
    is later; None when neither is known (the run then ends now, as before)."""
    moments = [run.progress_at] if run.progress_at else []
    try:
        if run.log_path:
            moments.append(datetime.fromtimestamp(os.stat(run.log_path).st_mtime, UTC))
    except OSError:
        pass
    return max(moments, default=None)


def _note(runtime: Runtime, run: Run, text: str, log_path: Callable[[str], Path]) -> None:
    """End the run's log with why it was closed, so that it does not just stop mid-output. A run the
    previous process recorded but had not yet given a log (it died in between) gets one."""
    path = Path(run.log_path) if run.log_path else log_path(run.id)
    try:
        append_note(path, text)
        if run.log_path is None:
            runtime.store.attach(run.id, log_path=str(path))
    except OSError as exc:
        log.warning("run %s: cannot note in its log %s why it was closed: %s", run.id, path, exc)
