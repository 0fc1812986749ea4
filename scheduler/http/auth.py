"""Who may change things: the one ``authorised`` dependency every mutating route has (the actions router
declares it once for all its routes; ``tests/http/test_routes.py`` fails on a mutating route without it).

The bearer token is compared in constant time (``hmac.compare_digest``). A missing or wrong token is 401
(with ``WWW-Authenticate: Bearer``); without a configured token every change is refused with 403, never
left open.
"""

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from scheduler.http.context import Shared, answers

# One scheme for every app; create_app names the app's own variable in its OpenAPI description.
bearer = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

AUTHORISED = answers(
    _401="the bearer token is missing or wrong", _403="no API token is configured: actions are disabled"
)


async def authorised(shared: Shared, credentials: Credentials) -> None:
    token = shared.token
    if not token:
        raise HTTPException(
            403,
            f"changes (trigger, kill, rerun, keep) are disabled: no API token is set in ${shared.token_env}",
        )
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})
