"""The loops: one per organisation plus the shared metadata loop, each running its tasks one by one.

A pass of an organisation loop syncs the organisation's repositories, records its tasks and problems,
then runs each enabled task that is due, in name order. Before every run the repositories are synced
again, so a run always uses the branch head of that moment (SPEC §2), with the last good commit as the
fallback. The metadata loop runs every organisation's ``loop: metadata`` tasks, taking organisations in
turn (one task of each, then the second of each, ...) so that none can starve the others; an operator
may let it run a few at once. A loop never raises: one task, repository or environment failing is
recorded and the loop goes on.
"""

import itertools
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from scheduler.names import METADATA_LOOP
from scheduler.repos.sync import OrganisationTasks, RepositorySync, sync_organisation
from scheduler.runs import reruns
from scheduler.runs.supervise import Runtime, execute
from scheduler.spec.definitions import Severity, Task
from scheduler.store.models import RunTrigger
from scheduler.store.records import Run, Trigger
from scheduler.workers import Workers

log = logging.getLogger(__name__)


class MetadataBoard:
    """Which metadata tasks each organisation has, as its own loop last saw them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, tuple[str, ...]] = {}

    def publish(self, codops: str, names: Iterable[str]) -> None:
        with self._lock:
            self._tasks[codops] = tuple(sorted(names))

    def fair_order(self) -> list[tuple[str, str]]:
        """(codops, task) pairs taking organisations in turn: first task of each, then second of each, ..."""
        with self._lock:
            columns = [[(codops, name) for name in names] for codops, names in sorted(self._tasks.items())]
        return [pair for row in itertools.zip_longest(*columns) for pair in row if pair is not None]


@dataclass
class OrganisationSource:
    """One organisation's repositories, and its view of them after the last sync."""

    codops: str
    syncs: Sequence[RepositorySync]
    runtime: Runtime
    board: MetadataBoard
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _recorded: tuple[tuple[str | None, str | None], ...] | None = None  # (commit, error) per repository

    def sync(self) -> OrganisationTasks:
        """Sync every repository; record tasks, problems and metrics; publish the metadata tasks."""
        with self._lock:
            org = sync_organisation(self.codops, self.syncs)
            for result in org.results:
                self.runtime.metrics.sync_result(self.codops, result.error is None)
            state = tuple((result.commit, result.error) for result in org.results)
            if state != self._recorded:  # what the store holds only changes with a commit or an error
                self._record(org)
                self._recorded = state
            return org

    def _record(self, org: OrganisationTasks) -> None:
        problems = org.problems
        for name in self.runtime.store.upsert_tasks(self.codops, org.tasks, org.invalid):
            self.runtime.metrics.forget_task(self.codops, name)  # its per-task gauges go with it
        self.runtime.store.replace_problems(self.codops, self.codops, problems)
        errors = sum(p.severity is Severity.ERROR for p in problems)
        self.runtime.metrics.validation_errors(self.codops, errors)
        self.board.publish(self.codops, (t.name for t in org.tasks if t.loop == METADATA_LOOP))

    def fresh(
        self, name: str, synced: OrganisationTasks | None = None
    ) -> tuple[Task, str | None, str | None] | None:
        """The task ``name``, its version at the branch head of this moment (``synced``: a sync that has
        just been done, nothing having run since) and why that is not the head, if it is not (the last
        good commit is served); None if it is gone."""
        org = synced or self.sync()
        task = next((t for t in org.tasks if t.name == name), None)
        if task is None:
            return None
        source = org.sources[task.key]
        return task, source.commit, None if source.fresh else source.error

    def replace_syncs(self, syncs: Sequence[RepositorySync]) -> None:
        """New repositories (a configuration reload): used from the next sync, recorded again then."""
        with self._lock:
            self.syncs, self._recorded = syncs, None

    def rerun(self, request: Trigger) -> Run | None:
        """Run ``request.rerun_of`` again at its commit (``scheduler.runs.reruns``)."""
        if not self.syncs:
            log.warning("%s: rerun of %s: the organisation has no repository", self.codops, request.rerun_of)
            return None
        checkouts = [sync.path for sync in self.syncs]
        first = self.syncs[0]
        return reruns.rerun(self.runtime, request, checkouts, first.workspace, first.limits)


