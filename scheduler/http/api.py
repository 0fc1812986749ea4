"""The HTTP surface on one port: JSON API under ``/api/v1``, ``/metrics``, ``/healthz``, ``/readyz``, ``/``.

Reading is open; trigger, kill, keep and rerun need the bearer token named by ``http.api_token_env``
(compared in constant time, ``scheduler.http.auth``). Without a configured token they are refused, never
left open. FastAPI gives the OpenAPI description (``/api/v1/openapi.json``) from the same code that serves
the routes.

``create_app`` puts the app's ``Context`` on ``app.state`` and includes the routers: ``health``, ``reads``,
``files`` (run logs, artifacts, the dashboard's own files), ``actions`` and ``hooks`` (push webhooks,
authenticated by their signature instead of the token). Errors are answered here, for
every router: a ``PeachError`` lookup is 404, any other ``PeachError`` 409, and a state database that does
not answer 503 with ``Retry-After`` (counted in ``peach_state_database_errors_total{source="api"}``).
"""

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from scheduler.errors import PeachError
from scheduler.http import actions, files, health, hooks, reads
from scheduler.http.context import API, Context, answers
from scheduler.metrics import Metrics
from scheduler.runs.supervise import KillRequests
from scheduler.store.store import Store

# Every route may answer these: the PeachError handler below maps lookups to 404, conflicts to 409.
COMMON = answers(_404="no such organisation, task or run", _409="the request conflicts with the state")
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
    wake: Callable[[str], None] = lambda codops: None,
    webhook_secret: str | None = None,
    webhook_secret_env: str = "PEACH_WEBHOOK_SECRET",  # noqa: S107 (a variable name)
    pushed: Callable[[set[str], str], list[str]] | None = None,
) -> FastAPI:
    """``checkouts(codops)``: the organisation's repository checkouts, where a rerun's commit is looked
    for before the request is accepted (None: not checked here, only when the loop takes it).
    ``wake(codops)``: after a trigger or rerun request, the organisation's loops take it at once.
    ``pushed(repository URLs, branch)``: a verified push webhook (``scheduler.http.hooks``); what it
    changed, as ``codops: url``."""
    app = FastAPI(
        title="peach-scheduler",
        version="1",
        openapi_url=f"{API}/openapi.json",
        docs_url=None,  # Swagger UI loads from a CDN: the service works offline
        redoc_url=None,
        responses=COMMON,
    )
    app.state.context = Context(
        store=store,
        metrics=metrics,
        token=token,
        token_env=token_env,
        kills=kills,
        ready=ready,
        repositories=repositories or {},
        yarn_ui=yarn_ui,
        checkouts=checkouts,
        wake=wake,
        webhook_secret=webhook_secret,
        webhook_secret_env=webhook_secret_env,
        pushed=pushed,
    )
    app.add_exception_handler(PeachError, peach_error)
    for unavailable in (OperationalError, InterfaceError, PoolTimeout):
        app.add_exception_handler(unavailable, database_down)
    for router in (health.router, files.pages, reads.router, files.router, actions.router, hooks.router):
        app.include_router(router)
    describe_token(app, token_env)
    return app


async def peach_error(request: Request, exc: Exception) -> JSONResponse:
    status = 404 if isinstance(exc, LookupError) else 409
    return JSONResponse({"detail": str(exc)}, status_code=status)


async def database_down(request: Request, exc: Exception) -> JSONResponse:
    """The state database does not answer (restarting, unreachable): 503 and a retry hint, not a 500."""
    request.app.state.context.metrics.state_error("api")
    detail = "the state database is unavailable; try again shortly"
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": str(RETRY_AFTER)})


def describe_token(app: FastAPI, token_env: str) -> None:
    """The bearer scheme is shared by every app (the routers are module-level); the description names
    this app's variable, set in the generated OpenAPI description (FastAPI's "extending OpenAPI")."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        for scheme in schema.get("components", {}).get("securitySchemes", {}).values():
            scheme["description"] = f"the value of ${token_env} on the scheduler"
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
