"""A run's log file: timestamped, streamed, bounded to a head and a tail, readable while the run goes on.

Design (one writer thread per run, files only, memory bounded by the tail size):

- Every line of output gets a UTC timestamp (the time its bytes were read); lines from peach itself are
  marked ``[peach]``. Stamping works on whole chunks (``bytes.replace``), so a 1 GB stream costs
  seconds, not minutes.
- The first ``head_bytes`` go straight to the file, cut at a line end when one is near.
- After that, output goes into the tail: a deque of chunks holding at most ``tail_bytes`` (plus one
  chunk); older chunks fall off and are counted as dropped.
- Secret values the run received are masked (``executors.masking``) before anything is stamped or stored:
  its output, the driver logs fetched into it and peach's own notes alike.
- The tail is written into the file right after the head: at most every ``flush_interval`` seconds while
  the run goes, and at ``close``. When anything was dropped, a marker line between head and tail says
  how many bytes (``[peach] ... 1234 bytes dropped ...``). So the file on disk is always head + marker
  + the recent tail, never more than ``head_bytes + tail_bytes`` plus a line, and a reader sees output
  at most ``flush_interval`` old. (A reader may catch the file mid-rewrite of the tail; the next read
  is whole again.)
"""

import contextlib
import gzip
import logging
import os
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from executors.masking import Masker

log = logging.getLogger(__name__)

MiB = 1024 * 1024
_READ_SIZE = MiB
_RECENT = 4096


