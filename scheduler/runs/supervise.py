"""One run of one task, from its record to its outcome: the supervisor every loop uses.

``execute`` records the run (the store refuses a second running run of the same task), prepares it
(code and environment), starts it, and watches it until it ends, is killed on request, or the service
is told to kill everything. Whatever happens, the run is closed with an honest status and the loop
goes on: no exception from one run reaches its loop. While a run goes on, the progress it reports is
written to its record, throttled (``ProgressRecorder``), and so is its handle whenever it changes.

``resume`` supervises a run an executor re-attached after a restart (``Executor.recover``): the same
watching and the same finishing path (artifacts and log settled, record closed, metrics) as any run.

The run's time limit is chosen here once (``Runtime.timeout_for``, from ``LoopLimits.for_run``): the
store's deadline and the executor's ``RunRequest.timeout`` are both that number.

Before its record, a run waits for its capacity slot (``scheduler.capacity``; ``Runtime.capacity``), its
task shown ``PENDING`` with the reason meanwhile. The wait is not counted against its timeout (the
deadline is set once the slot is granted) and is recorded on the run (``waited_seconds``).
"""

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from executors.base import Execution, Executor, Outcome, RunRequest
from executors.progress import Progress
from scheduler.capacity import Capacity, CapacityError, Demand, Grant
from scheduler.errors import AlreadyRunning, EnvironmentBuildError, PeachError
from scheduler.limits import LoopLimits
from scheduler.metrics import Metrics
from scheduler.names import METADATA_LOOP
from scheduler.notify.notifier import Notifier
from scheduler.runs import manifests
from scheduler.runs.artifacts import ArtifactPolicy, settle
from scheduler.spec.definitions import Task
from scheduler.spec.taskspec import ExecutorKind
from scheduler.status import RunStatus
from scheduler.store.models import RunTrigger
from scheduler.store.records import Run
from scheduler.store.store import Store
from scheduler.workers import release_worker

log = logging.getLogger(__name__)
T = TypeVar("T")
HEARTBEAT = 5.0  # seconds between two touches of a supervised run's log (its last moment known alive)


class KillRequests:
    """Runs someone asked to kill (API, CLI), by run id, with the reason; taken by their supervisor."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reasons: dict[str, str] = {}

    def request(self, run_id: str, reason: str) -> None:
        with self._lock:
            self._reasons[run_id] = reason

    def __len__(self) -> int:
        with self._lock:
            return len(self._reasons)

    def take(self, run_id: str) -> str | None:
        with self._lock:
            return self._reasons.pop(run_id, None)


@dataclass
class Runtime:
    """What every loop shares: the store, metrics, executors, limits and the service's stop signals.

    ``stopping`` means start no new run; ``killing`` means kill the runs that are going.
    """

    store: Store
    metrics: Metrics
    executors: Mapping[ExecutorKind, Executor]
    limits: LoopLimits = field(default_factory=LoopLimits)
    stopping: threading.Event = field(default_factory=threading.Event)
    killing: threading.Event = field(default_factory=threading.Event)
    kills: KillRequests = field(default_factory=KillRequests)
    artifacts: ArtifactPolicy = field(default_factory=ArtifactPolicy)
    poll: float = 0.5  # how often a supervisor looks at kill requests while its run goes on
    progress_interval: float = 1.0  # at most one progress write per run in this many seconds
    capacity: Capacity | None = None  # the host's slots; None: runs never wait
    run_memory_mib: int | None = None  # a local run's memory when its task declares none
    notifier: Notifier | None = None  # told of every closed run (state changes are notified)

    def timeout_for(self, task: Task) -> float:
        """The run's effective limit in seconds: the one place a run's time limit is chosen."""
        return self.limits.for_run(task.loop, task.definition.timeout)

    def demand(self, task: Task) -> Demand:
        """What a run of ``task`` holds on this host: its executor's shape, with its memory if local."""
        executor = self.executors.get(task.executor)
        demand = executor.demand(task) if executor is not None else Demand()
        memory = task.definition.resources.memory_mib or self.run_memory_mib
        return replace(demand, memory_mib=memory or 0) if demand.local else demand


