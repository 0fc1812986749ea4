"""``/healthz`` (the process answers), ``/readyz`` (the service's ``ready()``: restart recovery done and
the state database answers; 503 otherwise; ``details`` says what the service could not set up, such as
memory caps) and ``/metrics`` (the Prometheus exposition of the app's
registry). ``/healthz`` and ``/metrics`` never read the store: they stay 200 while the database is down."""

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from scheduler.http.context import Shared

router = APIRouter(tags=["health"])
EXPOSITION: dict[int | str, dict[str, Any]] = {
    200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}
}


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "starting, or no database"}})
def readyz(shared: Shared) -> JSONResponse:
    ok = shared.ready()
    answer = {"status": "ready" if ok else "starting", "details": dict(shared.details())}
    return JSONResponse(answer, status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response, responses=EXPOSITION)
def prometheus(shared: Shared) -> Response:
    return Response(shared.metrics.render(), media_type=CONTENT_TYPE_LATEST)
