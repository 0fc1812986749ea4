"""The capped, timestamped run log on its own (no processes)."""

import re
from datetime import UTC, datetime
from pathlib import Path

from executors.logs import CappedLog, LogLimits

STAMP = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "


class Ticks:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_stamped_once_whatever_the_chunking(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / "log", wall=lambda: 1_795_000_000.5)
    for chunk in (b"one\ntw", b"o\n", b"", b"three\nfour"):
        log.output(chunk)
    log.note("the end")
    log.close()
    text = (tmp_path / "log").read_bytes()
    stamp = datetime.fromtimestamp(1_795_000_000.5, UTC).strftime("%Y-%m-%dT%H:%M:%S.500Z ").encode()
    assert text == stamp + b"one\n" + stamp + b"two\n" + stamp + b"three\n" + stamp + b"four\n" + (
        stamp + b"[peach] the end\n"
    )
    assert log.total == log.stored == len(text) and log.dropped == 0


def test_small_log_is_kept_whole(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / "log", LogLimits(100, 100))
    log.output(b"x" * 50 + b"\n" + b"y" * 50 + b"\n")
    log.close()
    text = (tmp_path / "log").read_bytes()
    assert b"dropped" not in text and text.count(b"x") == 50 and text.count(b"y") == 50


def test_head_and_tail_kept_and_dropped_bytes_counted(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / "log", LogLimits(1000, 1000))
    for i in range(1000):
        log.output(b"line %04d\n" % i)
    log.close()
    text = (tmp_path / "log").read_bytes()
    lines = text.splitlines()
    assert lines[0].endswith(b"line 0000") and lines[-1].endswith(b"line 0999")
    assert all(re.match(STAMP, line) for line in lines)
    marker = re.search(rb"\[peach\] \.\.\. (\d+) bytes dropped", text)
    assert marker is not None
    kept = [int(line[-4:]) for line in lines if b"line " in line]
    assert kept == sorted(kept) and len(kept) < 1000
    per_line = len(lines[0]) + 1
    assert int(marker.group(1)) == (1000 - len(kept)) * per_line == log.dropped
    assert len(text) <= 2000 + 200 and log.stored == len(text)
    assert log.total == 1000 * per_line


def test_tail_reaches_the_file_while_writing_at_most_every_interval(tmp_path: Path) -> None:
    ticks = Ticks()
    log = CappedLog(tmp_path / "log", LogLimits(100, 100, flush_interval=1.0), clock=ticks)
    log.output(b"a" * 99 + b"\n")  # fills the head
    log.output(b"first tail line\n")
    assert b"first tail line" not in (tmp_path / "log").read_bytes()  # not yet: interval not over
    ticks.now = 1.5
    log.output(b"second tail line\n")
    assert b"second tail line" in (tmp_path / "log").read_bytes()
    ticks.now = 1.6
    log.output(b"b" * 300 + b"\n")
    log.flush_if_due()
    assert b"b" * 50 not in (tmp_path / "log").read_bytes()
    log.close()
    text = (tmp_path / "log").read_bytes()
    assert b"b" * 50 in text and b"bytes dropped" in text and b"a" * 75 in text


def test_last_line_is_the_error_summary(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / "log")
    log.output(b"Traceback (most recent call last):\n  File 'x'\nValueError: bad input\n\n")
    assert log.last_line() == "ValueError: bad input"
    log.close()
