"""The one duration parser: ``30s``, ``5m``, ``6h``, ``1h30m``, ``1.5h``, ``2d``, or a number of seconds."""

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

from scheduler.errors import DurationError

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_NUMBER = re.compile(r"\s*\d+(?:\.\d+)?\s*")
_WHOLE = re.compile(r"(?:\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h|d|w))+\s*")


def parse_duration(value: object, zero: bool = False) -> float:
    """Return seconds (> 0; >= 0 with ``zero``) for a duration given as a number of seconds or a string
    like ``1h30m``."""
    if isinstance(value, bool):
        raise DurationError(f"expected a duration like 30s, 5m, 6h or 1h30m, got {value!r}")
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        seconds = float(value)
    elif isinstance(value, str) and _WHOLE.fullmatch(value):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))
    else:
        raise DurationError(f"cannot parse duration {value!r}: use e.g. 30s, 5m, 6h or 1h30m")
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        raise DurationError(f"duration {value!r} must be a finite number greater than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """Short human form: ``1h30m``, ``5m``, ``42s``, ``0.5s``."""
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"
    total = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts) or "0s"


Seconds = Annotated[float, BeforeValidator(parse_duration)]  # a duration field in a pydantic model
SecondsOrZero = Annotated[float, BeforeValidator(lambda value: parse_duration(value, zero=True))]