@dataclass(frozen=True)
class LogLimits:
    """How much of a run's output is kept: the first ``head_bytes`` and the last ``tail_bytes``."""

    head_bytes: int = 5 * MiB
    tail_bytes: int = 5 * MiB
    flush_interval: float = 1.0

    @classmethod
    def capped(cls, max_bytes: int, flush_interval: float = 1.0) -> "LogLimits":
        """Split one cap evenly between head and tail."""
        return cls(max_bytes // 2, max_bytes - max_bytes // 2, flush_interval)


def _stamp(wall: float) -> bytes:
    moment = datetime.fromtimestamp(wall, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.").encode() + b"%03dZ " % (moment.microsecond // 1000)


def note_line(text: str, wall: float) -> bytes:
    """A ``[peach]`` line as the log writes it, for notes added after the run (artifacts collected)."""
    return _stamp(wall) + b"[peach] " + text.encode("utf-8", "replace") + b"\n"


def append_note(path: Path, text: str, wall: Callable[[], float] = time.time) -> None:
    """Append one ``[peach]`` line to a log no process is writing any more (creating it if need be):
    how a run ended when its supervisor was gone, e.g. closed as LOST at a restart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = note_line(text, wall())
    if path.name.endswith(".gz"):  # settled already (the scheduler died before closing the run): one
        with gzip.open(path, "rb") as packed:  # more gzip member, so that the file stays one gzip stream
            ends_open = (packed.read() or b"\n")[-1:] != b"\n"
        with gzip.open(path, "ab") as packed:
            packed.write(b"\n" + line if ends_open else line)
        return
    with path.open("ab+") as file:
        if file.seek(0, os.SEEK_END) > 0:
            file.seek(-1, os.SEEK_END)
            if file.read(1) != b"\n":
                line = b"\n" + line
        file.write(line)


class CappedLog:
    """The log file of one run. Only one thread writes; any thread or process may read the file.

    ``append``: continue a log an earlier process wrote (a run re-attached after a restart); what is
    there counts as head, so the file still stays within the cap plus what it held.
    """

    def __init__(
        self,
        path: Path,
        limits: LogLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        append: bool = False,
        masker: Masker | None = None,
    ) -> None:
        self.path = path
        self.masker = masker or Masker(())
        self.limits = limits or LogLimits()
        self._clock, self._wall = clock, wall
        self._file = path.open("r+b" if append and path.exists() else "wb")
        self._head = 0  # bytes written to the head region
        self._head_open = True
        self._tail: deque[bytes] = deque()
        self._tail_len = 0
        self._dirty = False
        self._last_flush = clock()
        self._line_start = True
        self._head_ends_line = True
        self._recent = b""
        self.failure: str | None = None  # why writing the file failed (disk full): nothing more is written
        self.total = 0  # every stamped byte ever written, kept or not
        self.stored = 0  # bytes in the file (as of the last write or flush)
        self.dropped = 0  # bytes of output left out of the file (as of the last flush)
        if append:
            self._continue()

    def _continue(self) -> None:
        size = self._file.seek(0, os.SEEK_END)
        self._head = self.stored = self.total = size
        self._head_open = size < self.limits.head_bytes
        if size:
            self._file.seek(size - 1)
            self._head_ends_line = self._line_start = self._file.read(1) == b"\n"

    def output(self, data: bytes) -> None:
        """Append raw output of the run (any chunking; lines may span calls)."""
        data = self.masker.feed(data)
        if data:
            self._append_output(data)

    def _append_output(self, data: bytes) -> None:
        prefix = _stamp(self._wall())
        body = data[:-1] if data.endswith(b"\n") else data
        stamped = body.replace(b"\n", b"\n" + prefix)
        if self._line_start:
            stamped = prefix + stamped
        if body is not data:
            stamped += b"\n"
        self._line_start = data.endswith(b"\n")
        self._recent = (self._recent + data[-_RECENT:])[-_RECENT:]
        self._append(stamped)

    def note(self, text: str) -> None:
        """Append a line from peach itself (start, end, kill) to the log."""
        text = self.masker.text(text)  # output held back as a possible secret stays held
        line = _stamp(self._wall()) + b"[peach] " + text.encode("utf-8", "replace") + b"\n"
        self._append(line if self._line_start else b"\n" + line)
        self._line_start = True

    def last_line(self) -> str | None:
        """The last non-empty line of the run's own output (e.g. the exception line of a traceback)."""
        for line in reversed(self._recent.splitlines()):
            if line.strip():
                return line.strip().decode("utf-8", "replace")[:500]
        return None

    def _append(self, data: bytes) -> None:
        self.total += len(data)
        if self.failure is not None:
            return  # counted as dropped; the file keeps what was written before
        try:
            self._store(data)
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        """Writing failed (no space left, quota, I/O error): stop writing; ``close`` says so if it can."""
        self.failure = str(exc)
        log.warning("log %s: writing failed, the rest of the output is dropped: %s", self.path, exc)

    def _store(self, data: bytes) -> None:
        if self._head_open:
            room = self.limits.head_bytes - self._head
            if len(data) <= room:
                self._file.write(data)
                self._head += len(data)
                self._head_ends_line = data.endswith(b"\n")
                self.stored = self._head
                self._file.flush()
                return
            slack = self._slack(self.limits.head_bytes)
            cut = data.rfind(b"\n", max(0, room - slack), room) + 1
            if not cut and not (self._head_ends_line and room <= slack):
                cut = room  # no line end near: cut inside the line
            if cut:
                self._file.write(data[:cut])
                self._head += cut
                self._head_ends_line = data[:cut].endswith(b"\n")
            self._head_open = False
            data = data[cut:]
        self._tail.append(data)
        self._tail_len += len(data)
        while self._tail_len - len(self._tail[0]) >= self.limits.tail_bytes:
            self._tail_len -= len(self._tail.popleft())
        self._dirty = True
        self.flush_if_due()

    @staticmethod
    def _slack(size: int) -> int:
        """How far a cut may move to land on a line end: a quarter of the region, at most 4 KiB."""
        return min(4096, size // 4)

    def flush_if_due(self) -> None:
        """Flush the tail if it changed and the last flush is ``flush_interval`` old."""
        if self._dirty and self._clock() - self._last_flush >= self.limits.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Write the current tail (and the dropped-bytes marker) after the head."""
        if not self._dirty or self.failure is not None:
            return
        try:
            self._write_tail()
        except OSError as exc:
            self._fail(exc)

    def _write_tail(self) -> None:
        tail = b"".join(self._tail)
        excess = self._tail_len - self.limits.tail_bytes
        if excess > 0:
            newline = tail.find(b"\n", excess, excess + self._slack(self.limits.tail_bytes))
            tail = tail[newline + 1 if newline >= 0 else excess :]
        self.dropped = dropped = self.total - self._head - len(tail)
        self._file.seek(self._head)
        if dropped:
            self._file.write(
                (b"" if self._head_ends_line else b"\n")
                + b"%s[peach] ... %d bytes dropped (log keeps the first %d and the last %d bytes) ...\n"
                % (_stamp(self._wall()), dropped, self.limits.head_bytes, self.limits.tail_bytes)
            )
        self._file.write(tail)
        self.stored = self._file.tell()
        self._file.truncate()
        self._file.flush()
        self._dirty = False
        self._last_flush = self._clock()

    def close(self) -> None:
        """Write the tail and close. After a write failure the file keeps what was written, ended by a
        line saying why the rest is missing when there is room for it again."""
        if self._file.closed:
            return
        held = self.masker.flush()
        if held:
            self._append_output(held)
        self._dirty = True
        self.flush()
        if self.failure is not None:
            with contextlib.suppress(OSError):
                self._file.seek(0, os.SEEK_END)
                self._file.write(
                    b"\n%s[peach] log truncated: writing it failed (%s); the rest of the output is lost\n"
                    % (_stamp(self._wall()), self.failure.encode("utf-8", "replace"))
                )
                self._file.flush()
        with contextlib.suppress(OSError):  # a buffered write that failed fails again here
            self._file.close()
        if self.failure is not None:
            with contextlib.suppress(OSError):
                self.stored = self.path.stat().st_size
            self.dropped = max(0, self.total - self.stored)


class LogPump(threading.Thread):
    """Copies a pipe into a ``CappedLog`` until end of file or ``stop()``; never holds more than a chunk."""

    def __init__(
        self, fd: int, sink: CappedLog, label: str, watch: Callable[[bytes], None] | None = None
    ) -> None:
        super().__init__(name=f"peach-log-{label}", daemon=True)
        self._fd, self._sink, self._label, self._watch = fd, sink, label, watch
        self._halt = threading.Event()
        self.lock = threading.Lock()  # held while writing, so notes from the supervisor never interleave

    def run(self) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._fd, selectors.EVENT_READ)
                while not self._halt.is_set():
                    if not selector.select(timeout=0.2):
                        with self.lock:
                            self._sink.flush_if_due()
                        continue
                    data = os.read(self._fd, _READ_SIZE)
                    if not data:
                        return
                    with self.lock:
                        self._sink.output(data)
                    if self._watch is not None:
                        self._watch(data)
        except Exception:
            log.exception("run %s: reading its output failed", self._label)

    def stop(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for end of file, then stop reading; True when all output was read."""
        self.join(timeout)
        clean = not self.is_alive()
        self._halt.set()
        self.join()
        return clean
