"""Restart recovery for YARN: applications a previous scheduler left ACCEPTED/RUNNING on the cluster.

Every application tagged ``peach`` that is still ``ACCEPTED``/``RUNNING`` is matched to its run through its
``peach-run-<id>`` tag. When the run is known, still RUNNING and not past its deadline, the application is
re-attached: a ``Follower`` thread polls it to its end (killing it at the run's deadline) and closes the run
with the application's status. Otherwise (unknown run, run already closed, deadline passed) it is killed.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC

from executors.yarn.client import FINAL_STATES, ResourceManager
from executors.yarn.execution import yarn_status
from scheduler.errors import PeachError, ResourceManagerError, RunNotFound
from scheduler.status import RunStatus
from scheduler.store.records import Run
from scheduler.store.store import Store

log = logging.getLogger(__name__)

RUN_TAG = "peach-run-"


@dataclass(frozen=True)
class Decision:
    app_id: str
    run_id: str | None
    action: str  # "follow" or "kill"
    why: str


def _run_of(app: dict[str, object]) -> str | None:
    for tag in str(app.get("applicationTags") or "").split(","):
        if tag.startswith(RUN_TAG):
            return tag.removeprefix(RUN_TAG)
    return None


def decide(
    rm: ResourceManager, store: Store, wall: Callable[[], float] = time.time
) -> tuple[list[Decision], dict[str, Run]]:
    """What to do with each live ``peach`` application, and the runs to follow (by id)."""
    decisions, follow = [], {}
    for app in rm.apps_by_tag("peach", ["ACCEPTED", "RUNNING"]):
        app_id, run_id = str(app["id"]), _run_of(app)
        run = None
        if run_id is not None:
            try:
                run = store.get_run(run_id)
            except RunNotFound:
                run = None
        if run is None:
            decisions.append(Decision(app_id, run_id, "kill", "its run is unknown"))
        elif run.status is not RunStatus.RUNNING:
            decisions.append(Decision(app_id, run_id, "kill", f"its run is already {run.status.value}"))
        elif (
            run.deadline is not None
            and run.deadline.replace(tzinfo=run.deadline.tzinfo or UTC).timestamp() <= wall()
        ):
            decisions.append(Decision(app_id, run_id, "kill", "its run is past its deadline"))
        else:
            decisions.append(Decision(app_id, run_id, "follow", "its run is still going"))
            follow[run.id] = run
    return decisions, follow


class Follower(threading.Thread):
    """Follows one re-attached application to its end and closes its run."""

    def __init__(
        self,
        rm: ResourceManager,
        store: Store,
        run: Run,
        app_id: str,
        *,
        poll: float = 2.0,
        wall: Callable[[], float] = time.time,
        finished: Callable[[Run], None] = lambda run: None,
    ) -> None:
        super().__init__(name=f"peach-follow-{run.id}", daemon=True)
        self.rm, self.store, self.run_record, self.app_id = rm, store, run, app_id
        self.poll, self._wall, self._finished = poll, wall, finished
        self.stopped = threading.Event()
        self.result: Run | None = None

    def run(self) -> None:
        deadline = self.run_record.deadline
        end = deadline.replace(tzinfo=deadline.tzinfo or UTC).timestamp() if deadline is not None else None
        while not self.stopped.is_set():
            try:
                if end is not None and self._wall() >= end:
                    state = self.rm.kill(self.app_id)
                    self._close(
                        RunStatus.TIMED_OUT,
                        f"deadline passed: YARN application {self.app_id} killed ({state})",
                    )
                    return
                report = self.rm.app(self.app_id)
                if report.get("state") in FINAL_STATES:
                    status, summary, error = yarn_status(report)
                    self._close(status, f"re-attached after a restart; {summary}", error)
                    return
            except ResourceManagerError as exc:
                log.warning("run %s: following %s: %s", self.run_record.id, self.app_id, exc)
            self.stopped.wait(self.poll)

    def _close(self, status: RunStatus, summary: str, error: str | None = None) -> None:
        try:
            self.result = self.store.finish_run(
                self.run_record.id, RunStatus(status.value), summary, error=error, application_id=self.app_id
            )
        except PeachError as exc:
            log.error("run %s: closing it failed: %s", self.run_record.id, exc)
            return
        self._finished(self.result)


def recover_applications(
    rm: ResourceManager,
    store: Store,
    *,
    poll: float = 2.0,
    wall: Callable[[], float] = time.time,
    finished: Callable[[Run], None] = lambda run: None,
) -> tuple[list[Decision], list[Follower]]:
    """Kill or re-attach every live ``peach`` application; the followers are started."""
    decisions, follow = decide(rm, store, wall)
    followers = []
    for decision in decisions:
        if decision.action == "kill":
            try:
                state = rm.kill(decision.app_id)
                log.warning(
                    "YARN application %s (run %s) killed at restart: %s (%s)",
                    decision.app_id,
                    decision.run_id,
                    decision.why,
                    state,
                )
            except ResourceManagerError as exc:
                log.error("YARN application %s could not be killed at restart: %s", decision.app_id, exc)
        elif decision.run_id is not None:
            run = follow[decision.run_id]
            log.warning("run %s: re-attached to YARN application %s", run.id, decision.app_id)
            follower = Follower(rm, store, run, decision.app_id, poll=poll, wall=wall, finished=finished)
            follower.start()
            followers.append(follower)
    return decisions, followers
