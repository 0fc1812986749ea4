"""Metric families kept as exposition text, for the families with a series per task or organisation.

``prometheus_client`` builds the text of every sample on every scrape: with 10,000 tasks that is tens of
thousands of samples walked and formatted each time (seconds, measured by ``bench/metrics_scrape.py``).
A ``TextFamily`` keeps each series' line(s) as text, rebuilt only when that series changes (a run ends,
a loop completes a pass), so a scrape only joins strings. The text is the Prometheus text format 0.0.4,
the same lines ``prometheus_client`` writes (``promtool check metrics`` checks it in the tests).
"""

import bisect
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import cast

from prometheus_client.utils import floatToGoString

# prometheus_client's own number format (1.0, +Inf, 1.5e+07), so both halves of /metrics write alike
number = cast(Callable[[float], str], floatToGoString)

Sample = tuple[str, dict[str, str], float]


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class TextFamily:
    """A counter, gauge or histogram family whose series are kept as text lines."""

    def __init__(
        self,
        name: str,
        documentation: str,
        kind: str,
        labelnames: Sequence[str],
        buckets: Sequence[float] = (),
    ) -> None:
        self.name = f"{name}_total" if kind == "counter" else name
        self.kind, self.labelnames = kind, tuple(labelnames)
        self.buckets = (*buckets, math.inf) if kind == "histogram" else ()
        self._header = f"# HELP {self.name} {documentation}\n# TYPE {self.name} {kind}\n"
        self._values: dict[tuple[str, ...], list[float]] = {}  # value; histogram: bucket counts, sum
        self._lines: dict[tuple[str, ...], str] = {}
        self._lock = threading.Lock()

    def inc(self, labels: Sequence[str], amount: float = 1.0) -> None:
        self._change(labels, lambda value: value.__setitem__(0, value[0] + amount))

    def set(self, labels: Sequence[str], amount: float) -> None:
        self._change(labels, lambda value: value.__setitem__(0, amount))

    def observe(self, labels: Sequence[str], amount: float) -> None:
        def add(value: list[float]) -> None:
            value[bisect.bisect_left(self.buckets, amount)] += 1  # the first bucket with le >= amount
            value[-1] += amount

        self._change(labels, add)

    def remove(self, labels: Sequence[str]) -> None:
        with self._lock:
            self._values.pop(tuple(labels), None)
            self._lines.pop(tuple(labels), None)

    def get(self, labels: Sequence[str]) -> float | None:
        with self._lock:
            value = self._values.get(tuple(labels))
        return None if value is None else value[0]

    def text(self) -> str:
        with self._lock:  # announced even without series, as prometheus_client does
            return self._header + "".join(self._lines.values())

    def samples(self) -> Iterator[Sample]:
        with self._lock:
            values = {labels: list(value) for labels, value in self._values.items()}
        for labels, value in values.items():
            named = dict(zip(self.labelnames, labels, strict=True))
            if self.kind != "histogram":
                yield self.name, named, value[0]
                continue
            total = 0.0
            for bound, count in zip(self.buckets, value, strict=False):
                total += count
                yield f"{self.name}_bucket", {**named, "le": number(bound)}, total
            yield f"{self.name}_count", named, total
            yield f"{self.name}_sum", named, value[-1]

    def _change(self, labels: Sequence[str], change: Callable[[list[float]], None]) -> None:
        key = tuple(labels)
        with self._lock:
            value = self._values.get(key)
            if value is None:
                value = self._values[key] = [0.0] * (len(self.buckets) + 1 if self.buckets else 1)
            change(value)
            self._lines[key] = self._render(key, value)

    def _render(self, key: tuple[str, ...], value: list[float]) -> str:
        if self.kind != "histogram":
            return f"{self.name}{_labels(self.labelnames, key)} {number(value[0])}\n"
        lines, total = [], 0.0
        for bound, count in zip(self.buckets, value, strict=False):
            total += count
            le = f'le="{number(bound)}"'
            lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {number(total)}\n")
        plain = _labels(self.labelnames, key)
        lines.append(f"{self.name}_count{plain} {number(total)}\n")
        lines.append(f"{self.name}_sum{plain} {number(value[-1])}\n")
        return "".join(lines)
