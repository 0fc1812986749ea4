"""A run on YARN: spark-submit as a local child, then the application followed through the ResourceManager.

1. spark-submit runs as a ``LocalProcess`` (``executors.process``: own session, group kill). The
   application id is taken from the client's own ``Submitting application <id> to ResourceManager``
   line as soon as it is written (so it is recorded at once), never from any other id in the output.
2. When spark-submit has exited (``waitAppCompletion=false``: right after YARN accepted the application),
   the id is confirmed by the run's tag (``applicationTags`` query); when the output was lost, the tag alone
   finds it. The application's YARN ``LIFETIME`` is then set to the run's deadline plus a grace period: a
   backstop that holds even when the scheduler is down.
3. The application's state is polled until it is final (``FINISHED``/``FAILED``/``KILLED``) and mapped to
   the run's status; the driver's logs and the diagnostics are appended to the run's log (same size cap),
   saying which source they came from. While it runs, the report's ``progress`` (0-100) is the run's
   progress (``yarn_progress``): the driver's own output, and its ``PEACH_PROGRESS`` lines, are not local.
4. On the deadline or a kill, the application is killed through the REST API (confirmed, re-asked), and the
   local processes are stopped as for any run.

A run re-attached after a scheduler restart (``YarnExecution.reattached``, by ``executors.yarn.recovery``)
starts at step 3: no local process, its deadline the wall-clock one the store kept, its log appended to,
its outcome saying ``re-attached after a restart``. Either way the run is a plain ``Execution``: the
deadline check is the base class's, and the run supervisor drives it like any other.
"""

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from executors.base import Deadline, Execution, ExecutionManifest, Outcome, RunningRun, pid_handle
from executors.logs import CappedLog
from executors.process import Launcher, LocalProcess, close_process, exit_outcome, release
from executors.progress import Progress
from executors.yarn.client import FINAL_STATES, ResourceManager
from executors.yarn.tracker import ApplicationTracker
from scheduler.errors import ExecutionError, ResourceManagerError
from scheduler.status import RunStatus

log = logging.getLogger(__name__)

YARN_HANDLE = "yarn:"
RUN_TAG = "peach-run-"
MAX_TAG_LENGTH = 100
SUBMITTED = re.compile(rb"Submitting application (application_\d+_\d+) to ResourceManager")


def run_tag(run_id: str) -> str:
    """The YARN tag that finds a run's application (YARN lowercases tags, at most 100 characters)."""
    return f"{RUN_TAG}{run_id}".lower()[:MAX_TAG_LENGTH]


def yarn_handle(app_id: str) -> str:
    """The run's handle once its application is known (the store shows it as ``application_id``)."""
    return f"{YARN_HANDLE}{app_id}"


def application_of(handle: str | None) -> str | None:
    """The application id in a handle, None for a handle of another kind (a pid)."""
    if handle is None or not handle.startswith(YARN_HANDLE):
        return None
    return handle.removeprefix(YARN_HANDLE)


def yarn_status(report: dict[str, Any]) -> tuple[RunStatus, str, str | None]:
    """(status, summary, error) of a final application report."""
    app_id, state = report.get("id", "?"), str(report.get("state"))
    final = str(report.get("finalStatus") or "UNDEFINED")
    diagnostics = str(report.get("diagnostics") or "").strip()
    first = diagnostics.splitlines()[0][:500] if diagnostics else None
    if state == "FINISHED" and final == "SUCCEEDED":
        return RunStatus.SUCCEEDED, f"YARN application {app_id} finished: SUCCEEDED", None
    if state == "KILLED" or final == "KILLED":
        if "lifetime" in diagnostics.lower():
            return RunStatus.TIMED_OUT, f"YARN application {app_id} killed by YARN: LIFETIME exceeded", first
        return (
            RunStatus.KILLED,
            f"YARN application {app_id} was killed on YARN: {first or 'no diagnostics'}",
            first,
        )
    return RunStatus.FAILED, f"YARN application {app_id} {state}/{final}: {first or 'no diagnostics'}", first


