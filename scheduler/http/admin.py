"""The operator's ``/api/v1/admin``: reload the configuration (bearer token) and read how the latest
reload went (open, like every read). The answer says ``result`` (``applied``, ``unchanged``, ``invalid``:
then nothing changed and ``error`` says why), the ``changes`` applied from the next run, and the
settings that changed but wait for a restart (``restart_needed``)."""

from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from scheduler.http.auth import AUTHORISED, authorised
from scheduler.http.context import API, Shared

router = APIRouter(prefix=f"{API}/admin", tags=["admin"])
NO_RELOAD = "this server cannot reload its configuration"


@router.post("/reload", dependencies=[Depends(authorised)], responses=AUTHORISED)
def reload(shared: Shared) -> dict[str, Any]:
    """Re-read the operator configuration now and apply what changed (an invalid one changes nothing)."""
    if shared.reload is None:
        raise HTTPException(409, NO_RELOAD)
    return dict(shared.reload())


@router.get("/reload")
def last_reload(shared: Shared) -> dict[str, Any]:
    """How the latest configuration reload went (404 before the first)."""
    answer = shared.last_reload() if shared.last_reload is not None else None
    if answer is None:
        raise HTTPException(404, "the configuration has not been reloaded since the service started")
    return dict(answer)
