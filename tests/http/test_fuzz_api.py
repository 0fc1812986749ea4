"""Hostile input over HTTP: schemathesis generates requests from the service's own OpenAPI description
(``/api/v1/openapi.json``), valid and invalid, and sends them to a real service (real git repositories,
real runs, SQLite) with the API token, without it, and with a wrong one. No answer may be a 5xx, every
answer must conform to the description (status code, content type, headers, body schema), and none may
hang (a per-request timeout). Every described operation is fuzzed, so new routes are covered as added.

``PEACH_FUZZ_EXAMPLES`` (default 10 per operation, mode and token) sets the size; CI keeps the default.
(schemathesis' own ``@schema.parametrize()`` cannot take a fixture-served schema under pytest 9.2, so
each operation's strategy is driven here with hypothesis directly.)
"""

import os
import re
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi.routing import iter_route_contexts
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from scheduler.config import load_config
from scheduler.service.service import Service
from scheduler.status import RunStatus
from tests.helpers.orgs import FAIL, QUICK, org_repo, write_config

TOKEN = "fuzz-token-0123456789"
EXAMPLES = int(os.environ.get("PEACH_FUZZ_EXAMPLES", "10"))
REQUEST_TIMEOUT = 10  # seconds: an answer slower than this is a hang
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
AUTH = {
    "token": {"Authorization": f"Bearer {TOKEN}"},
    "no-token": {},
    "wrong-token": {"Authorization": f"Bearer {TOKEN[:-1]}"},
}

pytestmark = pytest.mark.fuzz


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service with history (succeeded and failed runs, a validation problem) and its HTTP server
    up; the loops are not started, so the store only changes through the API."""
    tmp = tmp_path_factory.mktemp("fuzz-api")
    alpha = org_repo(tmp, "alpha", {"ok": (QUICK, {}), "broken": (FAIL, {})})
    meta = {"loop": "metadata", "timeout": "1m"}
    beta = org_repo(tmp, "beta", {"meta": (QUICK, meta), "bad": (QUICK, {"colour": "red"})})
    config = load_config(write_config(tmp, {"alpha": alpha, "beta": beta}))
    started = Service(config, {"PEACH_TEST_TOKEN": TOKEN})
    try:
        runs = started.once()
        assert {run.status for run in runs} == {RunStatus.SUCCEEDED, RunStatus.FAILED}
        started.start_http()
        yield started
    finally:
        started.close()


@pytest.fixture(scope="module")
def api_schema(service: Service) -> schemathesis.BaseSchema:
    # Valid requests may still meet the state: 404/409 (schemathesis' defaults), and 416 for a log range
    # that starts past the end of what the run has written so far.
    accepted = ["2xx", "3xx", "401", "403", "404", "409", "416", "429", "5xx"]
    config = schemathesis.Config.from_dict(
        {"checks": {"positive_data_acceptance": {"expected-statuses": accepted}}}
    )
    return schemathesis.openapi.from_url(
        f"http://127.0.0.1:{service.port}/api/v1/openapi.json", config=config
    )


def operations(api_schema: schemathesis.BaseSchema) -> list[schemathesis.APIOperation]:
    return [result.ok() for result in api_schema.get_all_operations()]


@pytest.mark.parametrize("auth", AUTH)
@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_every_operation_answers_as_described(
    service: Service, api_schema: schemathesis.BaseSchema, auth: str, mode: schemathesis.GenerationMode
) -> None:
    fuzzed, every = [], operations(api_schema)
    known = st.none() | st.sampled_from(real_names(service))
    for operation in every:

        @FUZZ
        @given(case=operation.as_strategy(generation_mode=mode), real=known)
        def check(case: schemathesis.Case, real: dict[str, str] | None) -> None:
            if real is not None:  # half the time, names that exist in the store, so deeper paths run
                for where in (case.path_parameters, case.query):
                    if where is not None:
                        where.update({k: v for k, v in real.items() if k in where})
            headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
            case.headers = {**headers, **AUTH[auth]}
            note(f"{case.method} {case.formatted_path} query={case.query} headers={case.headers}")
            # ignored_auth assumes the negative mode's generated credentials replaced the valid ones
            excluded = [schemathesis.checks.ignored_auth] if auth == "token" else []
            response = case.call_and_validate(timeout=REQUEST_TIMEOUT, excluded_checks=excluded)
            if case.method != "GET" and auth != "token":
                assert response.status_code in (401, 403), "a mutation went through without the token"

        try:
            check()
        except Unsatisfiable:  # negative mode: no parameter that can be wrong (any path text is valid)
            assert mode is schemathesis.GenerationMode.NEGATIVE
            continue
        fuzzed.append(operation.label)
    assert len(fuzzed) == len(every) if mode is schemathesis.GenerationMode.POSITIVE else len(fuzzed) >= 3


def real_names(service: Service) -> list[dict[str, str]]:
    """Path and query values that exist: every run id (with its codops and task) and every task."""
    runs = service.store.list_runs(limit=500)
    names = [{"run_id": run.id, "codops": run.codops, "task": run.task, "before": run.id} for run in runs]
    names += [{"codops": task.codops, "task": task.task} for task in service.store.task_states()]
    assert runs and names
    return names


def test_the_description_covers_every_api_route(
    service: Service, api_schema: schemathesis.BaseSchema
) -> None:
    """Nothing under /api/v1 is served without being described (so the fuzzing above reaches it)."""
    described = {
        (method.upper(), path) for path, item in api_schema.raw_schema["paths"].items() for method in item
    }
    served = {
        (method, re.sub(r":\w+}", "}", route.path))  # {path:path} is described as {path}
        for route in iter_route_contexts(service.app.routes)  # the routers' routes, as served
        for method in route.methods or ()
        if (route.path or "").startswith("/api/v1/") and method != "HEAD"
    }
    served.discard(("GET", "/api/v1/openapi.json"))
    assert served and served <= described
