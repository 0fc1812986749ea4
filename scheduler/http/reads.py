"""The JSON reads under ``/api/v1``, open to anyone who can reach the port: organisations, loops, tasks,
problems, runs (paged, with progress and ETA), one run, its manifest, the diff of two runs, the durations
series of the dashboard's chart and what the dashboard links to. A name the store does not know is 404,
two runs of different tasks to diff 409 (the ``PeachError`` handler of ``create_app``)."""

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from scheduler.http import dashboard
from scheduler.http.context import API, Shared
from scheduler.runs.eta import task_estimates, with_estimates
from scheduler.runs.rundiff import diff_runs
from scheduler.status import RunStatus
from scheduler.store.records import Run
from scheduler.store.store import Store

router = APIRouter(prefix=API, tags=["read"])


@router.get("/dashboard")
def dashboard_links(shared: Shared) -> dict[str, Any]:
    """What the dashboard links to: each organisation's http(s) repository (for ``/commit/<sha>``)
    and the YARN ResourceManager UI (for ``/cluster/app/<id>``), when known."""
    return {"repositories": dict(shared.repositories), "yarn_ui": shared.yarn_ui}


@router.get("/organisations")
def organisations(shared: Shared) -> list[dict[str, Any]]:
    """Each organisation at a glance, with its loop's expected pass duration (``loops``)."""
    loops = shared.store.loop_expectations()
    found = []
    for org in shared.store.organisations():
        expectation = loops.get(org.codops)
        found.append(
            {
                **org.as_dict(),
                "expected_pass_seconds": expectation.expected_pass_seconds if expectation else None,
                "tasks_without_history": expectation.tasks_without_history if expectation else 0,
            }
        )
    return found


@router.get("/loops")
def loops(shared: Shared) -> list[dict[str, Any]]:
    """Every loop's expected pass duration: the sum of its enabled tasks' expected durations (the
    median of their last successful runs); tasks that never succeeded are counted apart."""
    return [expectation.as_dict() for _, expectation in sorted(shared.store.loop_expectations().items())]


@router.get("/tasks")
def tasks(shared: Shared, codops: str | None = None, loop: str | None = None) -> list[dict[str, Any]]:
    """Tasks with their state, expected duration and, while running, their run's progress and ETA."""
    running = shared.store.running_runs(codops=codops, loop=loop)
    return task_estimates(shared.store.task_states(codops, loop=loop), running, datetime.now(UTC))


@router.get("/organisations/{codops}/tasks")
def organisation_tasks(shared: Shared, codops: str) -> list[dict[str, Any]]:
    running = shared.store.running_runs(codops=codops)
    return task_estimates(shared.store.task_states(codops), running, datetime.now(UTC))


@router.get("/organisations/{codops}/problems")
def problems(shared: Shared, codops: str) -> list[dict[str, Any]]:
    return [problem.as_dict() for problem in shared.store.problems(codops)]


@router.get("/runs")
def runs(
    shared: Shared,
    codops: str | None = None,
    task: str | None = None,
    loop: str | None = None,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: str | None = None,
) -> dict[str, Any]:
    """Newest first; the next page is ``before=<next>``."""
    store = shared.store
    page = store.list_runs(codops=codops, task=task, loop=loop, status=status, limit=limit, before=before)
    return {"runs": with_eta(store, page), "next": page[-1].id if len(page) == limit else None}


@router.get("/durations")
def durations(
    shared: Shared,
    codops: str,
    task: str,
    points: Annotated[int, Query(ge=10, le=5000)] = dashboard.MAX_POINTS,
) -> dict[str, Any]:
    """A task's run durations oldest first, downsampled to about ``points`` (the dashboard's chart)."""
    return dashboard.durations_series(shared.store.durations(codops, task), points)


@router.get("/runs/{run_id}")
def run(shared: Shared, run_id: str) -> dict[str, Any]:
    """One run; ``manifest`` links to what it ran (null for runs recorded before manifests); while it
    runs, with its latest progress and its ETA (``scheduler.runs.eta``)."""
    store = shared.store
    found = with_eta(store, [store.get_run(run_id)])[0]
    found["manifest"] = f"{API}/runs/{run_id}/manifest" if store.has_manifest(run_id) else None
    return found


@router.get("/runs/{run_id}/manifest")
def manifest(shared: Shared, run_id: str) -> dict[str, Any]:
    """What the run ran: ``commit``, ``runner`` (the runner script as executed), ``requirements``
    (declared), ``frozen`` (the exact ``name==version`` set installed; null when the environment
    was never built), ``spark`` (the effective spark-submit settings, secrets redacted; null for the
    python executor), ``args``, ``definition_file`` and ``definition`` (the task's YAML)."""
    return shared.store.get_manifest(run_id).as_dict()


@router.get("/runs/{run_id}/diff/{other_id}")
def diff(shared: Shared, run_id: str, other_id: str) -> dict[str, Any]:
    """What changed from run ``run_id`` to run ``other_id`` (two runs of one task): ``code`` (unified
    diff of the runner scripts, task code as lines), ``definition`` (of the YAML), ``dependencies``
    (``added``, ``removed``, ``changed`` packages and their ``diff``), ``commit``, ``spark`` and
    ``args`` (each changed key with its ``a`` and ``b`` values). 409 for runs of different tasks."""
    store = shared.store
    a, b = store.get_run(run_id), store.get_run(other_id)
    return diff_runs(a, store.get_manifest(a.id), b, store.get_manifest(b.id)).as_dict()


def with_eta(store: Store, runs: Iterable[Run]) -> list[dict[str, Any]]:
    return with_estimates(runs, store.expected_seconds, datetime.now(UTC))
