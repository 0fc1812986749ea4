"""Reading what a repository holds, as hostile input: regular files only, bounded, names shown safely.

A checkout (or a directory given to ``validate``) may hold a FIFO that would block a reader forever, a
device, or a file far larger than any definition; and file names are bytes, not always UTF-8 or
printable. Nothing here follows policy about symlinks: callers check that a path stays inside the
repository first.
"""

import os
import stat
from pathlib import Path


class NotRegularFile(OSError):
    """The path is a FIFO, socket, device or directory: never read."""


class TooLarge(OSError):
    """The file is over the caller's limit; ``size`` is its size in bytes."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size:,} bytes")
        self.size = size


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, refusing anything else or anything over ``limit`` bytes.

    Opened non-blocking, so a FIFO does not wait for a writer; the type and size come from the open
    file itself, so a swap between check and read changes nothing."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(0, "not a regular file")
        if info.st_size > limit:
            raise TooLarge(info.st_size)
        raw = file.read(limit + 1)
    if len(raw) > limit:  # grew while being read
        raise TooLarge(len(raw))
    return raw


def shown(name: str) -> str:
    """``name`` fit to print, log and store: bytes that are not UTF-8 as ``\\xNN``, control characters
    (a newline in a file name) escaped; ordinary names are returned unchanged."""
    if name.isprintable():
        try:
            name.encode("utf-8")
            return name
        except UnicodeEncodeError:
            pass
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