class Loop:
    """A loop: passes, separated by a pause, until the service stops. Its passes are steps on the
    service's ``Workers``: between two passes a loop holds no thread."""

    def __init__(self, name: str, runtime: Runtime, pause: float) -> None:
        self.name = f"loop-{name}"
        self.loop_name, self.runtime, self.pause = name, runtime, pause
        self.passes = 0
        self._last_start: dict[tuple[str, str], datetime] = {}
        self._loaded: set[str] = set()
        self.reruns: list[Trigger] = []  # rerun requests taken, run at the end of the pass
        self._taken: dict[tuple[str, str], Trigger] = {}  # manual triggers of this pass not yet run
        self.retired = threading.Event()  # no new run: the organisation left the configuration
        self._pass_started = datetime.now(UTC)
        self._workers: Workers | None = None
        self._ended = threading.Event()

    @property
    def ending(self) -> bool:
        """The service stops or this loop was retired: start nothing more."""
        return self.runtime.stopping.is_set() or self.retired.is_set()

    def start(self, workers: Workers) -> None:
        self._workers = workers
        workers.add(self)

    def step(self) -> float | None:
        """One pass; the pause until the next, None once the loop has ended."""
        if not self.ending:
            self.run_pass()
        if not self.ending:
            return self.pause
        try:
            self.ended()
        finally:
            self._ended.set()
        return None

    def ended(self) -> None:
        """After the last pass (the service stops, or the loop was retired)."""

    def is_alive(self) -> bool:
        return self._workers is not None and not self._ended.is_set()

    def join(self, timeout: float | None = None) -> None:
        if self._workers is not None:
            self._ended.wait(timeout)

    def wake(self) -> None:
        """End the pause now (a trigger, a push, the service stopping): the next pass starts at once, or
        right after the running one."""
        if self._workers is not None:
            self._workers.wake(self)

    def retire(self) -> None:
        """Start no new run; the running one finishes (never killed) and the loop ends."""
        self.retired.set()
        self.wake()

    def run_pass(self) -> list[Run]:
        started = time.monotonic()
        self._pass_started = datetime.now(UTC)
        try:
            runs = self.pass_once()
        except SQLAlchemyError as exc:  # the state database does not answer: the next pass tries again
            self.state_unavailable("pass cut short", exc)
            runs = []
        except Exception:  # a bug of ours: log it, count the pass, and try again next pass
            log.exception("loop %s: pass failed", self.loop_name)
            runs = []
        if self.ending:  # what was asked for and not run waits for the next start (or is dropped)
            self._give_back([*self._taken.values(), *self.reruns])
            self._taken, self.reruns = {}, []
        self.passes += 1
        self.runtime.metrics.loop_pass(self.loop_name, time.monotonic() - started)
        return runs

    def _give_back(self, requests: list[Trigger]) -> None:
        for request in requests:
            try:
                self.runtime.store.return_trigger(request.id)
            except SQLAlchemyError as exc:
                self.state_unavailable(f"request {request.id} for {request.codops}/{request.task} lost", exc)

    def pass_once(self) -> list[Run]:
        raise NotImplementedError

    def state_unavailable(self, what: str, exc: SQLAlchemyError) -> None:
        """The state database did not answer: counted, and one line in the log (not a traceback)."""
        self.runtime.metrics.state_error("loop")
        log.warning("loop %s: %s, the state database does not answer: %s", self.loop_name, what, exc)

    def due(self, task: Task, triggered: set[tuple[str, str]]) -> bool:
        key = (task.codops, task.name)
        if key in triggered:
            return True
        if not task.definition.enabled:
            return False
        if task.definition.every is None:
            return True
        if task.codops not in self._loaded:  # after a restart, remember when each task last started
            self._loaded.add(task.codops)
            for state in self.runtime.store.task_states(task.codops):
                if state.last_started_at is not None:
                    self._last_start.setdefault((state.codops, state.task), state.last_started_at)
        last = self._last_start.get(key)
        return last is None or (datetime.now(UTC) - last).total_seconds() >= task.definition.every

    def due_at(self, task: Task, manual: bool) -> datetime:
        """When a run of ``task`` became due (its place in the capacity queue): its ``every`` after its
        last start, else the start of this pass (a trigger: when it was asked for)."""
        request = self._taken.get((task.codops, task.name)) if manual else None
        if request is not None:
            return request.requested_at
        last = self._last_start.get((task.codops, task.name))
        if task.definition.every is not None and last is not None:
            return last + timedelta(seconds=task.definition.every)
        return self._pass_started

    def triggered(self) -> set[tuple[str, str]]:
        """The tasks manually triggered for this pass; rerun requests are queued for its end."""
        taken = self.runtime.store.take_triggers(self.loop_name)
        self.reruns.extend(t for t in taken if t.rerun_of is not None)
        self._taken = {(t.codops, t.task): t for t in taken if t.rerun_of is None}
        return set(self._taken)

    def run_reruns(self, organisations: Mapping[str, OrganisationSource]) -> list[Run]:
        """The queued reruns, one at a time, like any run of this loop."""
        runs = []
        while self.reruns and not self.ending:
            request = self.reruns.pop(0)
            organisation = organisations.get(request.codops)
            if organisation is None:
                log.warning(
                    "loop %s: rerun of %s: no organisation %s",
                    self.loop_name,
                    request.rerun_of,
                    request.codops,
                )
                continue
            try:
                run = organisation.rerun(request)
            except SQLAlchemyError as exc:
                self.state_unavailable(f"rerun of {request.rerun_of} not done", exc)
                continue
            except Exception:  # a bug of ours: the loop goes on
                log.exception("loop %s: rerun of %s failed", self.loop_name, request.rerun_of)
                continue
            if run is not None:
                runs.append(run)
        return runs

    def run_due(
        self,
        organisation: OrganisationSource,
        name: str,
        triggered: set[tuple[str, str]],
        synced: OrganisationTasks | None = None,
    ) -> Run | None:
        """Run one task at the head of its branch if it still exists, is due, and the service goes on."""
        if self.ending:
            return None
        found = organisation.fresh(name, synced)
        if found is None:
            log.info(
                "loop %s: %s/%s is gone from the repository; not run",
                self.loop_name,
                organisation.codops,
                name,
            )
            return None
        task, version, stale = found
        if task.loop != self.loop_name or not self.due(task, triggered):
            return None
        manual = (task.codops, task.name) in triggered
        key = (task.codops, task.name)
        due = self.due_at(task, manual)
        previous = self._last_start.get(key)
        started = self._last_start[key] = datetime.now(UTC)
        trigger = RunTrigger.MANUAL if manual else RunTrigger.SCHEDULE
        run = execute(self.runtime, task, version, trigger, stale, due=due, cancelled=self.retired.is_set)
        request = self._taken.pop(key, None) if manual else None
        if run is None:  # refused (a running run), waiting (its environment) or cancelled: not a start
            if previous is None:
                self._last_start.pop(key, None)
            else:
                self._last_start[key] = previous
        if request is not None and run is None:
            log.info("loop %s: the trigger of %s waits for the next pass", self.loop_name, task.key)
            self._give_back([request])
        if run is None:
            return None
        if task.definition.every is not None:
            due = started + timedelta(seconds=task.definition.every)
            self.runtime.store.set_next_due(task.codops, task.name, due)
        return run


