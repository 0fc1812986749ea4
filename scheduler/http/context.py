"""What every router of the HTTP surface shares: the ``Context`` one app serves (store, metrics, token,
kill requests, readiness, dashboard links, checkouts), handed to the routes by ``Depends(context)`` from
``app.state``, and the OpenAPI description of error answers (``{"detail": ...}``).

``create_app`` (``scheduler.http.api``) builds the context once; the routers are module-level and hold no
state of their own, so two apps in one process (the tests) never share anything but code.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel

from scheduler.metrics import Metrics
from scheduler.runs.supervise import KillRequests
from scheduler.store.store import Store

API = "/api/v1"


@dataclass(frozen=True)
class Context:
    """What ``create_app`` was given (its signature and docstring say what each is), for the routes."""

    store: Store
    metrics: Metrics
    token: str | None
    token_env: str
    kills: KillRequests | None
    ready: Callable[[], bool]
    repositories: Mapping[str, str]
    yarn_ui: str | None
    checkouts: Callable[[str], Sequence[Path]] | None
    wake: Callable[[str], None]  # a codops: its loops take a new trigger now, not after their pause
    webhook_secret: str | None
    webhook_secret_env: str
    pushed: Callable[[set[str], str], list[str]] | None  # repository URLs, branch -> what it changed


async def context(request: Request) -> Context:
    """The app's context (async: read in the event loop, no worker thread for an attribute lookup)."""
    found: Context = request.app.state.context
    return found


Shared = Annotated[Context, Depends(context)]


class ErrorAnswer(BaseModel):
    detail: str


def answers(**described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error answers (``{"detail": ...}``), by status code: ``_404="..."``."""
    return {int(code[1:]): {"description": text, "model": ErrorAnswer} for code, text in described.items()}
