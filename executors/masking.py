"""Secret values out of a run's log: every value a run receives is written ``***``, as the log is written.

A ``Masker`` knows a run's secret values and their common encodings (URL-quoted, with and without ``/``
kept, ``+`` for spaces; base64 of the whole value, standard and URL-safe, with and without padding). It
works on a stream (``feed``, then ``flush`` at the end): output arrives in chunks of any size, so the end
of a chunk that could be the start of a secret is held back until the next chunk says whether it is
(Airflow's ``SecretsMasker`` works per log record; a process's pipe has no records). Only a suffix that
is a proper prefix of some masked form is ever held, so ordinary output is not delayed. ``text`` masks a
whole string at once (a ``[peach]`` note, a progress message, an outcome).

Values shorter than ``MIN_LENGTH`` are not masked (as Airflow's ``min_length_masked_secret``): masking
``no`` or ``1`` would rewrite every line; the run's log says which secrets these are (by name).
"""

import base64
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = b"***"
MIN_LENGTH = 5


def forms(value: str) -> set[bytes]:
    """The byte strings that stand for ``value`` in output: the value and its common encodings."""
    raw = value.encode("utf-8")
    b64 = {base64.b64encode(raw), base64.urlsafe_b64encode(raw)}
    quoted = {quote(value, safe=""), quote(value), quote_plus(value), quote_plus(value, safe="")}
    return {raw, *b64, *(b.rstrip(b"=") for b in b64), *(q.encode() for q in quoted)}


class Masker:
    """Masks ``values`` (and their encodings) in a stream of bytes; one thread feeds it."""

    def __init__(self, values: Iterable[str]) -> None:
        kept = {v for v in values if len(v) >= MIN_LENGTH}
        self.forms = sorted({f for v in kept for f in forms(v)}, key=len, reverse=True)
        self._pattern = re.compile(b"|".join(re.escape(f) for f in self.forms)) if self.forms else None
        self._firsts = frozenset(f[0] for f in self.forms)
        self._longest = max((len(f) for f in self.forms), default=0)
        self._held = b""

    def __bool__(self) -> bool:
        return self._pattern is not None

    def whole(self, data: bytes) -> bytes:
        """``data`` masked as a whole."""
        return data if self._pattern is None else self._pattern.sub(MASK, data)

    def text(self, text: str) -> str:
        """``text`` masked as a whole."""
        if self._pattern is None:
            return text
        return self.whole(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")

    def feed(self, data: bytes) -> bytes:
        """The part of the stream so far that can be written, masked; the rest is held for the next call."""
        if self._pattern is None:
            return data
        buffer = self._held + data
        last = 0
        for match in self._pattern.finditer(buffer):
            last = match.end()
        keep = self._partial(buffer, last)
        ready, self._held = buffer[: len(buffer) - keep], buffer[len(buffer) - keep :]
        return self._pattern.sub(MASK, ready)

    def flush(self) -> bytes:
        """The end of the stream: whatever is held, masked."""
        held, self._held = self._held, b""
        return self.whole(held)

    def _partial(self, buffer: bytes, start: int) -> int:
        """The length of the longest end of ``buffer`` (after ``start``) that begins some masked form."""
        for at in range(max(start, len(buffer) - self._longest + 1), len(buffer)):
            if buffer[at] in self._firsts:
                end = buffer[at:]
                if any(f.startswith(end) for f in self.forms):
                    return len(buffer) - at
        return 0
