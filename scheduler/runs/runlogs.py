"""Run logs at rest: a finished run's log is stored gzip-compressed; one reader serves plain and gzip.

While a run goes, its log is the plain ``output.log`` the executor appends to (the dashboard tails it with
HTTP ranges). When it ends, ``compress`` writes ``output.log.gz`` beside it; the store then points at the
``.gz`` and the plain file is removed. A reader holding the old path still finds the log: ``read`` falls
back to the sibling with or without ``.gz``. Offsets and ranges are always on the decompressed text, so a
live tail started on the plain file carries on over the compressed one. Logs are bounded in size
(``executors.logs``: head and tail), so a compressed one is decompressed whole to be read.
"""

import gzip
import os
import secrets
import shutil
from pathlib import Path

GZ = ".gz"
_CHUNK = 1024 * 1024


def compress(path: Path, level: int = 6) -> Path:
    """Write ``<path>.gz`` (complete or not at all) and return it; ``path`` itself is left in place."""
    target = path.with_name(path.name + GZ)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        with path.open("rb") as plain, gzip.GzipFile(partial, "wb", compresslevel=level, mtime=0) as packed:
            shutil.copyfileobj(plain, packed, _CHUNK)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _found(path: Path) -> Path | None:
    """``path``, else its sibling with or without ``.gz`` (the log was compressed or is being)."""
    other = (
        path.with_name(path.name.removesuffix(GZ))
        if path.name.endswith(GZ)
        else path.with_name(path.name + GZ)
    )
    for candidate in (path, other):
        if candidate.is_file():
            return candidate
    return None


def read(path: Path | None, start: int = 0, end: int | None = None) -> tuple[bytes, int]:
    """(bytes ``start`` to ``end`` inclusive, or to the end; the log's whole size) of a plain or gzip
    log; ``(b"", 0)`` when there is none. Sizes and offsets are those of the decompressed text."""
    for _ in range(3):  # the plain file may go between the look and the open: the .gz is there then
        found = _found(path) if path is not None else None
        if found is None:
            return b"", 0
        try:
            return _read(found, start, end)
        except FileNotFoundError:
            continue
    return b"", 0


def _read(found: Path, start: int, end: int | None) -> tuple[bytes, int]:
    if found.name.endswith(GZ):
        with gzip.open(found, "rb") as packed:
            text = packed.read()
        return text[start : len(text) if end is None else end + 1], len(text)
    with found.open("rb") as plain:
        size = os.fstat(plain.fileno()).st_size
        plain.seek(start)
        return plain.read(-1 if end is None else max(0, end - start + 1)), size
