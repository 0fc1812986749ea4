"""The changes under ``/api/v1``: trigger a task, kill a running run, keep or unkeep a run's artifacts,
rerun a run. The router declares ``Depends(authorised)`` once, so every route here, and any added later,
needs the bearer token (``scheduler.http.auth``). Each answers the object it changed (the trigger or
rerun request, the run); 202 where the change happens later, at the loop's next pass."""

from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from scheduler.http.auth import AUTHORISED, authorised
from scheduler.http.context import API, Shared
from scheduler.runs.reruns import check_request
from scheduler.status import RunStatus

router = APIRouter(prefix=API, tags=["act"], dependencies=[Depends(authorised)], responses=AUTHORISED)


@router.put("/runs/{run_id}/keep")
def keep(shared: Shared, run_id: str) -> dict[str, Any]:
    """Keep the run's artifacts whatever the retention policy."""
    return shared.store.set_keep(run_id, True).as_dict()


@router.delete("/runs/{run_id}/keep")
def unkeep(shared: Shared, run_id: str) -> dict[str, Any]:
    """Let retention prune the run's artifacts again."""
    return shared.store.set_keep(run_id, False).as_dict()


@router.post("/organisations/{codops}/tasks/{task}/trigger", status_code=202)
def trigger(shared: Shared, codops: str, task: str) -> dict[str, Any]:
    """Run the task now (its loop takes it within a second when idle), even if disabled or not due."""
    request = shared.store.request_trigger(codops, task, requested_by="api")
    shared.wake(codops)
    return request.as_dict()


@router.post("/runs/{run_id}/kill", status_code=202)
def kill(shared: Shared, run_id: str) -> dict[str, Any]:
    found = shared.store.get_run(run_id)
    if found.status is not RunStatus.RUNNING or shared.kills is None:
        raise HTTPException(409, f"run {run_id} is {found.status.value}, not running here")
    shared.kills.request(run_id, "killed through the API")
    return found.as_dict()


@router.post("/runs/{run_id}/rerun", status_code=202)
def rerun(shared: Shared, run_id: str) -> dict[str, Any]:
    """Run this run's task again at the run's commit, with the dependency set it had installed and
    the same arguments, at its loop's next pass; the new run has ``trigger`` rerun and ``rerun_of``.
    404 for an unknown run or one without a manifest, 409 when its commit is gone."""
    found = shared.store.get_run(run_id)
    recorded = shared.store.get_manifest(run_id)
    if shared.checkouts is not None:
        check_request(shared.checkouts(found.codops), found, recorded)
    request = shared.store.request_rerun(run_id, requested_by="api")
    shared.wake(found.codops)
    return request.as_dict()
