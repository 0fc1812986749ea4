"""The chart's series: every run when few, downsampled when many, failures and spikes kept."""

from datetime import UTC, datetime, timedelta

from scheduler.http.dashboard import asset, durations_series

START = datetime(2026, 1, 1, tzinfo=UTC)


def runs(
    count: int, failed: frozenset[int] = frozenset(), slow: frozenset[int] = frozenset()
) -> list[tuple[str, datetime, float, str]]:
    return [
        (
            f"r{n:05d}",
            START + timedelta(minutes=n),
            1000.0 if n in slow else 10.0 + n % 3,
            "FAILED" if n in failed else "SUCCEEDED",
        )
        for n in range(count)
    ]


def test_few_runs_are_all_drawn_oldest_first() -> None:
    series = durations_series(runs(5, failed=frozenset({3})))
    assert series["total"] == 5
    assert [p["id"] for p in series["points"]] == [f"r{n:05d}" for n in range(5)]
    assert series["points"][3]["status"] == "FAILED"
    assert series["points"][0]["started_at"] == "2026-01-01T00:00:00.000Z"


def test_ten_thousand_runs_are_downsampled_keeping_failures_and_spikes() -> None:
    series = durations_series(
        runs(10_000, failed=frozenset({4321, 9999}), slow=frozenset({777})), max_points=600
    )
    points = series["points"]
    assert series["total"] == 10_000
    assert 300 <= len(points) <= 600
    ids = [p["id"] for p in points]
    assert ids == sorted(ids)  # still oldest first
    assert {"r04321", "r09999", "r00777"} <= set(ids)
    assert max(p["duration_seconds"] for p in points) == 1000.0


def test_assets_are_packaged() -> None:
    assert b'src="dashboard/app.js"' in asset("index.html")
    assert b"textContent" in asset("app.js")
