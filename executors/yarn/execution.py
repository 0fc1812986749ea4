"""A run on YARN: spark-submit as a local child, then the application followed through the ResourceManager.

1. spark-submit runs as a ``ProcessExecution`` child (own session, group kill). The application id is
   taken from the client's own ``Submitting application <id> to ResourceManager`` line as soon as it is
   written (so it is recorded at once), never from any other id that appears in the output.
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
"""

import logging
import re
import threading
from dataclasses import replace
from typing import Any

from executors.base import Outcome
from executors.process import ProcessExecution
from executors.progress import Progress
from executors.yarn.client import FINAL_STATES, ResourceManager
from scheduler.errors import ResourceManagerError
from scheduler.status import RunStatus

log = logging.getLogger(__name__)

SUBMITTED = re.compile(rb"Submitting application (application_\d+_\d+) to ResourceManager")


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
    task's history alone), nor is anything outside 0-100."""
    value = report.get("progress")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        return None
    if value == SPARK_AM_PROGRESS:
        return None
    return Progress(float(value) / 100, "reported by YARN", at)


class YarnExecution(ProcessExecution):
    """A spark-submit child for the submission, then the YARN application for the rest of the run."""

    def __init__(
        self,
        *args: Any,
        resourcemanager: ResourceManager,
        tag: str,
        log_server: str | None = None,
        lifetime_grace: float = 600.0,
        poll: float = 2.0,
        log_wait: float = 30.0,
        find_wait: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, on_output=self._scan, **kwargs)
        self.rm, self.tag, self.log_server = resourcemanager, tag, log_server
        self.lifetime_grace, self.poll, self.log_wait, self.find_wait = (
            lifetime_grace,
            poll,
            log_wait,
            find_wait,
        )
        self.submitted = False  # spark-submit has exited and the application (if any) is known
        self._seen = b""
        self._final: tuple[RunStatus, str, str | None] | None = None
        self._stopped: str | None = None
        self._wake = threading.Event()
        self._unanswered: float | None = None  # since when no ResourceManager answers for the state

    def _scan(self, chunk: bytes) -> None:
        if self.application_id is not None:
            return
        self._seen = (self._seen + chunk)[-4096:]
        found = SUBMITTED.search(self._seen)
        if found:
            self.application_id = found.group(1).decode()
            log.info("run %s (%s): YARN application %s", self.run_id, self.key, self.application_id)

    # -- following ----------------------------------------------------------------------------------------

    def wait(self, until: float | None = None) -> Outcome | None:
        while self.outcome is None:
            now = self._clock()
            if self._deadline is not None and now >= self._deadline:
                return self._end(RunStatus.TIMED_OUT, f"timeout {self.request.timeout:g} s")
            ends = [t for t in (until, self._deadline, now + self.poll) if t is not None]
            step = max(0.0, min(ends) - now)
            if not self.submitted:
                if self._exited(step):
                    self._after_submit()
            else:
                self._follow()
                if self._final is None:
                    self._wake.wait(step)
            if self._final is not None:
                return self._end(None, "")
            if until is not None and self._clock() >= until and not self._timed_out():
                return None
        return self.outcome

    def _after_submit(self) -> None:
        assert self._proc is not None
        returncode = self._proc.poll()
        found = self._find()
        if self.application_id and found and self.application_id not in found:
            self._note(f"spark-submit named {self.application_id}, but YARN tags {found[0]} with {self.tag}")
            self.application_id = found[0]
        elif not self.application_id and found:
            self._note(f"spark-submit's output named no application; found {found[0]} by its tag {self.tag}")
            self.application_id = found[0]
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
        if self._deadline is not None and self._started_at is not None:
            left = self._deadline - self._clock()
            expiry = self._wall() + left + self.lifetime_grace
            try:
                self.rm.set_lifetime(self.application_id, expiry)
                self._note(
                    f"YARN LIFETIME of {self.application_id} set to the deadline + {self.lifetime_grace:g} s"
                )
            except ResourceManagerError as exc:
                self._note(f"could not set the YARN LIFETIME of {self.application_id}: {exc}")

    def _find(self) -> list[str]:
        """Ids of the applications tagged with this run's tag (asked again for up to ``find_wait`` s)."""
        end = self._clock() + self.find_wait
        while True:
            try:
                found = [str(app["id"]) for app in self.rm.apps_by_tag(self.tag)]
            except ResourceManagerError as exc:
                self._note(f"finding the application by its tag failed: {exc}")
                return []
            if found or self._clock() >= end:
                return found
            self._wake.wait(min(self.poll, 0.5))

    def _follow(self) -> None:
        assert self.application_id is not None
        try:
            report = self.rm.app(self.application_id)
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
            self._final = yarn_status(report)
            self._fetch_logs(report)
        elif report.get("state") == "RUNNING":
            self.progress = yarn_progress(report, self._wall()) or self.progress

    def _fetch_logs(self, report: dict[str, Any]) -> None:
        assert self.application_id is not None and self._log is not None and self._pump is not None
        if report.get("diagnostics"):
            self._note(f"YARN diagnostics: {str(report['diagnostics']).strip()}")
        cap = self.limits.head_bytes + self.limits.tail_bytes
        try:
            source, files = self.rm.driver_logs(self.application_id, self.log_server, cap, self.log_wait)
        except ResourceManagerError as exc:
            self._note(f"driver logs of {self.application_id} not fetched: {exc}")
            return
        self._note(f"driver logs of {self.application_id}: source: {source}")
        for name, content in files.items():
            self._note(f"--- driver {name} ---")
            with self._pump.lock:
                self._log.output(content if content.endswith(b"\n") or not content else content + b"\n")

    # -- stopping -----------------------------------------------------------------------------------------

    def stopping(self, status: RunStatus, why: str) -> None:
        self._kill_application(why)

    def _end(self, status: RunStatus | None, why: str) -> Outcome:
        if status is not None and self.outcome is None and self.submitted and self._final is None:
            self._kill_application(why)  # spark-submit is gone: the base class would not call ``stopping``
            self._final = (status, f"{why}: {self._stopped}", None)
        self._wake.set()
        outcome = super()._end(status, why)
        if status is not None and not self.submitted and self.application_id is None:
            self._kill_late_submission()
        return outcome

    def _kill_application(self, why: str) -> None:
        if self._stopped is not None:
            return
        if self.application_id is None:
            ids = self._find_now()
            self.application_id = ids[0] if ids else None
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

    def _outcome(self, status: RunStatus | None, why: str, returncode: int) -> Outcome:
        base = super()._outcome(status, why, returncode)
        if self._final is not None:
            final, summary, error = self._final
            return replace(base, status=final, summary=summary, error=error or base.error)
        return base