SPARK_AM_PROGRESS = 10.0  # what Spark's application master always reports (YarnAllocator: 0.1f)


def yarn_progress(report: dict[str, Any], at: float) -> Progress | None:
    """The progress of a running application as the ResourceManager reports it (``progress``, 0-100).

    It is what the application master tells YARN. Spark's own always says 10 % while the driver runs,
    which says nothing about the task: that value is not taken as progress (the ETA then comes from the
    task's history alone), nor is 0 (what the RM reports before the AM has said anything: observed on the
    first poll after RUNNING), nor anything outside 0-100."""
    value = report.get("progress")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 100:
        return None
    if value == SPARK_AM_PROGRESS:
        return None
    return Progress(float(value) / 100, "reported by YARN", at)


@dataclass(frozen=True)
class YarnOptions:
    """How a run on YARN is followed: its log server, the LIFETIME grace after the deadline, how often
    the state is asked, how long to wait for log aggregation and for the application to appear, and the
    tracker that asks for every run's state in one call (None: each run asks for its own)."""

    log_server: str | None = None
    lifetime_grace: float = 600.0
    poll: float = 2.0
    log_wait: float = 30.0
    find_wait: float = 10.0
    tracker: ApplicationTracker | None = None


class YarnExecution(Execution):
    """A spark-submit child for the submission, then the YARN application for the rest of the run.

    Made by ``submitting`` (a fresh run) or ``reattached`` (after a restart); ``submit`` is the local
    spark-submit, None for a re-attached run. ``kill`` may come from any thread.
    """

    def __init__(
        self,
        run_id: str,
        key: str,
        log_path: Path,
        rm: ResourceManager,
        tag: str,
        options: YarnOptions,
        launcher: Launcher,
        *,
        submit: LocalProcess | None = None,
        cleanup: Callable[[], None] | None = None,
        manifest: ExecutionManifest | None = None,
    ) -> None:
        super().__init__(run_id, key, log_path, manifest=manifest)
        self.rm, self.tag, self.options, self.launcher = rm, tag, options, launcher
        self.submit, self.cleanup = submit, cleanup
        self.application_id: str | None = None
        self.submitted = False  # spark-submit has exited and the application (if any) is known
        self._clock, self._wall = launcher.clock, launcher.wall
        self._log: CappedLog | None = None  # a re-attached run's log, appended to
        self._summary_prefix = ""
        self._seen = b""
        self._final: tuple[RunStatus, str, str | None] | None = None
        self._stopped: str | None = None
        self._wake = threading.Event()
        self._ending = threading.Lock()
        self._unanswered: float | None = None  # since when no ResourceManager answers for the state
        self._started_at: float | None = None
        self._ended_at: float | None = None  # YARN's finishedTime of a re-attached run's application
        self._reattached_at = launcher.wall()

    @classmethod
    def submitting(
        cls,
        process: LocalProcess,
        rm: ResourceManager,
        tag: str,
        options: YarnOptions,
        *,
        cleanup: Callable[[], None] | None = None,
        manifest: ExecutionManifest | None = None,
    ) -> "YarnExecution":
        """A fresh run: ``process`` is its spark-submit, not started yet."""
        execution = cls(
            process.run_id,
            process.key,
            process.log_path,
            rm,
            tag,
            options,
            process.launcher,
            submit=process,
            cleanup=cleanup,
            manifest=manifest,
        )
        process.on_output, process.on_progress = execution._scan, execution.reported
        return execution

    @classmethod
    def reattached(
        cls,
        run: RunningRun,
        app_id: str,
        rm: ResourceManager,
        tag: str,
        options: YarnOptions,
        launcher: Launcher,
        log_path: Path,
    ) -> "YarnExecution":
        """A run a previous scheduler submitted, its application ``app_id`` still going: followed on."""
        execution = cls(run.run_id, run.key, log_path, rm, tag, options, launcher)
        execution.application_id, execution.handle = app_id, yarn_handle(app_id)
        execution.submitted = execution.started = True
        execution.deadline = Deadline.at_wall(run.deadline, launcher.clock, launcher.wall)
        execution._summary_prefix = "re-attached after a restart; "
        if not log_path.name.endswith(".gz"):  # a log already settled is not appended to
            try:
                execution._log = CappedLog(
                    log_path, launcher.limits, launcher.clock, launcher.wall, append=True
                )
            except OSError as exc:
                log.warning("run %s: its log %s cannot be appended to: %s", run.run_id, log_path, exc)
        execution._note(f"re-attached after a scheduler restart to YARN application {app_id} (tag {tag})")
        return execution

    def start(self) -> None:
        if self.started or self.submit is None:
            raise ExecutionError(f"run {self.run_id} was already started")
        try:
            self.submit.start()
        except ExecutionError:
            release(self, self.cleanup)
            raise
        self.handle = pid_handle(self.submit.pid) if self.submit.pid is not None else None
        self.deadline = Deadline.after(self.submit.request.timeout, self._clock)
        self._started_at = self.submit.started_at
        self.started = True

    def _note(self, text: str) -> None:
        if self.submit is not None:
            self.submit.note(text)
        elif self._log is not None:
            self._log.note(text)

    def _output(self, data: bytes) -> None:
        if self.submit is not None:
            self.submit.output(data)
        elif self._log is not None:
            self._log.output(data)

    def _scan(self, chunk: bytes) -> None:
        if self.application_id is not None:
            return
        self._seen = (self._seen + chunk)[-4096:]
        found = SUBMITTED.search(self._seen)
        if found:
            self._found(found.group(1).decode())
            log.info("run %s (%s): YARN application %s", self.run_id, self.key, self.application_id)

    def _found(self, app_id: str | None) -> None:
        self.application_id = app_id
        if app_id is not None:
            self.handle = yarn_handle(app_id)

    # -- following ----------------------------------------------------------------------------------------

    def _poll(self, timeout: float | None) -> bool:
        step = self.options.poll if timeout is None else min(timeout, self.options.poll)
        if not self.submitted:
            assert self.submit is not None
            if self.submit.exited(step):
                self._after_submit()
        else:
            self._follow()
            if self._final is None:
                self._wake.wait(step)
                self._wake.clear()
        return self._final is not None

    def _after_submit(self) -> None:
        assert self.submit is not None
        returncode = self.submit.poll()
        found = self._find()
        if self.application_id and found and self.application_id not in found:
            self._note(f"spark-submit named {self.application_id}, but YARN tags {found[0]} with {self.tag}")
            self._found(found[0])
        elif not self.application_id and found:
            self._note(f"spark-submit's output named no application; found {found[0]} by its tag {self.tag}")
            self._found(found[0])
        elif self.application_id and not found:
            self._note(
                f"application {self.application_id} not confirmed by its tag {self.tag} (YARN did not say)"
            )
        if not self.application_id:
            words = f"exit code {returncode}" if returncode is not None else "no exit status"
            self._final = (
                RunStatus.FAILED,
                f"spark-submit ended ({words}) and no application is tagged {self.tag}",
                None,
            )
            return
        self.submitted = True
        self._note(f"YARN application {self.application_id} (tag {self.tag})")
        self._set_lifetime()

    def _set_lifetime(self) -> None:
        """The application's YARN LIFETIME: the run's deadline plus a grace, a backstop that holds even
        when the scheduler is down."""
        left, grace = self.deadline.left(), self.options.lifetime_grace
        if left is None or self._started_at is None or self.application_id is None:
            return
        try:
            self.rm.set_lifetime(self.application_id, self._wall() + left + grace)
            self._note(f"YARN LIFETIME of {self.application_id} set to the deadline + {grace:g} s")
        except ResourceManagerError as exc:
            self._note(f"could not set the YARN LIFETIME of {self.application_id}: {exc}")

    def _find(self) -> list[str]:
        """Ids of the applications tagged with this run's tag (asked again for up to ``find_wait`` s)."""
        end = self._clock() + self.options.find_wait
        while True:
            try:
                found = [str(app["id"]) for app in self.rm.apps_by_tag(self.tag)]
            except ResourceManagerError as exc:
                self._note(f"finding the application by its tag failed: {exc}")
                return []
            if found or self._clock() >= end:
                return found
            self._wake.wait(min(self.options.poll, 0.5))

    def _follow(self, alone: bool = False) -> None:
        """Take the application's state from the tracker's shared answer (``alone``: from its own report)."""
        assert self.application_id is not None
        try:
            report = self._report(alone)
            if report is None:
                return  # no shared answer since it was followed yet: the next one wakes this run
        except ResourceManagerError as exc:
            log.warning("run %s (%s): YARN state unknown: %s", self.run_id, self.key, exc)
            if self._unanswered is None:  # said once in the run's log, and again when it answers
                self._unanswered = self._clock()
                self._note(f"state of {self.application_id} unknown, still following it: {exc}")
            return
        if self._unanswered is not None:
            self._note(f"the ResourceManager answers again after {self._clock() - self._unanswered:.1f} s")
            self._unanswered = None
        if report.get("state") in FINAL_STATES:
            self._final = self._truth(report)
            self._fetch_logs(report)
        elif report.get("state") == "RUNNING":
            self.progress = yarn_progress(report, self._wall()) or self.progress

    def _report(self, alone: bool) -> dict[str, Any] | None:
        """The application's report: from the shared answer while it lists it as active; its own (the
        final report) once it does not, or when asked ``alone``."""
        assert self.application_id is not None
        tracker = self.options.tracker
        if tracker is None or alone:
            return self.rm.app(self.application_id)
        tracker.follow(self.application_id, self._wake)
        listed = tracker.report(self.application_id)
        return self.rm.app(self.application_id) if isinstance(listed, str) else listed

    def _truth(self, report: dict[str, Any]) -> tuple[RunStatus, str, str | None]:
        """The run's status from its application's final report; KILLED at or past the run's deadline
        (YARN's LIFETIME backstop, or a kill while the scheduler was down) is TIMED_OUT. A re-attached
        run's end is YARN's ``finishedTime``, and its log says it ended while the scheduler was down."""
        status, summary, error = yarn_status(report)
        finished = report.get("finishedTime")
        ended = float(finished) / 1000 if isinstance(finished, int | float) and finished > 0 else None
        left = self.deadline.left()
        deadline = None if left is None else self._wall() + left
        if status is RunStatus.KILLED and ended is not None and deadline is not None and ended >= deadline:
            status, summary = RunStatus.TIMED_OUT, f"{summary} (at or past the run's deadline)"
        if self.submit is None and ended is not None:
            self._ended_at = ended
            if ended < self._reattached_at:
                when = datetime.fromtimestamp(ended, UTC).isoformat(timespec="seconds")
                self._note(
                    f"YARN application {self.application_id} ended at {when}, while the scheduler was down"
                )
        return status, summary, error

    def _fetch_logs(self, report: dict[str, Any]) -> None:
        assert self.application_id is not None
        if report.get("diagnostics"):
            self._note(f"YARN diagnostics: {str(report['diagnostics']).strip()}")
        limits = self.launcher.limits
        try:
            source, files = self.rm.driver_logs(
                self.application_id,
                self.options.log_server,
                limits.head_bytes + limits.tail_bytes,
                self.options.log_wait,
            )
        except ResourceManagerError as exc:
            self._note(f"driver logs of {self.application_id} not fetched: {exc}")
            return
        self._note(f"driver logs of {self.application_id}: source: {source}")
        for name, content in files.items():
            self._note(f"--- driver {name} ---")
            self._output(content if content.endswith(b"\n") or not content else content + b"\n")

    # -- ending -------------------------------------------------------------------------------------------

    def _end(self, status: RunStatus | None, why: str) -> Outcome:
        with self._ending:
            if self.outcome is not None:
                return self.outcome
            if self.options.tracker is not None and self.application_id is not None:
                self.options.tracker.forget(self.application_id)
            if status is not None and self.submitted and self._final is None:
                self._follow(alone=True)  # it may have ended by itself (while the scheduler was down, say)
            if status is not None and self.submitted and self._final is None:
                self._kill_application(why)  # spark-submit is gone: the application is what to stop
                self._final = (status, f"{why}: {self._stopped}", None)
                self._logs_after_kill()
            self._wake.set()
            if self.submit is None:
                self.outcome = self._end_reattached()
            else:
                self.outcome = self._end_submit(self.submit, status, why)
            return self.outcome

    def _end_submit(self, process: LocalProcess, status: RunStatus | None, why: str) -> Outcome:
        stopping = None if status is not None and process.exited(0) else status  # None: ended by itself
        if stopping is not None:
            process.note(
                f"{why}: stopping the run (SIGTERM, {process.launcher.grace:g} s grace, then SIGKILL)"
            )
            log.warning("run %s (%s): stopping it: %s", self.run_id, self.key, why)
            self._kill_application(why)
        elif process.leftovers():
            process.note("the task exited but left processes behind: stopping them")
        process.stop()
        outcome = exit_outcome(process, stopping, why, process.reap())
        if self._final is not None:
            final, summary, error = self._final
            outcome = replace(outcome, status=final, summary=summary, error=error or outcome.error)
        outcome = close_process(self, process, outcome)
        release(self, self.cleanup)
        if status is not None and not self.submitted and self.application_id is None:
            self._kill_late_submission()
        return outcome

    def _end_reattached(self) -> Outcome:
        assert self._final is not None  # a re-attached run ends when its application's state is final
        final, summary, error = self._final
        outcome = Outcome(final, self._summary_prefix + summary, error=error, handle=self.handle)
        outcome = replace(outcome, finished_at=self._ended_at or self._wall())
        self._note(f"run ended: {outcome.status.value}: {outcome.summary}")
        if self._log is not None:
            self._log.close()
            outcome = replace(outcome, log_bytes=self._log.stored, log_dropped=self._log.dropped)
        log.info("run %s (%s): %s: %s", self.run_id, self.key, outcome.status.value, outcome.summary)
        return outcome

    def _kill_application(self, why: str) -> None:
        if self._stopped is not None:
            return
        if self.application_id is None:
            ids = self._find_now()
            self._found(ids[0] if ids else None)
        if self.application_id is None:
            self._stopped = "no YARN application was submitted yet"
            return
        try:
            state = self.rm.kill(self.application_id)
            self._stopped = (
                f"YARN application {self.application_id} killed through the ResourceManager ({state})"
            )
            if state not in FINAL_STATES:
                self._stopped = f"YARN application {self.application_id} asked to die; still {state}"
        except ResourceManagerError as exc:
            self._stopped = f"YARN application {self.application_id} could not be killed: {exc}"
        self._note(f"{why}: {self._stopped}")

    def _logs_after_kill(self) -> None:
        """The driver logs of a killed application (timed out, killed): the runs whose logs matter most."""
        if self.application_id is None:
            return
        try:
            report = self.rm.app(self.application_id)
        except ResourceManagerError as exc:
            self._note(f"driver logs of {self.application_id} not fetched: {exc}")
            return
        self._fetch_logs(report)

    def _find_now(self) -> list[str]:
        try:
            return [str(app["id"]) for app in self.rm.apps_by_tag(self.tag)]
        except ResourceManagerError:
            return []

    def _kill_late_submission(self) -> None:
        """A spark-submit stopped mid-submission may still have reached YARN: kill what carries our tag."""
        for app_id in self._find_now():
            try:
                self.rm.kill(app_id)
                log.warning("run %s (%s): killed late submission %s", self.run_id, self.key, app_id)
            except ResourceManagerError as exc:
                log.error(
                    "run %s (%s): late submission %s not killed: %s", self.run_id, self.key, app_id, exc
                )
