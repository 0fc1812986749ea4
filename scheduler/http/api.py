"""The HTTP surface on one port: JSON API under ``/api/v1``, ``/metrics``, ``/healthz``, ``/readyz``, ``/``.

Reading is open; trigger, kill and rerun need the bearer token named by ``http.api_token_env`` (compared in
constant time). Without a configured token they are refused, never left open. FastAPI gives the OpenAPI
description (``/api/v1/openapi.json``) from the same code that serves the routes.
"""

import hmac
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from scheduler.errors import PeachError
from scheduler.http import dashboard
from scheduler.metrics import Metrics
from scheduler.runs import runlogs
from scheduler.runs.artifacts import ArtifactNotFound, open_artifact, safe_relative
from scheduler.runs.eta import task_estimates, with_estimates
from scheduler.runs.reruns import check_request
from scheduler.runs.rundiff import diff_runs
from scheduler.runs.supervise import KillRequests
from scheduler.status import RunStatus
from scheduler.store.models import ArtifactsState
from scheduler.store.records import Run
from scheduler.store.store import Store

API = "/api/v1"
TEXT = "text/plain; charset=utf-8"


def _answers(**described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error answers (``{"detail": ...}``), by status code: ``_404="..."``."""
    return {int(code[1:]): {"description": text, "model": ErrorAnswer} for code, text in described.items()}


class ErrorAnswer(BaseModel):
    detail: str


# Every route may answer these: the PeachError handler below maps lookups to 404, conflicts to 409.
COMMON = _answers(_404="no such organisation, task or run", _409="the request conflicts with the state")
AUTHORISED = _answers(
    _401="the bearer token is missing or wrong", _403="no API token is configured: actions are disabled"
)
TEXT_BODY = {"content": {TEXT: {"schema": {"type": "string"}}}}
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
    checkouts: Callable[[str], Sequence[Path]] | None = None,
) -> FastAPI:
    """``checkouts(codops)``: the organisation's repository checkouts, where a rerun's commit is looked
    for before the request is accepted (None: not checked here, only when the loop takes it)."""
    repositories = repositories or {}
    app = FastAPI(
        title="peach-scheduler",
        version="1",
        openapi_url=f"{API}/openapi.json",
        docs_url=None,  # Swagger UI loads from a CDN: the service works offline
        redoc_url=None,
        responses=COMMON,
    )
    bearer = HTTPBearer(auto_error=False, description=f"the value of ${token_env} on the scheduler")

    def authorised(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if not token:
            raise HTTPException(
                403, f"changes (trigger, kill, rerun, keep) are disabled: no API token is set in ${token_env}"
            )
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
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

    @app.get("/readyz", tags=["health"], responses={503: {"description": "starting, or no database"}})
    def readyz() -> JSONResponse:
        ok = ready()
        return JSONResponse({"status": "ready" if ok else "starting"}, status_code=200 if ok else 503)

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
    )
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
        """Each organisation at a glance, with its loop's expected pass duration (``loops``)."""
        loops = store.loop_expectations()
        found = []
        for org in store.organisations():
            expectation = loops.get(org.codops)
            found.append(
                {
                    **org.as_dict(),
                    "expected_pass_seconds": expectation.expected_pass_seconds if expectation else None,
                    "tasks_without_history": expectation.tasks_without_history if expectation else 0,
                }
            )
        return found

    @app.get(f"{API}/loops", tags=["read"])
    def loops() -> list[dict[str, Any]]:
        """Every loop's expected pass duration: the sum of its enabled tasks' expected durations (the
        median of their last successful runs); tasks that never succeeded are counted apart."""
        return [expectation.as_dict() for _, expectation in sorted(store.loop_expectations().items())]

    @app.get(f"{API}/tasks", tags=["read"])
    def tasks(codops: str | None = None, loop: str | None = None) -> list[dict[str, Any]]:
        """Tasks with their state, expected duration and, while running, their run's progress and ETA."""
        running = store.running_runs(codops=codops, loop=loop)
        return task_estimates(store.task_states(codops, loop=loop), running, datetime.now(UTC))

    @app.get(f"{API}/organisations/{{codops}}/tasks", tags=["read"])
    def organisation_tasks(codops: str) -> list[dict[str, Any]]:
        running = store.running_runs(codops=codops)
        return task_estimates(store.task_states(codops), running, datetime.now(UTC))

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
        return {"runs": _with_eta(store, page), "next": page[-1].id if len(page) == limit else None}

    @app.get(f"{API}/durations", tags=["read"])
    def durations(
        codops: str, task: str, points: Annotated[int, Query(ge=10, le=5000)] = dashboard.MAX_POINTS
    ) -> dict[str, Any]:
        """A task's run durations oldest first, downsampled to about ``points`` (the dashboard's chart)."""
        return dashboard.durations_series(store.durations(codops, task), points)

    @app.get(f"{API}/runs/{{run_id}}", tags=["read"])
    def run(run_id: str) -> dict[str, Any]:
        """One run; ``manifest`` links to what it ran (null for runs recorded before manifests); while it
        runs, with its latest progress and its ETA (``scheduler.runs.eta``)."""
        found = _with_eta(store, [store.get_run(run_id)])[0]
        found["manifest"] = f"{API}/runs/{run_id}/manifest" if store.has_manifest(run_id) else None
        return found

    @app.get(f"{API}/runs/{{run_id}}/manifest", tags=["read"])
    def manifest(run_id: str) -> dict[str, Any]:
        """What the run ran: ``commit``, ``runner`` (the runner script as executed), ``requirements``
        (declared), ``frozen`` (the exact ``name==version`` set installed; null when the environment
        was never built), ``spark`` (the effective spark-submit settings, secrets redacted; null for the
        python executor), ``args``, ``definition_file`` and ``definition`` (the task's YAML)."""
        return store.get_manifest(run_id).as_dict()

    @app.get(f"{API}/runs/{{run_id}}/diff/{{other_id}}", tags=["read"])
    def diff(run_id: str, other_id: str) -> dict[str, Any]:
        """What changed from run ``run_id`` to run ``other_id`` (two runs of one task): ``code`` (unified
        diff of the runner scripts, task code as lines), ``definition`` (of the YAML), ``dependencies``
        (``added``, ``removed``, ``changed`` packages and their ``diff``), ``commit``, ``spark`` and
        ``args`` (each changed key with its ``a`` and ``b`` values). 409 for runs of different tasks."""
        a, b = store.get_run(run_id), store.get_run(other_id)
        return diff_runs(a, store.get_manifest(a.id), b, store.get_manifest(b.id)).as_dict()

    @app.get(
        f"{API}/runs/{{run_id}}/log",
        tags=["read"],
        response_class=Response,
        responses={
            200: {"description": "the whole log", **TEXT_BODY},
            206: {"description": "the requested byte range of the log", **TEXT_BODY},
            416: {"description": "the range starts past the end of the log", **TEXT_BODY},
            **_answers(_400="an unsupported Range header"),
        },
    )
    def run_log(
        run_id: str,
        range: Annotated[
            str | None, Header(pattern=_RANGE.pattern, description="bytes=N- or bytes=N-M")
        ] = None,
    ) -> Response:
        """The run's log as text; ``Range: bytes=N-`` for what was added since byte N (live tail)."""
        found = store.get_run(run_id)
        return _log_response(Path(found.log_path) if found.log_path else None, range)

    @app.get(f"{API}/runs/{{run_id}}/artifacts", tags=["read"])
    def run_artifacts(run_id: str) -> dict[str, Any]:
        """The files the run left in its artifacts directory (``state``: ``pending`` while it runs, then
        ``kept``, ``pruned`` or ``unavailable``; ``note`` says what was dropped or why there are none)."""
        found = store.get_run(run_id)
        files = store.artifacts(run_id)
        kept = [f for f in files if not f.dropped]
        return {
            "run_id": run_id,
            "state": found.artifacts_state,
            "note": found.artifacts_note,
            "keep": found.keep,
            "total_bytes": sum(f.size for f in kept),
            "artifacts": [
                {**f.as_dict(), "url": f"{API}/runs/{quote(run_id)}/artifacts/{quote(f.path)}"} for f in kept
            ],
            "dropped": [f.as_dict() for f in files if f.dropped],
        }

    @app.get(
        f"{API}/runs/{{run_id}}/artifacts/{{path:path}}",
        tags=["read"],
        response_class=Response,
        responses={
            200: {
                "description": "the file, as an attachment",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    def run_artifact(run_id: str, path: str) -> Response:
        """One artifact, as a download (``application/octet-stream``, attachment, sandboxed): never
        rendered or run in the dashboard's origin."""
        found = store.get_run(run_id)
        relative = str(safe_relative(path))
        recorded = {f.path: f for f in store.artifacts(run_id) if not f.dropped}
        if (
            relative not in recorded
            or found.artifacts_state != ArtifactsState.KEPT
            or not found.artifacts_dir
        ):
            raise ArtifactNotFound(f"run {run_id} has no artifact {path!r}")
        directory = Path(found.artifacts_dir)
        fd = open_artifact(directory, relative)  # 404 now, before any header is sent
        length = os.fstat(fd).st_size
        os.close(fd)
        return StreamingResponse(
            _chunks(directory, relative, length),
            media_type="application/octet-stream",
            headers=_download_headers(relative, length),
        )

    def set_keep(run_id: str, keep: bool) -> dict[str, Any]:
        return store.set_keep(run_id, keep).as_dict()

    @app.put(
        f"{API}/runs/{{run_id}}/keep", tags=["act"], dependencies=[Depends(authorised)], responses=AUTHORISED
    )
    def keep(run_id: str) -> dict[str, Any]:
        """Keep the run's artifacts whatever the retention policy."""
        return set_keep(run_id, True)

    @app.delete(
        f"{API}/runs/{{run_id}}/keep", tags=["act"], dependencies=[Depends(authorised)], responses=AUTHORISED
    )
    def unkeep(run_id: str) -> dict[str, Any]:
        """Let retention prune the run's artifacts again."""
        return set_keep(run_id, False)

    @app.post(
        f"{API}/organisations/{{codops}}/tasks/{{task}}/trigger",
        tags=["act"],
        status_code=202,
        dependencies=[Depends(authorised)],
        responses=AUTHORISED,
    )
    def trigger(codops: str, task: str) -> dict[str, Any]:
        """Run the task at its loop's next opportunity, even if disabled or not due."""
        return store.request_trigger(codops, task, requested_by="api").as_dict()

    @app.post(
        f"{API}/runs/{{run_id}}/kill",
        tags=["act"],
        status_code=202,
        dependencies=[Depends(authorised)],
        responses=AUTHORISED,
    )
    def kill(run_id: str) -> dict[str, Any]:
        found = store.get_run(run_id)
        if found.status is not RunStatus.RUNNING or kills is None:
            raise HTTPException(409, f"run {run_id} is {found.status.value}, not running here")
        kills.request(run_id, "killed through the API")
        return found.as_dict()

    @app.post(
        f"{API}/runs/{{run_id}}/rerun",
        tags=["act"],
        status_code=202,
        dependencies=[Depends(authorised)],
        responses=AUTHORISED,
    )
    def rerun(run_id: str) -> dict[str, Any]:
        """Run this run's task again at the run's commit, with the dependency set it had installed and
        the same arguments, at its loop's next pass; the new run has ``trigger`` rerun and ``rerun_of``.
        404 for an unknown run or one without a manifest, 409 when its commit is gone."""
        found = store.get_run(run_id)
        recorded = store.get_manifest(run_id)
        if checkouts is not None:
            check_request(checkouts(found.codops), found, recorded)
        return store.request_rerun(run_id, requested_by="api").as_dict()

    return app


def _with_eta(store: Store, runs: Iterable[Run]) -> list[dict[str, Any]]:
    return with_estimates(runs, store.expected_seconds, datetime.now(UTC))


def _log_response(path: Path | None, range_header: str | None) -> Response:
    """RFC 7233 ranges on the (capped) log: 200 whole, 206 ``bytes=N-`` / ``bytes=N-M``, 416 past the end.
    A finished run's log is stored compressed: ranges are on its decompressed text."""
    headers = {"Accept-Ranges": "bytes", "X-Content-Type-Options": "nosniff"}
    text = TEXT
    if range_header is None:
        body, _ = runlogs.read(path)
        return Response(body, status_code=200, headers=headers, media_type=text)
    match = _RANGE.fullmatch(range_header.strip())
    if not match:
        raise HTTPException(400, f"unsupported Range {range_header!r}: use bytes=N- or bytes=N-M")
    start = int(match["start"])
    wanted_end = int(match["end"]) if match["end"] else None
    body, size = runlogs.read(path, start, wanted_end)
    end = min(wanted_end, size - 1) if wanted_end is not None else size - 1
    if start >= size or end < start:
        headers["Content-Range"] = f"bytes */{size}"
        return Response(b"", status_code=416, headers=headers, media_type=text)
    headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{size}"
    return Response(body, status_code=206, headers=headers, media_type=text)


def _chunks(directory: Path, relative: str, length: int) -> Iterator[bytes]:
    """The file's first ``length`` bytes (its size when the response began), opened again only once
    the body is wanted: nothing stays open for a client that goes away first."""
    with os.fdopen(open_artifact(directory, relative), "rb") as file:
        while length > 0 and (chunk := file.read(min(length, 1024 * 1024))):
            length -= len(chunk)
            yield chunk


def _download_headers(path: str, length: int) -> dict[str, str]:
    """A download, never a page: attachment, no sniffing, and a sandbox CSP in case it is opened."""
    name = path.rsplit("/", 1)[-1]
    plain = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return {
        "Content-Length": str(length),
        "Content-Disposition": f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "Cache-Control": "no-store",
    }


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
_RANGE = re.compile(r"^bytes=(?P<start>[0-9]+)-(?P<end>[0-9]*)$")


def _asset(name: str) -> Response:
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    headers["Content-Security-Policy"] = _CSP
    return Response(dashboard.asset(name), media_type=dashboard.ASSETS[name], headers=headers)