class OrganisationLoop(Loop):
    """The loop of one organisation: its own tasks, one at a time, in name order."""

    def __init__(
        self,
        organisation: OrganisationSource,
        pause: float,
        configured: Mapping[str, OrganisationSource] | None = None,
    ) -> None:
        """``configured``: the organisations configured now (a retired loop leaves the tasks of one that
        came back meanwhile alone)."""
        super().__init__(organisation.codops, organisation.runtime, pause)
        self.organisation, self.configured = organisation, configured

    def ended(self) -> None:
        back = self.configured is not None and self.loop_name in self.configured
        if self.retired.is_set() and not self.runtime.stopping.is_set() and not back:  # removed
            try:
                self.runtime.store.upsert_tasks(self.loop_name, ())
                self.runtime.store.replace_problems(self.loop_name, self.loop_name, ())
            except SQLAlchemyError as exc:
                self.state_unavailable("its tasks not marked removed", exc)
            log.info("loop %s: the organisation left the configuration; its loop has stopped", self.loop_name)

    def pass_once(self) -> list[Run]:
        org = self.organisation.sync()
        triggered = self.triggered()
        mine = sorted((t for t in org.tasks if t.loop == self.loop_name), key=lambda t: t.name)
        due = [t.name for t in mine if self.due(t, triggered)]
        self.runtime.store.set_pending(self.loop_name, due)
        runs: list[Run | None] = []
        for name in due:  # the pass's own sync serves its first run; every later run syncs again
            runs.append(self.run_due(self.organisation, name, triggered, synced=org if not runs else None))
        runs += self.run_reruns({self.organisation.codops: self.organisation})
        return [run for run in runs if run is not None]


class MetadataLoop(Loop):
    """The shared loop of every organisation's metadata tasks, organisations taken in turn."""

    def __init__(
        self,
        organisations: dict[str, OrganisationSource],
        board: MetadataBoard,
        runtime: Runtime,
        pause: float,
        parallel: int = 1,
    ) -> None:
        super().__init__(METADATA_LOOP, runtime, pause)
        self.organisations, self.board, self.parallel = organisations, board, max(1, parallel)

    def pass_once(self) -> list[Run]:
        triggered = self.triggered()
        order = [(codops, name) for codops, name in self.board.fair_order() if codops in self.organisations]
        if self.parallel == 1:
            runs = [self._one(codops, name, triggered) for codops, name in order]
        else:
            with ThreadPoolExecutor(self.parallel, thread_name_prefix="metadata") as pool:
                runs = list(pool.map(lambda pair: self._one(pair[0], pair[1], triggered), order))
        runs += self.run_reruns(self.organisations)
        return [run for run in runs if run is not None]

    def _one(self, codops: str, name: str, triggered: set[tuple[str, str]]) -> Run | None:
        try:
            organisation = self.organisations.get(codops)  # None: removed by a reload meanwhile
            return self.run_due(organisation, name, triggered) if organisation is not None else None
        except SQLAlchemyError as exc:  # as in a pass: one line, counted; the next pass tries again
            self.state_unavailable(f"{codops}/{name} not run", exc)
            return None
        except Exception:  # one organisation's failure must not end the pass for the others
            log.exception("loop metadata: %s/%s failed", codops, name)
            return None
