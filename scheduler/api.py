"""The HTTP surface on one port: JSON API under ``/api/v1``, ``/metrics``, ``/healthz``, ``/readyz``, ``/``.

Reading is open; trigger and kill need the bearer token named by ``http.api_token_env`` (compared in
constant time). Without a configured token they are refused, never left open. FastAPI gives the OpenAPI
description (``/api/v1/openapi.json``) from the same code that serves the routes.
"""

import hmac
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from scheduler import dashboard
from scheduler.errors import PeachError
from scheduler.metrics import Metrics
from scheduler.models import RunStatus
from scheduler.runs import KillRequests
from scheduler.state import Store

API = "/api/v1"
RETRY_AFTER = 5  # seconds, in a 503 while the state database does not answer


def create_app(
    store: Store,
    metrics: Metrics,
    *,
    token: str | None,
    token_env: str = "PEACH_API_TOKEN",  # noqa: S107 (a variable name)
    kills: KillRequests | None = None,
    ready: Callable[[], bool] = lambda: True,
    repositories: Mapping[str, str] | None = None,
    yarn_ui: str | None = None,
) -> FastAPI:
    repositories = repositories or {}
    app = FastAPI(
        title="peach-scheduler",
        version="1",
        openapi_url=f"{API}/openapi.json",
        docs_url=None,  # Swagger UI loads from a CDN: the service works offline
        redoc_url=None,
    )

    def authorised(authorization: Annotated[str | None, Header()] = None) -> None:
        if not token:
            raise HTTPException(403, f"trigger and kill are disabled: no API token is set in ${token_env}")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(PeachError)
    async def _not_found(request: Request, exc: PeachError) -> JSONResponse:
        status = 404 if isinstance(exc, LookupError) else 409
        return JSONResponse({"detail": str(exc)}, status_code=status)

    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        """The state database does not answer (restarting, unreachable): 503 and a retry hint, not a 500."""
        metrics.state_error("api")
        detail = "the state database is unavailable; try again shortly"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": str(RETRY_AFTER)})

    for unavailable in (OperationalError, InterfaceError, PoolTimeout):
        app.add_exception_handler(unavailable, _database_down)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        ok = ready()
        return JSONResponse({"status": "ready" if ok else "starting"}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["health"], response_class=Response)
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> Response:
        return _asset("index.html")

    @app.get("/dashboard/{name}", include_in_schema=False)
    def dashboard_asset(name: str) -> Response:
        if name not in dashboard.ASSETS:
            raise HTTPException(404, f"no dashboard file {name!r}")
        return _asset(name)

    @app.get(f"{API}/dashboard", tags=["read"])
    def dashboard_links() -> dict[str, Any]:
        """What the dashboard links to: each organisation's http(s) repository (for ``/commit/<sha>``)
        and the YARN ResourceManager UI (for ``/cluster/app/<id>``), when known."""
        return {"repositories": dict(repositories), "yarn_ui": yarn_ui}

    @app.get(f"{API}/organisations", tags=["read"])
    def organisations() -> list[dict[str, Any]]:
        return [org.as_dict() for org in store.organisations()]

    @app.get(f"{API}/tasks", tags=["read"])
    def tasks(codops: str | None = None, loop: str | None = None) -> list[dict[str, Any]]:
        return [task.as_dict() for task in store.task_states(codops, loop=loop)]

    @app.get(f"{API}/organisations/{{codops}}/tasks", tags=["read"])
    def organisation_tasks(codops: str) -> list[dict[str, Any]]:
        return [task.as_dict() for task in store.task_states(codops)]

    @app.get(f"{API}/organisations/{{codops}}/problems", tags=["read"])
    def problems(codops: str) -> list[dict[str, Any]]:
        return [problem.as_dict() for problem in store.problems(codops)]

    @app.get(f"{API}/runs", tags=["read"])
    def runs(
        codops: str | None = None,
        task: str | None = None,
        loop: str | None = None,
        status: RunStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        before: str | None = None,
    ) -> dict[str, Any]:
        """Newest first; the next page is ``before=<next>``."""
        page = store.list_runs(codops=codops, task=task, loop=loop, status=status, limit=limit, before=before)
        return {"runs": [run.as_dict() for run in page], "next": page[-1].id if len(page) == limit else None}

    @app.get(f"{API}/durations", tags=["read"])
    def durations(
        codops: str, task: str, points: Annotated[int, Query(ge=10, le=5000)] = dashboard.MAX_POINTS
    ) -> dict[str, Any]:
        """A task's run durations oldest first, downsampled to about ``points`` (the dashboard's chart)."""
        return dashboard.durations_series(store.durations(codops, task), points)

    @app.get(f"{API}/runs/{{run_id}}", tags=["read"])
    def run(run_id: str) -> dict[str, Any]:
        return store.get_run(run_id).as_dict()

    @app.get(f"{API}/runs/{{run_id}}/log", tags=["read"], response_class=Response)
    def run_log(run_id: str, range: Annotated[str | None, Header()] = None) -> Response:
        """The run's log as text; ``Range: bytes=N-`` for what was added since byte N (live tail)."""
        found = store.get_run(run_id)
        return _log_response(Path(found.log_path) if found.log_path else None, range)

    @app.post(
        f"{API}/organisations/{{codops}}/tasks/{{task}}/trigger",
        tags=["act"],
        status_code=202,
        dependencies=[Depends(authorised)],
    )
    def trigger(codops: str, task: str) -> dict[str, Any]:
        """Run the task at its loop's next opportunity, even if disabled or not due."""
        return store.request_trigger(codops, task, requested_by="api").as_dict()

    @app.post(
        f"{API}/runs/{{run_id}}/kill", tags=["act"], status_code=202, dependencies=[Depends(authorised)]
    )
    def kill(run_id: str) -> dict[str, Any]:
        found = store.get_run(run_id)
        if found.status is not RunStatus.RUNNING or kills is None:
            raise HTTPException(409, f"run {run_id} is {found.status.value}, not running here")
        kills.request(run_id, "killed through the API")
        return found.as_dict()

    return app


