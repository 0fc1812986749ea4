"""Files over HTTP: a run's log (text, RFC 7233 byte ranges for live tailing: 200 whole, 206 a range, 416
past the end), its artifacts (the list, and each file as a sandboxed download that is never rendered in
the dashboard's origin), and the dashboard's own files at ``/`` and ``/dashboard/<name>`` (with a CSP that
lets only the page's own script and style run)."""

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Header, HTTPException, Response
from fastapi.responses import HTMLResponse, StreamingResponse

from scheduler.http import dashboard
from scheduler.http.context import API, Shared, answers
from scheduler.runs import runlogs
from scheduler.runs.artifacts import ArtifactNotFound, open_artifact, safe_relative
from scheduler.store.models import ArtifactsState

TEXT = "text/plain; charset=utf-8"
TEXT_BODY = {"content": {TEXT: {"schema": {"type": "string"}}}}
LOG_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "the whole log", **TEXT_BODY},
    206: {"description": "the requested byte range of the log", **TEXT_BODY},
    416: {"description": "the range starts past the end of the log", **TEXT_BODY},
    **answers(_400="an unsupported Range header"),
}
DOWNLOAD: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the file, as an attachment",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
RANGE = re.compile(r"^bytes=(?P<start>[0-9]+)-(?P<end>[0-9]*)$")
# Defence in depth behind textContent: only the page's own script and style ever run.
CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)

pages = APIRouter(include_in_schema=False)
router = APIRouter(prefix=API, tags=["read"])


@pages.get("/", response_class=HTMLResponse)
def index() -> Response:
    return asset("index.html")


@pages.get("/dashboard/{name}")
def dashboard_asset(name: str) -> Response:
    if name not in dashboard.ASSETS:
        raise HTTPException(404, f"no dashboard file {name!r}")
    return asset(name)


def asset(name: str) -> Response:
    headers = {
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CSP,
    }
    return Response(dashboard.asset(name), media_type=dashboard.ASSETS[name], headers=headers)


@router.get("/runs/{run_id}/log", response_class=Response, responses=LOG_ANSWERS)
def run_log(
    shared: Shared,
    run_id: str,
    range: Annotated[str | None, Header(pattern=RANGE.pattern, description="bytes=N- or bytes=N-M")] = None,
) -> Response:
    """The run's log as text; ``Range: bytes=N-`` for what was added since byte N (live tail)."""
    found = shared.store.get_run(run_id)
    return log_response(Path(found.log_path) if found.log_path else None, range)


def log_response(path: Path | None, range_header: str | None) -> Response:
    """RFC 7233 ranges on the (capped) log: 200 whole, 206 ``bytes=N-`` / ``bytes=N-M``, 416 past the end.
    A finished run's log is stored compressed: ranges are on its decompressed text."""
    headers = {"Accept-Ranges": "bytes", "X-Content-Type-Options": "nosniff"}
    if range_header is None:
        body, _ = runlogs.read(path)
        return Response(body, status_code=200, headers=headers, media_type=TEXT)
    match = RANGE.fullmatch(range_header.strip())
    if not match:
        raise HTTPException(400, f"unsupported Range {range_header!r}: use bytes=N- or bytes=N-M")
    start = int(match["start"])
    wanted_end = int(match["end"]) if match["end"] else None
    body, size = runlogs.read(path, start, wanted_end)
    end = min(wanted_end, size - 1) if wanted_end is not None else size - 1
    if start >= size or end < start:
        headers["Content-Range"] = f"bytes */{size}"
        return Response(b"", status_code=416, headers=headers, media_type=TEXT)
    headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{size}"
    return Response(body, status_code=206, headers=headers, media_type=TEXT)


@router.get("/runs/{run_id}/artifacts")
def run_artifacts(shared: Shared, run_id: str) -> dict[str, Any]:
    """The files the run left in its artifacts directory (``state``: ``pending`` while it runs, then
    ``kept``, ``pruned`` or ``unavailable``; ``note`` says what was dropped or why there are none)."""
    found = shared.store.get_run(run_id)
    files = shared.store.artifacts(run_id)
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


@router.get("/runs/{run_id}/artifacts/{path:path}", response_class=Response, responses=DOWNLOAD)
def run_artifact(shared: Shared, run_id: str, path: str) -> Response:
    """One artifact, as a download (``application/octet-stream``, attachment, sandboxed): never
    rendered or run in the dashboard's origin."""
    found = shared.store.get_run(run_id)
    relative = str(safe_relative(path))
    recorded = {f.path: f for f in shared.store.artifacts(run_id) if not f.dropped}
    if relative not in recorded or found.artifacts_state != ArtifactsState.KEPT or not found.artifacts_dir:
        raise ArtifactNotFound(f"run {run_id} has no artifact {path!r}")
    directory = Path(found.artifacts_dir)
    fd = open_artifact(directory, relative)  # 404 now, before any header is sent
    length = os.fstat(fd).st_size
    os.close(fd)
    return StreamingResponse(
        chunks(directory, relative, length),
        media_type="application/octet-stream",
        headers=download_headers(relative, length),
    )


def chunks(directory: Path, relative: str, length: int) -> Iterator[bytes]:
    """The file's first ``length`` bytes (its size when the response began), opened again only once
    the body is wanted: nothing stays open for a client that goes away first."""
    with os.fdopen(open_artifact(directory, relative), "rb") as file:
        while length > 0 and (chunk := file.read(min(length, 1024 * 1024))):
            length -= len(chunk)
            yield chunk


def download_headers(path: str, length: int) -> dict[str, str]:
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
