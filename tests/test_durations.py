import pytest

from scheduler.durations import format_duration, parse_duration
from scheduler.errors import DurationError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("6h", 21600),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("2d", 172800),
        (90, 90),
        ("90", 90),
        ("250ms", 0.25),
        (" 1h 5m ", 3900),
    ],
)
def test_parses(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "5 hrs", "h", "-5m", "0s", 0, True, None, ".inf", float("inf"), "1h-5m"]
)
def test_rejects_with_its_own_error(text: object) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(text)
    assert repr(text) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_formats_short() -> None:
    assert [format_duration(s) for s in (5400, 300, 42, 0.5, 90061)] == [
        "1h30m",
        "5m",
        "42s",
        "0.5s",
        "1d1h1m1s",
    ]


def test_zero_only_where_allowed() -> None:
    assert parse_duration("0s", zero=True) == 0.0
    with pytest.raises(DurationError, match="greater than zero"):
        parse_duration("0s")
    with pytest.raises(DurationError):
        parse_duration(-1, zero=True)
