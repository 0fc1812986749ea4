"""Restart recovery for YARN: applications a previous scheduler left ACCEPTED/RUNNING on the cluster.

Every application tagged ``peach`` that is still ``ACCEPTED``/``RUNNING`` is matched to its run through its
``peach-run-<id>`` tag. When the run is among the running runs handed in and not past its deadline, the
application is re-attached: a ``YarnExecution`` that follows it from its state on (its supervisor kills it
at the deadline and closes the run with the application's status, like any run). Otherwise (the run is
unknown or already closed, or past its deadline) the application is killed. Runs not re-attached are left
to the caller (``SparkExecutor.recover`` closes them as local runs).

No store here: the running runs come in as ``RunningRun`` and the answer goes out as a ``Recovery``. (Asking
YARN how the applications of the other runs ended belongs here too: their final reports, by tag.)
"""

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executors.base import Recovery, RunningRun
from executors.process import Launcher
from executors.yarn.client import ResourceManager
from executors.yarn.execution import RUN_TAG, YarnExecution, YarnOptions, run_tag
from scheduler.errors import ResourceManagerError

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


def decide(
    apps: Sequence[Mapping[str, Any]],
    running: Mapping[str, RunningRun],
    wall: Callable[[], float] = time.time,
) -> list[Decision]:
    """What to do with each live ``peach`` application, given the running runs by id."""
    decisions = []
    for app in apps:
        app_id, run_id = str(app["id"]), run_of(app)
        run = running.get(run_id) if run_id is not None else None
        if run is None:
            decisions.append(Decision(app_id, run_id, "kill", "its run is unknown or no longer running"))
        elif run.deadline is not None and run.deadline <= wall():
            decisions.append(Decision(app_id, run_id, "kill", "its run is past its deadline"))
        else:
            decisions.append(Decision(app_id, run_id, "follow", "its run is still going"))
    return decisions


def recover_applications(
    rm: ResourceManager,
    running: Sequence[RunningRun],
    launcher: Launcher,
    options: YarnOptions,
    log_path: Callable[[str], Path],
) -> Recovery:
    """Kill or re-attach every live ``peach`` application; the re-attached runs' executions. A
    ResourceManager that does not answer re-attaches nothing (the caller closes the runs)."""
    try:
        apps = rm.apps_by_tag("peach", list(LIVE))
    except ResourceManagerError as exc:
        log.error("restart recovery: YARN applications not checked: %s", exc)
        return Recovery()
    by_id = {run.run_id: run for run in running}
    recovery = Recovery()
    for decision in decide(apps, by_id, launcher.wall):
        if decision.action == "kill":
            kill(rm, decision)
            continue
        assert decision.run_id is not None
        run = by_id[decision.run_id]
        log.warning("run %s (%s): re-attached to YARN application %s", run.run_id, run.key, decision.app_id)
        path = run.log_path or log_path(run.run_id)
        recovery.reattached[run.run_id] = YarnExecution.reattached(
            run, decision.app_id, rm, run_tag(run.run_id), options, launcher, path
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
