"""The HTTP client of the scheduler's API (``/api/v1``), typed, for notebooks and scripts.

It imports nothing of the service (only ``httpx`` and the standard library), so a notebook kernel can
install it alone. Reading is usually open; trigger, rerun and kill send the bearer token (the value of
``$PEACH_API_TOKEN`` on the scheduler). The service's URL and the token default from ``PEACH_URL`` and
``PEACH_API_TOKEN`` in the environment, so a platform's JupyterHub can set them once for everyone.

Errors: ``PeachClientError`` is the root; ``NotFound`` (also a ``LookupError``), ``Conflict``,
``Unauthorized`` (also a ``PermissionError``), ``Unavailable`` (the service or its database does not
answer; also a ``ConnectionError``) and ``WaitTimeout`` (also a ``TimeoutError``).
"""

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

URL_ENV = "PEACH_URL"
TOKEN_ENV = "PEACH_API_TOKEN"  # noqa: S105 (a variable name)
FINAL = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "KILLED", "LOST"})
T = TypeVar("T")


class PeachClientError(Exception):
    """Anything the client could not do; ``status`` is the HTTP status when the service answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(PeachClientError, LookupError):
    pass


class Conflict(PeachClientError):
    pass


class Unauthorized(PeachClientError, PermissionError):
    pass


class Unavailable(PeachClientError, ConnectionError):
    pass


class WaitTimeout(PeachClientError, TimeoutError):
    pass


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _build(cls: type[T], data: dict[str, Any], dates: tuple[str, ...] = ()) -> T:
    """``cls`` from the API's object: the fields it declares (newer keys are ignored), dates parsed."""
    values = {f.name: data.get(f.name) for f in fields(cls)}  # type: ignore[arg-type]
    for name in dates:
        values[name] = _when(values[name])
    return cls(**values)


@dataclass(frozen=True)
class Organisation:
    codops: str
    tasks: int
    running: int
    failing: int
    errors: int
    last_started_at: datetime | None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> "Organisation":
        return _build(cls, data, ("last_started_at",))


@dataclass(frozen=True)
class Task:
    """A task with its state (``PENDING``, ``RUNNING``, ``FINISHED``, ``INVALID``) and its last run."""

    codops: str
    task: str
    loop: str
    executor: str
    state: str
    last_status: str | None
    last_run_id: str | None
    last_started_at: datetime | None
    last_finished_at: datetime | None
    last_duration_seconds: float | None
    enabled: bool
    expected_seconds: float | None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> "Task":
        return _build(cls, data, ("last_started_at", "last_finished_at"))


@dataclass(frozen=True)
class Run:
    """One run (SPEC §5): ``version`` is the commit, ``short_version`` the short hash shown."""

    id: str
    codops: str
    task: str
    loop: str
    executor: str
    version: str | None
    short_version: str | None
    status: str
    trigger: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    outcome: str | None
    error: str | None
    application_id: str | None
    rerun_of: str | None
    progress: float | None
    progress_message: str | None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> "Run":
        return _build(cls, data, ("started_at", "finished_at"))

    @property
    def finished(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True)
class Trigger:
    """A trigger or rerun request, taken by the task's loop at its next pass."""

    id: int
    codops: str
    task: str
    loop: str
    requested_at: datetime
    requested_by: str | None
    rerun_of: str | None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> "Trigger":
        return _build(cls, data, ("requested_at",))


@dataclass(frozen=True)
class DurationPoint:
    """One point of a task's durations chart (oldest first)."""

    id: str
    started_at: datetime
    duration_seconds: float | None
    status: str

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> "DurationPoint":
        return _build(cls, data, ("started_at",))


@dataclass(frozen=True)
class LogChunk:
    """Bytes ``start`` to ``start + len(data)`` of a run's log, of ``size`` bytes when it was read.
    ``next`` is where to ask from for what is added later (live tailing)."""

    data: bytes
    start: int
    size: int

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")

    @property
    def next(self) -> int:
        return self.start + len(self.data)


