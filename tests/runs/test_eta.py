"""The ETA formula (scheduler/runs/eta.py): history, progress, their blend, and the edges."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.runs.eta import MIN_FRACTION, Estimate, estimate, eta_fields
from scheduler.spec.taskspec import ExecutorKind
from scheduler.status import RunStatus
from scheduler.store.history import expected_duration
from scheduler.store.models import RunTrigger
from scheduler.store.records import Run

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_expected_duration_is_the_median_of_successes() -> None:
    assert expected_duration([]) is None
    assert expected_duration([42.0]) == 42.0
    assert expected_duration([100.0, 300.0, 120.0]) == 120.0
    assert expected_duration([100.0, 200.0]) == 150.0
    assert expected_duration([1000.0, 10.0, 11.0, 12.0, 9.0]) == 11.0  # one slow run does not move it


def test_no_history_and_no_progress_is_unknown() -> None:
    assert estimate(30, None) == Estimate(None, None, False)


def test_history_alone_counts_down() -> None:
    assert estimate(0, 120) == Estimate(120, 120, False)
    assert estimate(30, 120) == Estimate(120, 90, False)
    assert estimate(120, 120) == Estimate(120, 0, False)


def test_overrun_without_progress_is_overdue_and_unknown_never_negative() -> None:
    assert estimate(150, 120) == Estimate(None, None, True)


def test_progress_zero_teaches_nothing_history_decides() -> None:
    assert estimate(30, 120, 0.0) == estimate(30, 120)
    assert estimate(30, None, 0.0) == Estimate(None, None, False)


def test_progress_one_means_finishing() -> None:
    assert estimate(30, 120, 1.0) == Estimate(30, 0, False)
    assert estimate(500, 120, 1.0) == Estimate(500, 0, True)
    assert estimate(30, None, 1.0) == Estimate(30, 0, False)


def test_progress_alone_extrapolates_the_pace() -> None:
    assert estimate(10, None, 0.25) == Estimate(40, 30, False)
    assert estimate(10, None, MIN_FRACTION / 2) == Estimate(None, None, False)  # too little to go on
    assert estimate(10, None, MIN_FRACTION).remaining_seconds == pytest.approx(990)


def test_blend_lies_between_pace_and_history() -> None:
    # half done after 10 s: the pace says 10 s left, history (120 s per run) says 60 s
    found = estimate(10, 120, 0.5)
    assert found.remaining_seconds == pytest.approx(0.5 * (10 + 0.5 * 120))  # 35 s
    assert 10 < (found.remaining_seconds or 0) < 60
    # near the end the run's own pace dominates
    late = estimate(180, 120, 0.9)
    pace, history = 180 / 0.9 * 0.1, 120 * 0.1
    assert abs((late.remaining_seconds or 0) - pace) < abs((late.remaining_seconds or 0) - history)
    # early, history dominates, and a tiny first fraction gives nothing absurd
    early = estimate(5, 120, 0.001)
    assert early.remaining_seconds == pytest.approx(0.999 * (5 + 0.999 * 120))
    assert (early.remaining_seconds or 0) < 2 * 120


def test_overrun_with_progress_still_estimates() -> None:
    found = estimate(200, 120, 0.8)
    assert found.overdue and found.remaining_seconds == pytest.approx(0.2 * (200 + 0.2 * 120))


def test_never_past_the_deadline_nor_negative() -> None:
    assert estimate(10, None, 0.02, limit=60).remaining_seconds == 60
    assert estimate(10, 120, limit=-5).remaining_seconds == 0
    assert estimate(-3, 120) == Estimate(120, 120, False)  # clock skew: elapsed counts from 0


def run(**changes: object) -> Run:
    base = Run(
        id="r-1",
        codops="alpha",
        task="job",
        loop="alpha",
        executor=ExecutorKind.PYTHON,
        version=None,
        status=RunStatus.RUNNING,
        trigger=RunTrigger.SCHEDULE,
        started_at=NOW - timedelta(seconds=30),
        finished_at=None,
        duration_seconds=None,
        outcome=None,
        error=None,
        log_path=None,
        handle=None,
        host=None,
        deadline=NOW + timedelta(hours=1),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_eta_fields_of_a_running_run() -> None:
    assert eta_fields(run(), 120.0, NOW) == {
        "expected_seconds": 120.0,
        "eta_seconds": 90.0,
        "eta_at": "2026-03-01T12:01:30.000Z",
        "overdue": False,
    }
    halfway = eta_fields(run(progress=0.5), 120.0, NOW)
    assert halfway["eta_seconds"] == pytest.approx(0.5 * (30 + 60), abs=0.1)
    capped = eta_fields(run(deadline=NOW + timedelta(seconds=20)), 120.0, NOW)
    assert capped["eta_seconds"] == 20.0


def test_eta_fields_of_a_finished_run_are_empty() -> None:
    done = run(status=RunStatus.SUCCEEDED, finished_at=NOW, duration_seconds=30.0)
    assert eta_fields(done, 120.0, NOW) == {
        "expected_seconds": None,
        "eta_seconds": None,
        "eta_at": None,
        "overdue": False,
    }
