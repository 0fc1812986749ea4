"""Live reconfiguration: what changed between two operator configurations, and when to look again.

``changes`` compares the running configuration with a freshly read one and says, in words, what will
apply from the next run (organisations added, removed or changed; loops, capacity, Spark, artifacts) and
which settings cannot change without a restart (``RESTART_ONLY``: the HTTP listener, the state database,
the workspace, what the long-lived clients were built with). ``effective`` is the new configuration with
those settings kept as they run. The service applies the rest (``Service.reload``).

``Triggers`` is the reload thread's wait: SIGHUP (its handler only writes a byte to a pipe, like
``StopSignals``: a signal handler must never take a lock), or the configuration file's content changing
on disk (a Kubernetes ConfigMap update swaps the mounted file's symlinks; its content is compared, not
its modification time), whichever comes first.
"""

import contextlib
import hashlib
import os
import select
import signal
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scheduler.config import Config

# Settings (dotted prefixes of ``Config.public()``) a running service keeps until it restarts.
RESTART_ONLY = (
    "workspace",
    "state_url",
    "http",
    "environments",
    "artifacts.root",
    "artifacts.prune_interval",
    "git.freshness",
    "git.parallel",
    "yarn.resourcemanagers",
    "yarn.log_server",
    "yarn.timeout",
    "yarn.retries",
)
WATCH_INTERVAL = 2.0  # seconds between two looks at the configuration file


@dataclass(frozen=True)
class Reload:
    """The answer to one reload: ``applied``, ``unchanged`` or ``invalid`` (then nothing changed)."""

    result: str
    source: str  # SIGHUP, api, file change
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    changes: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "source": self.source,
            "at": self.at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "changes": list(self.changes),
            "restart_needed": list(self.restart_needed),
            "error": self.error,
        }


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``; lists and organisations' bodies stay whole values."""
    if not isinstance(data, dict) or prefix.startswith("organisations."):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat or {prefix: data}


def _restart_only(key: str) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in RESTART_ONLY)


def restart_needed(old: Config, new: Config) -> tuple[str, ...]:
    """The settings that differ but only apply at the next start, by dotted name."""
    before, after = flatten(old.public()), flatten(new.public())
    keys = sorted(
        k for k in before.keys() | after.keys() if _restart_only(k) and before.get(k) != after.get(k)
    )
    return tuple(keys)


def effective(old: Config, new: Config) -> Config:
    """``new`` with every restart-only setting as it runs now."""
    yarn = new.yarn.model_copy(
        update={k: getattr(old.yarn, k) for k in ("resourcemanagers", "log_server", "timeout", "retries")}
    )
    artifacts = new.artifacts.model_copy(
        update={"root": old.artifacts.root, "prune_interval": old.artifacts.prune_interval}
    )
    git = new.git.model_copy(update={"freshness": old.git.freshness, "parallel": old.git.parallel})
    kept = {k: getattr(old, k) for k in ("workspace", "state_url", "http", "environments")}
    return new.model_copy(update={**kept, "yarn": yarn, "artifacts": artifacts, "git": git})


def changes(old: Config, new: Config) -> list[str]:
    """What applies from the next run, in words (``new`` already ``effective``)."""
    said = []
    for codops in sorted(new.organisations.keys() - old.organisations.keys()):
        said.append(f"organisation {codops} added")
    for codops in sorted(old.organisations.keys() - new.organisations.keys()):
        said.append(f"organisation {codops} removed (its running run finishes; no new run)")
    for codops in sorted(old.organisations.keys() & new.organisations.keys()):
        was, now = old.organisations[codops], new.organisations[codops]
        changed = [k for k in type(now).model_fields if getattr(was, k) != getattr(now, k)]
        if changed:
            said.append(f"organisation {codops}: {', '.join(changed)} changed")
    before, after = flatten(old.public()), flatten(new.public())
    for key in sorted(before.keys() | after.keys()):
        if not key.startswith("organisations") and before.get(key) != after.get(key):
            said.append(f"{key} changed")
    return said


def fingerprint(path: Path | None) -> str | None:
    """The configuration file's content hash (None: no file, or unreadable now)."""
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class Triggers:
    """SIGHUP through a pipe, and changes of the file at ``path``. Build it in the main thread (it
    installs the signal handler); ``wait`` from the reload thread."""

    def __init__(self, path: Path | None, interval: float = WATCH_INTERVAL, hangup: bool = True) -> None:
        self.path, self.interval = path, interval
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._seen = fingerprint(path)
        if hangup:
            signal.signal(signal.SIGHUP, self._handle)

    def _handle(self, _signum: int, _frame: object) -> None:
        with contextlib.suppress(BlockingIOError):  # unread signals already ask for a reload
            os.write(self._write, b"!")

    def poke(self) -> None:
        """Wake ``wait`` without a reason (so that its thread can see it must stop)."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b".")

    def wait(self) -> str | None:
        """Block up to ``interval``: ``SIGHUP``, ``file change``, or None (nothing, or a poke)."""
        ready, _, _ = select.select([self._read], [], [], self.interval)
        if ready:
            byte = os.read(self._read, 1)
            if byte == b"!":
                return "SIGHUP"
        now = fingerprint(self.path)
        if now is not None and now != self._seen:
            self._seen = now
            return "file change"
        return None

    def seen(self) -> None:
        """The file as it is now has been read (a reload from elsewhere): no change to report for it."""
        self._seen = fingerprint(self.path) or self._seen

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