def execute(
    runtime: Runtime,
    task: Task,
    version: str | None,
    trigger: RunTrigger = RunTrigger.SCHEDULE,
    stale: str | None = None,
    *,
    rerun_of: str | None = None,
    due: datetime | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Run | None:
    """Run ``task`` once and return its closed record; None when the task already has a running run, or
    when the service stops (or ``cancelled()`` turns true) while the run waits for its slot, or when its
    executor says it must wait (``Executor.waiting``: the task is PENDING with that reason).

    ``stale`` says why ``version`` is not the branch head (the repository's sync failed): the run's
    outcome says so too (SPEC §4.1). ``due``: when the run became due, its place in the capacity queue.
    """
    executor = runtime.executors.get(task.executor)
    waiting = executor.waiting(task) if executor is not None else None
    if waiting is not None:  # e.g. its environment's build is backing off: no run, the task says why
        log.info("%s: not started, %s", task.key, waiting)
        runtime.store.set_waiting(task.codops, task.name, waiting)
        return None
    demand = runtime.demand(task)
    grant: Grant | None = None
    refused: CapacityError | None = None
    if runtime.capacity is not None and demand:
        try:
            grant = _wait_for_slot(runtime, task, demand, due, cancelled)
        except CapacityError as exc:
            refused = exc
        if grant is None and refused is None:
            return None
    try:
        return _run(runtime, task, version, trigger, stale, rerun_of, grant, refused)
    finally:
        if grant is not None:
            grant.release()


def _wait_for_slot(
    runtime: Runtime, task: Task, demand: Demand, due: datetime | None, cancelled: Callable[[], bool] | None
) -> Grant | None:
    """The run's capacity grant, its task PENDING with the reason while it waits; None if cancelled."""
    assert runtime.capacity is not None
    waited = False

    def waiting(reason: str) -> None:
        nonlocal waited
        waited = True
        log.info("%s: %s", task.key, reason)
        try:
            runtime.store.set_waiting(task.codops, task.name, reason)
        except SQLAlchemyError:
            runtime.metrics.state_error("run")
            log.warning("%s: its waiting reason was not recorded", task.key, exc_info=True)

    def stop() -> bool:
        return runtime.stopping.is_set() or (cancelled is not None and cancelled())

    when = (due or datetime.now(UTC)).timestamp()
    grant = runtime.capacity.acquire(
        task.codops, demand, when, metadata=task.loop == METADATA_LOOP, cancelled=stop, waiting=waiting
    )
    if grant is not None:
        runtime.metrics.capacity_waited(task.codops, grant.waited_seconds)
    elif waited:
        with contextlib.suppress(SQLAlchemyError):
            runtime.store.set_waiting(task.codops, task.name, None)
    return grant


def _run(
    runtime: Runtime,
    task: Task,
    version: str | None,
    trigger: RunTrigger,
    stale: str | None,
    rerun_of: str | None,
    grant: Grant | None,
    refused: CapacityError | None,
) -> Run | None:
    timeout = runtime.timeout_for(task)
    deadline = datetime.now(UTC) + timedelta(seconds=timeout)
    try:
        run = runtime.store.start_run(
            task.codops,
            task.name,
            loop=task.loop,
            executor=task.executor,
            version=version,
            trigger=trigger,
            deadline=deadline,
            rerun_of=rerun_of,
            waited_seconds=grant.waited_seconds if grant is not None else None,
        )
    except AlreadyRunning:
        log.warning("%s: not started, it already has a running run", task.key)
        return None
    runtime.metrics.run_started(run)
    try:
        if refused is not None:
            outcome = Outcome(RunStatus.FAILED, f"not started: {refused}", error=str(refused))
        else:
            outcome = _supervise(runtime, run, task, timeout, version, grant)
    except Exception as exc:  # a bug of ours must not take the loop down, nor leave the run RUNNING
        log.exception("run %s of %s: supervision failed", run.id, task.key)
        outcome = Outcome(RunStatus.FAILED, f"internal error in the scheduler: {exc!r}", error=repr(exc))
    summary = f"{outcome.summary} (not the branch head: {stale})" if stale else outcome.summary
    return _close(runtime, run, outcome, summary, task)


def resume(runtime: Runtime, run: Run, execution: Execution) -> Run:
    """Supervise a run re-attached after a restart (already going) to its end; its closed record."""
    runtime.metrics.run_started(run)
    try:
        outcome = _watch(runtime, run, execution, {})
    except Exception as exc:
        log.exception("run %s of %s/%s: supervision failed", run.id, run.codops, run.task)
        outcome = Outcome(RunStatus.FAILED, f"internal error in the scheduler: {exc!r}", error=repr(exc))
    finally:
        if execution.outcome is None:
            execution.kill("the scheduler could not supervise the run")
    return _close(runtime, run, outcome, outcome.summary)


def _close(runtime: Runtime, run: Run, outcome: Outcome, summary: str, task: Task | None = None) -> Run:
    """The one finishing path of a run: its artifacts kept and log compressed, its record closed, the
    notifier told (``task``: its definition, when at hand)."""
    key = f"{run.codops}/{run.task}"
    ended = datetime.fromtimestamp(outcome.finished_at, UTC) if outcome.finished_at is not None else None
    try:  # keep the run's artifacts, compress its log (again, once the database answers)
        keeping = partial(settle, runtime.store, run.id, runtime.artifacts)
        collected = _persist(keeping, f"run {run.id}: keeping its artifacts and log", runtime.metrics)
        if collected is not None:
            runtime.metrics.artifacts_collected(collected.kept_bytes, len(collected.dropped))
    except Exception:
        log.exception("run %s of %s: keeping its artifacts and log failed", run.id, key)
    finished = _persist(
        lambda: runtime.store.finish_run(
            run.id,
            RunStatus(outcome.status.value),
            summary,
            error=outcome.error,
            handle=outcome.handle,
            ended_at=ended,
            peak_memory_bytes=outcome.peak_memory_bytes,
        ),
        f"run {run.id}: recording its end",
        runtime.metrics,
    )
    runtime.metrics.run_finished(finished)
    log.info("%s", console_line(finished))
    if runtime.notifier is not None:
        runtime.notifier.run_finished(finished, task.definition.notify if task else None)
    return finished


def console_line(run: Run) -> str:
    """The service's one line about a finished run: ``chrts/train SUCCEEDED 12.1 s 3d17ccb (run r-...)``,
    and why when it did not succeed (its error, else its outcome)."""
    took = f"{run.duration_seconds:.1f} s" if run.duration_seconds is not None else "-"
    line = f"{run.codops}/{run.task} {run.status.value} {took} {(run.version or '-')[:7]} (run {run.id})"
    if run.status is not RunStatus.SUCCEEDED:
        line += f": {run.error or run.outcome}"
    return line


def _persist(write: Callable[[], T], what: str, metrics: Metrics | None = None, attempts: int = 8) -> T:
    """Retry a write that must not be lost (a run left RUNNING would wait for a restart to be closed)."""
    for attempt in range(1, attempts + 1):
        try:
            return write()
        except SQLAlchemyError:
            if metrics is not None:
                metrics.state_error("run")
            if attempt == attempts:
                raise
            log.warning("%s failed (attempt %d of %d); retrying", what, attempt, attempts, exc_info=True)
            time.sleep(min(30.0, 0.5 * 2**attempt))  # back off: the database is overloaded or restarting
    raise AssertionError("unreachable")


def _supervise(
    runtime: Runtime, run: Run, task: Task, timeout: float, version: str | None, grant: Grant | None
) -> Outcome:
    executor = runtime.executors.get(task.executor)
    if executor is None:
        return Outcome(RunStatus.FAILED, f"no {task.executor.value} executor is configured")
    memory = runtime.demand(task).memory_mib or None
    try:
        execution = executor.prepare(RunRequest(run.id, task, timeout, version or "", memory_mib=memory))
    except PeachError as exc:
        _record_manifest(runtime, run, task, version, None)
        if isinstance(exc, EnvironmentBuildError) and exc.log_path is not None:  # the installer's output
            attach = partial(runtime.store.attach, run.id, log_path=str(exc.log_path))
            _persist(attach, f"run {run.id}: recording its log", runtime.metrics)
        return Outcome(RunStatus.FAILED, f"not started: {exc}", error=str(exc))
    pending: dict[str, Any] = {"log_path": str(execution.log_path)}
    if _attach(runtime, run, pending):
        pending = {}
    directory = execution.artifacts_dir
    try:
        runtime.store.set_artifacts_dir(
            run.id, str(directory) if directory else None, execution.artifacts_note
        )
    except SQLAlchemyError:  # the run goes on; its artifacts are not collected
        log.warning("run %s: recording its artifacts directory failed", run.id, exc_info=True)
    try:
        execution.start()
    except PeachError as exc:
        _record_manifest(runtime, run, task, version, execution)
        return Outcome(RunStatus.FAILED, f"not started: {exc}", error=str(exc))
    _record_manifest(runtime, run, task, version, execution)
    try:
        return _watch(runtime, run, execution, pending, grant)
    finally:
        if execution.outcome is None:  # we are leaving abnormally: never leave the process behind
            execution.kill("the scheduler could not supervise the run")


def _record_manifest(
    runtime: Runtime, run: Run, task: Task, version: str | None, execution: Execution | None
) -> None:
    """Keep what the run runs (after its start, so that the task does not wait for it); a failure to
    record it is logged and the run goes on."""
    try:
        runtime.store.save_manifest(manifests.capture(task, run.id, version, execution))
    except Exception:
        log.exception("run %s of %s: its manifest could not be recorded", run.id, task.key)


class ProgressRecorder:
    """Writes a run's latest progress to the store: at most once per ``interval`` seconds however often the
    task reports, always the latest value, and the last one before the run ends. A failed write is only
    logged (progress is not worth failing a run for) and tried again with the next offer."""

    def __init__(
        self, store: Store, run_id: str, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store, self._run_id, self._interval, self._clock = store, run_id, interval, clock
        self._written: Progress | None = None
        self._last = float("-inf")
        self.writes = 0

    def offer(self, progress: Progress | None, *, final: bool = False) -> None:
        if progress is None or progress is self._written:
            return
        now = self._clock()
        if not final and now - self._last < self._interval:
            return
        self._last = now
        at = datetime.fromtimestamp(progress.at, UTC)
        try:
            self._store.record_progress(self._run_id, progress.fraction, progress.message, at)
        except SQLAlchemyError:
            log.warning("run %s: recording its progress failed", self._run_id, exc_info=True)
            return
        self._written = progress
        self.writes += 1


def _watch(
    runtime: Runtime, run: Run, execution: Execution, pending: dict[str, Any], grant: Grant | None = None
) -> Outcome:
    """Wait for the run's end, a kill request or the service's stop; record its handle (a pid, then a YARN
    application) as soon as it is known or changes (again at every look while the state database does
    not answer)."""
    progress = ProgressRecorder(runtime.store, run.id, runtime.progress_interval)
    try:
        return _follow(runtime, run, execution, pending, progress, grant)
    finally:  # a kill asked for as the run ended by itself is never taken: forget it, or it stays forever
        runtime.kills.take(run.id)


def _follow(
    runtime: Runtime,
    run: Run,
    execution: Execution,
    pending: dict[str, Any],
    progress: ProgressRecorder,
    grant: Grant | None,
) -> Outcome:
    recorded: str | None = None
    beat = float("-inf")
    while True:
        if execution.submitted:  # spark-submit is done; the run goes on (YARN), bounded by the cluster
            release_worker()
            if grant is not None:
                grant.release_submission()
        beat = _heartbeat(execution, beat)
        if execution.handle and execution.handle != recorded:
            recorded = pending["handle"] = execution.handle
        if pending and _attach(runtime, run, pending):
            pending = {}
        outcome = execution.wait(until=time.monotonic() + runtime.poll)
        if execution.handle and execution.handle != recorded:
            recorded = pending["handle"] = execution.handle
        progress.offer(execution.progress, final=outcome is not None)
        if outcome is not None:
            if pending:  # the record must be complete: retried like the run's end, which follows
                record = partial(runtime.store.attach, run.id, **pending)
                _persist(record, f"run {run.id}: recording it", runtime.metrics)
            return outcome
        if runtime.killing.is_set():
            return execution.kill("the scheduler is stopping")
        reason = runtime.kills.take(run.id)
        if reason is not None:
            return execution.kill(reason)


def _heartbeat(execution: Execution, last: float) -> float:
    """Touch the run's log every ``HEARTBEAT`` seconds while the run is supervised, so that its
    modification time is the last moment the run was known alive even when the task prints nothing:
    a run found RUNNING after a crash is closed LOST as of then (``scheduler.service.recovery``)."""
    now = time.monotonic()
    if now - last < HEARTBEAT:
        return last
    with contextlib.suppress(OSError):  # no log yet, or a full disk: the next beat tries again
        os.utime(execution.log_path)
    return now


def _attach(runtime: Runtime, run: Run, fields: dict[str, Any]) -> bool:
    """Record what is known of a running run (log, handle). A state database that does not
    answer must not stop the run: False, and the supervisor tries again at its next look."""
    try:
        runtime.store.attach(run.id, **fields)
        return True
    except SQLAlchemyError as exc:
        runtime.metrics.state_error("run")
        log.warning(
            "run %s: %s not recorded yet, the state database does not answer: %s", run.id, sorted(fields), exc
        )
        return False
