"""Restart recovery for YARN: what became of the applications of the runs a previous scheduler left RUNNING.

Every running run handed in whose application is known (its handle ``yarn:<id>``, else its
``peach-run-<id>`` tag, in any state) is re-attached: a ``YarnExecution`` that follows the application from
its state on. One still going is followed to its end (killed at the run's deadline, which may already have
passed: TIMED_OUT); one that ended while the scheduler was down is closed on the first poll with YARN's
final truth (SUCCEEDED, FAILED, KILLED; TIMED_OUT when killed at or past the deadline, by its LIFETIME
backstop say), YARN's ``finishedTime`` as its end and the driver's logs; either way by the same finishing
path as any run. A run whose application YARN no longer knows (a ResourceManager restarted without
recovery, an application aged out) is closed LOST, saying exactly that. Live ``peach`` applications of no
running run are killed. Runs with no application at all are left to the caller (``SparkExecutor.recover``
closes them as local runs).

No store here: the running runs come in as ``RunningRun`` and the answer goes out as a ``Recovery``.
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executors.base import Recovery, RunningRun
from executors.masking import Masker
from executors.process import Launcher
from executors.yarn.client import NotFound, ResourceManager
from executors.yarn.execution import RUN_TAG, YarnExecution, YarnOptions, application_of, run_tag
from scheduler.errors import ResourceManagerError
from scheduler.status import RunStatus

log = logging.getLogger(__name__)

LIVE = ("ACCEPTED", "RUNNING")


@dataclass(frozen=True)
class Decision:
    app_id: str
    run_id: str | None
    action: str  # "follow" or "kill"
    why: str


def run_of(app: Mapping[str, Any]) -> str | None:
    """The run id in an application's ``peach-run-<id>`` tag."""
    for tag in str(app.get("applicationTags") or "").split(","):
        if tag.startswith(RUN_TAG):
            return tag.removeprefix(RUN_TAG)
    return None


def decide(apps: Sequence[Mapping[str, Any]], running: Mapping[str, RunningRun]) -> list[Decision]:
    """What to do with each live ``peach`` application, given the running runs by id: follow the runs'
    (past its deadline too: its supervisor times it out), kill the others'."""
    decisions = []
    for app in apps:
        app_id, run_id = str(app["id"]), run_of(app)
        if run_id is not None and run_id in running:
            decisions.append(Decision(app_id, run_id, "follow", "its run is still RUNNING"))
        else:
            decisions.append(Decision(app_id, run_id, "kill", "its run is unknown or no longer running"))
    return decisions


def application(rm: ResourceManager, run: RunningRun) -> tuple[str | None, str]:
    """The run's application id in any state (by handle, else by tag), or None and why not."""
    app_id = application_of(run.handle)
    if app_id is not None:
        try:
            rm.app(app_id)
        except NotFound:
            return None, (
                f"YARN no longer knows its application {app_id} (the ResourceManager restarted without "
                "recovery, or the application aged out of its memory): how it ended cannot be known"
            )
        return app_id, ""
    tagged = [str(app["id"]) for app in rm.apps_by_tag(run_tag(run.run_id))]
    if tagged:
        return tagged[0], ""
    return None, ""


def recover_applications(
    rm: ResourceManager,
    running: Sequence[RunningRun],
    launcher: Launcher,
    options: YarnOptions,
    log_path: Callable[[str], Path],
    masker: Callable[[RunningRun], Masker] | None = None,
) -> Recovery:
    """Re-attach every running run whose application YARN knows, close LOST those it forgot, kill live
    applications of no running run. A ResourceManager that does not answer closes the runs that had an
    application LOST, saying so (the others are left to the caller). ``masker`` gives a re-attached
    run's secret values to mask in what is appended to its log."""
    by_id = {run.run_id: run for run in running}
    recovery = Recovery()
    try:
        apps = rm.apps_by_tag("peach", list(LIVE))
    except ResourceManagerError as exc:
        log.error("restart recovery: YARN applications not checked: %s", exc)
        for run in running:
            if application_of(run.handle) is not None:
                recovery.close(
                    run.run_id, RunStatus.LOST, f"the ResourceManager did not answer at restart: {exc}"
                )
        return recovery
    found: dict[str, str] = {}
    for decision in decide(apps, by_id):
        if decision.action == "kill":
            kill(rm, decision)
        elif decision.run_id is not None:
            found[decision.run_id] = decision.app_id
    for run in running:
        if run.run_id in found:
            continue
        try:
            app_id, why = application(rm, run)
        except ResourceManagerError as exc:
            app_id, why = None, f"the ResourceManager did not answer at restart: {exc}"
        if app_id is not None:
            found[run.run_id] = app_id
        elif why:
            recovery.close(run.run_id, RunStatus.LOST, why)
    for run_id, app_id in found.items():
        run = by_id[run_id]
        log.warning("run %s (%s): re-attached to YARN application %s", run.run_id, run.key, app_id)
        path = run.log_path or log_path(run.run_id)
        recovery.reattached[run.run_id] = YarnExecution.reattached(
            run, app_id, rm, run_tag(run.run_id), options, launcher, path, masker(run) if masker else None
        )
    return recovery


def kill(rm: ResourceManager, decision: Decision) -> None:
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