def _log_response(path: Path | None, range_header: str | None) -> Response:
    """RFC 7233 ranges on the (capped) log: 200 whole, 206 ``bytes=N-`` / ``bytes=N-M``, 416 past the end."""
    headers = {"Accept-Ranges": "bytes", "X-Content-Type-Options": "nosniff"}
    text = "text/plain; charset=utf-8"
    size = path.stat().st_size if path and path.exists() else 0
    start, end = 0, size - 1
    if range_header is not None:
        match = _RANGE.fullmatch(range_header.strip())
        if not match:
            raise HTTPException(400, f"unsupported Range {range_header!r}: use bytes=N- or bytes=N-M")
        start = int(match["start"])
        end = min(int(match["end"]), size - 1) if match["end"] else size - 1
        if start >= size or end < start:
            headers["Content-Range"] = f"bytes */{size}"
            return Response(b"", status_code=416, headers=headers, media_type=text)
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    body = b""
    if path and size:
        with path.open("rb") as log:
            log.seek(start)
            body = log.read(end - start + 1)
    return Response(body, status_code=206 if range_header else 200, headers=headers, media_type=text)


# Defence in depth behind textContent: only the page's own script and style ever run.
_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
_RANGE = re.compile(r"bytes=(?P<start>\d+)-(?P<end>\d*)")


def _asset(name: str) -> Response:
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    headers["Content-Security-Policy"] = _CSP
    return Response(dashboard.asset(name), media_type=dashboard.ASSETS[name], headers=headers)


def token_from_environment(name: str, environ: dict[str, str] | None = None) -> str | None:
    value = (os.environ if environ is None else environ).get(name, "")
    return value or None