class Client:
    """The scheduler's API at ``url`` (default ``$PEACH_URL``); ``token`` (default ``$PEACH_API_TOKEN``)
    for the changes. ``transport`` is httpx's, for tests or proxies."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        url = url or os.environ.get(URL_ENV)
        if not url:
            raise PeachClientError(f"no scheduler URL: pass url=... or set ${URL_ENV}")
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self._sleep = sleep
        self._http = httpx.Client(base_url=self.url + "/api/v1", timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- reads ----------------------------------------------------------------------------------------

    def organisations(self) -> list[Organisation]:
        return [Organisation.from_api(item) for item in self._json("GET", "/organisations")]

    def tasks(self, codops: str | None = None, *, loop: str | None = None) -> list[Task]:
        """Every task (of ``codops``, or of ``loop``: ``metadata`` for the shared loop)."""
        params = {k: v for k, v in (("codops", codops), ("loop", loop)) if v}
        return [Task.from_api(item) for item in self._json("GET", "/tasks", params=params)]

    def runs(
        self,
        codops: str | None = None,
        task: str | None = None,
        *,
        loop: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[Run]:
        """One page of runs, newest first (``before``: the id the next page starts after)."""
        wanted = {"codops": codops, "task": task, "loop": loop, "status": status, "before": before}
        params: dict[str, Any] = {k: v for k, v in wanted.items() if v}
        params["limit"] = limit
        page = self._json("GET", "/runs", params=params)
        return [Run.from_api(item) for item in page["runs"]]

    def iter_runs(self, codops: str | None = None, task: str | None = None, **filters: Any) -> Iterator[Run]:
        """Every run, newest first, page after page (``runs``' filters)."""
        before = None
        limit = filters.pop("limit", 200)
        while True:
            page = self.runs(codops, task, limit=limit, before=before, **filters)
            yield from page
            if len(page) < limit:
                return
            before = page[-1].id

    def run(self, run_id: str) -> Run:
        return Run.from_api(self._json("GET", f"/runs/{quote(run_id, safe='')}"))

    def durations(self, codops: str, task: str, *, points: int = 600) -> list[DurationPoint]:
        """The task's run durations oldest first, at most about ``points`` (failures kept visible)."""
        series = self._json("GET", "/durations", params={"codops": codops, "task": task, "points": points})
        return [DurationPoint.from_api(item) for item in series["points"]]

    def log(self, run: "Run | str", start: int = 0, end: int | None = None) -> LogChunk:
        """The run's log from byte ``start`` (to ``end``, inclusive, when given). Asking past the end gives
        an empty chunk: tail a running run with ``log(run, chunk.next)``."""
        run_id = run.id if isinstance(run, Run) else run
        path = f"/runs/{quote(run_id, safe='')}/log"
        if start == 0 and end is None:
            response = self._send("GET", path)
            return LogChunk(response.content, 0, len(response.content))
        response = self._send("GET", path, headers={"Range": f"bytes={start}-{'' if end is None else end}"})
        size = int(response.headers.get("Content-Range", "*/0").rpartition("/")[2] or 0)
        if response.status_code == 416:
            return LogChunk(b"", start, size)
        if response.status_code == 200:  # a server that ignores ranges: cut it here
            body = response.content
            return LogChunk(body[start : None if end is None else end + 1], start, len(body))
        return LogChunk(response.content, start, size)

    def log_text(self, run: "Run | str") -> str:
        return self.log(run).text

    # -- changes (bearer token) ------------------------------------------------------------------------

    def trigger(self, codops: str, task: str) -> Trigger:
        """Run the task at its loop's next opportunity (even if disabled or not due)."""
        path = f"/organisations/{quote(codops, safe='')}/tasks/{quote(task, safe='')}/trigger"
        return Trigger.from_api(self._json("POST", path, auth=True))

    def rerun(self, run: "Run | str") -> Trigger:
        """Run the run's task again at its commit, with its dependency set and arguments."""
        run_id = run.id if isinstance(run, Run) else run
        return Trigger.from_api(self._json("POST", f"/runs/{quote(run_id, safe='')}/rerun", auth=True))

    def kill(self, run: "Run | str") -> Run:
        run_id = run.id if isinstance(run, Run) else run
        return Run.from_api(self._json("POST", f"/runs/{quote(run_id, safe='')}/kill", auth=True))

    # -- waiting --------------------------------------------------------------------------------------

    def wait(self, target: "Run | Trigger | str", *, timeout: float | None = None, poll: float = 2.0) -> Run:
        """Wait until the run (a ``Run``, a run id, or the run a ``Trigger`` starts) has ended; its final
        record. ``WaitTimeout`` after ``timeout`` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if isinstance(target, Trigger):
            run_id = self._started_by(target, deadline, poll).id
        else:
            run_id = target.id if isinstance(target, Run) else target
        while True:
            found = self.run(run_id)
            if found.finished:
                return found
            self._pause(deadline, poll, f"run {run_id} to end (it is {found.status})")

    def _started_by(self, request: Trigger, deadline: float | None, poll: float) -> Run:
        """The run a trigger or rerun request started: the task's first run since the request, started
        by hand (``manual``) or as the rerun of the same run."""
        while True:
            for run in self.runs(request.codops, request.task, limit=20):
                started = run.started_at
                if started is None or started < request.requested_at:
                    continue
                if (request.rerun_of and run.rerun_of == request.rerun_of) or (
                    not request.rerun_of and run.trigger == "manual"
                ):
                    return run
            self._pause(deadline, poll, f"the run of {request.codops}/{request.task} to start")

    def _pause(self, deadline: float | None, poll: float, what: str) -> None:
        if deadline is not None and time.monotonic() + poll > deadline:
            raise WaitTimeout(f"gave up waiting for {what}")
        self._sleep(poll)

    # -- HTTP -----------------------------------------------------------------------------------------

    def _json(self, method: str, path: str, *, auth: bool = False, **options: Any) -> Any:
        return self._send(method, path, auth=auth, **options).json()

    def _send(self, method: str, path: str, *, auth: bool = False, **options: Any) -> httpx.Response:
        headers = dict(options.pop("headers", {}))
        if auth:
            if not self.token:
                raise Unauthorized(f"{method} {path} needs the API token: pass token=... or set ${TOKEN_ENV}")
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = self._http.request(method, path, headers=headers, **options)
        except httpx.HTTPError as exc:
            raise Unavailable(f"{method} {self.url}/api/v1{path}: {exc}") from None
        if response.status_code < 400 or response.status_code == 416:
            return response
        raise _error(response, f"{method} {path}")


def _error(response: httpx.Response, what: str) -> PeachClientError:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    message = f"{what}: {response.status_code} {detail}"
    kinds: dict[int, type[PeachClientError]] = {
        401: Unauthorized,
        403: Unauthorized,
        404: NotFound,
        409: Conflict,
        503: Unavailable,
    }
    return kinds.get(response.status_code, PeachClientError)(message, response.status_code)
