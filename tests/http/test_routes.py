"""The route table as a rule: every route that changes something depends on ``authorised``, whichever
router it was added to (so a new action cannot forget the token check), reading stays open, and the
OpenAPI description names the app's own token variable."""

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from scheduler.http.api import create_app
from scheduler.http.auth import authorised
from scheduler.http.hooks import signed
from scheduler.metrics import Metrics

ACTIONS = {"keep", "unkeep", "trigger", "kill", "rerun"}


def app(**options: Any) -> FastAPI:
    return create_app(None, Metrics(), **{"token": "t", **options})  # type: ignore[arg-type]  # routes only


def checks(route: RouteContext) -> list[Any]:
    return [dependency.call for dependency in route.dependant.dependencies]


def test_every_mutating_route_depends_on_authorised() -> None:
    served = list(iter_route_contexts(app().routes))  # the routers' routes as served, with their dependencies
    mutating = [route for route in served if set(route.methods or ()) - {"GET", "HEAD"}]
    assert {route.name for route in mutating} >= ACTIONS  # the enumeration sees the routers' routes
    hooks = [route for route in mutating if signed in checks(route)]
    assert [route.path for route in hooks] == ["/api/v1/hooks/git"]  # a webhook proves the secret instead
    for route in mutating:
        assert isinstance(route.original_route, APIRoute), (
            route.path
        )  # a plain Starlette route has no Depends
        assert authorised in checks(route) or signed in checks(route), route.path
    reads = [
        route for route in served if route.methods == {"GET"} and isinstance(route.original_route, APIRoute)
    ]
    assert len(reads) > 10 and all(authorised not in checks(route) for route in reads)  # reading is open


def test_the_bearer_scheme_names_the_apps_token_variable() -> None:
    for variable in ("PEACH_API_TOKEN", "OTHER_TOKEN"):
        description = app(token_env=variable).openapi()
        assert description["components"]["securitySchemes"] == {
            "HTTPBearer": {
                "type": "http",
                "scheme": "bearer",
                "description": f"the value of ${variable} on the scheduler",
            }
        }
        secured = [
            op["operationId"]
            for item in description["paths"].values()
            for op in item.values()
            if "security" in op
        ]
        assert len(secured) == len(ACTIONS)
