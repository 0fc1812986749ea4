"""How long a run has left, and how long a loop's pass is expected to take: the one place of the formula.

Inputs: ``H``, the task's **expected duration**: the median duration of its last ``HISTORY`` successful runs
(kept on the task, updated whenever a run succeeds); ``t``, the run's **elapsed** time; ``f``, the latest
**progress** (0..1) it reported, if any. The estimate of what is left:

1. ``f == 1``: the task says it is done and is finishing up: 0 s.
2. ``0 < f < 1`` and ``H`` known: the run's own pace says a whole run takes ``t / f``, history says ``H``;
   they are blended with weight ``f`` on the pace (history leads at the start, the run's pace near the
   end): ``D = f * (t / f) + (1 - f) * H = t + (1 - f) * H``, and the rest of the work takes
   ``remaining = (1 - f) * D``. No division by a small ``f``, so an early, tiny fraction cannot give an
   absurd figure.
3. ``0 < f < 1`` and no history: the pace alone, ``remaining = (1 - f) * t / f``, once ``f >= MIN_FRACTION``
   (below that it is too noisy to say anything: unknown).
4. No progress, or ``f == 0`` (nothing learnt): ``remaining = H - t`` while ``t <= H``. Past ``H`` the run is
   **overdue** (slower than usual) and, without progress, the ETA is unknown rather than a made-up figure.
5. Never negative, and never past the run's deadline: ``min(remaining, deadline - now)``, since the run
   is killed there.

``overdue`` is ``t > H`` in every case. A loop's **expected pass** is the sum of the expected durations of
its enabled tasks (tasks without any success yet count for nothing and are counted apart; tasks with
``every`` may not run in every pass, so for them it is an upper bound).
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scheduler.status import RunStatus
from scheduler.store.records import Run, TaskStatus, iso

MIN_FRACTION = 0.01  # without history, progress below 1 % is too little to extrapolate from


@dataclass(frozen=True)
class Estimate:
    """``total_seconds`` the run is now expected to take, ``remaining_seconds`` of it (None: unknown), and
    whether it runs longer than its history says (``overdue``)."""

    total_seconds: float | None
    remaining_seconds: float | None
    overdue: bool


def estimate(
    elapsed: float,
    expected: float | None,
    fraction: float | None = None,
    limit: float | None = None,
) -> Estimate:
    """The estimate for a run ``elapsed`` seconds in, with the task's ``expected`` duration, the run's
    latest progress ``fraction`` and the seconds ``limit`` until its deadline (all optional)."""
    t, history = max(elapsed, 0.0), expected
    overdue = history is not None and t > history
    remaining: float | None = None
    if fraction is not None and fraction >= 1.0:
        remaining = 0.0
    elif fraction is not None and fraction > 0.0 and history is not None:
        remaining = (1 - fraction) * (t + (1 - fraction) * history)
    elif fraction is not None and fraction >= MIN_FRACTION:
        remaining = (1 - fraction) * t / fraction
    elif history is not None and not overdue:
        remaining = history - t
    if remaining is None:
        return Estimate(None, None, overdue)
    remaining = max(remaining, 0.0)
    if limit is not None:
        remaining = min(remaining, max(limit, 0.0))
    return Estimate(t + remaining, remaining, overdue)


def eta_fields(run: Run | None, expected: float | None, now: datetime) -> dict[str, Any]:
    """The estimate fields of a run object (API, CLI): ``expected_seconds`` (the task's expected
    duration), ``eta_seconds`` (left), ``eta_at`` (when it should end), ``overdue``; for a RUNNING run
    only, null (and false) for any other."""
    if run is None or run.status is not RunStatus.RUNNING:
        return {"expected_seconds": None, "eta_seconds": None, "eta_at": None, "overdue": False}
    limit = (run.deadline - now).total_seconds() if run.deadline is not None else None
    found = estimate((now - run.started_at).total_seconds(), expected, run.progress, limit)
    left = found.remaining_seconds
    return {
        "expected_seconds": expected,
        "eta_seconds": None if left is None else round(left, 1),
        "eta_at": None if left is None else iso(now + timedelta(seconds=left)),
        "overdue": found.overdue,
    }


def with_estimates(
    runs: Iterable[Run], expected: Callable[[str, str], float | None], now: datetime
) -> list[dict[str, Any]]:
    """Run objects with their estimate fields; ``expected(codops, task)`` is asked once per task, and only
    for running runs."""
    known: dict[tuple[str, str], float | None] = {}
    found = []
    for run in runs:
        key = (run.codops, run.task)
        if run.status is RunStatus.RUNNING and key not in known:
            known[key] = expected(*key)
        found.append({**run.as_dict(), **eta_fields(run, known.get(key), now)})
    return found


def task_estimates(
    tasks: Iterable[TaskStatus], running: Iterable[Run], now: datetime
) -> list[dict[str, Any]]:
    """Task objects with ``expected_seconds`` and, for a task with a run in ``running``, that run's id
    (``running_run_id``), progress and estimate fields (null otherwise)."""
    by_task = {(run.codops, run.task): run for run in running}
    found = []
    for task in tasks:
        run = by_task.get((task.codops, task.task))
        found.append(
            {
                **task.as_dict(),
                **(eta_fields(run, task.expected_seconds, now) if run else eta_fields(None, None, now)),
                "expected_seconds": task.expected_seconds,
                "running_run_id": run.id if run else None,
                "progress": run.progress if run else None,
                "progress_message": run.progress_message if run else None,
                "progress_at": iso(run.progress_at) if run else None,
            }
        )
    return found
