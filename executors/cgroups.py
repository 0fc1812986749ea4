"""Memory caps for local runs: each run in a memory cgroup of its own, where the host lets us make one.

``detect`` looks at the cgroup hierarchies this process is in (``/proc/self/cgroup`` and
``/proc/self/mountinfo``) and answers ``MemoryCgroups`` for the first that works, or why none does:

- **cgroup v2** (current Kubernetes nodes, systemd): a writable, delegated subtree. A cgroup with
  processes cannot give controllers to its children, so the service first moves itself into a leaf
  ``<own cgroup>/service`` and enables ``memory`` below its own cgroup and below ``runs``; each run gets
  ``<own cgroup>/runs/<run id>`` with ``memory.max`` (and ``memory.swap.max`` 0, so the cap is memory, not
  swap). Peak: ``memory.peak`` (Linux 5.19+); out of memory: ``oom_kill`` in ``memory.events``.
- **cgroup v1** (a ``memory`` hierarchy mounted on its own): ``<own cgroup>/peach-runs/<run id>`` with
  ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes`` where swap is accounted). Peak:
  ``memory.max_usage_in_bytes``; out of memory: ``oom_kill`` in ``memory.oom_control`` (Linux 4.13+),
  else ``memory.failcnt``.

A run's process enters its cgroup before it runs anything: the command is started through
``/bin/sh -c 'echo $$ > cgroup.procs && exec "$@"'``, so no child can be forked outside it and no
``preexec_fn`` runs in the forked child of a threaded process. The directory is removed once the run's
processes are gone; ones a killed service left behind are removed at the next start.
"""

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROC_SELF = Path("/proc/self")
ENTER = 'echo $$ > "$0" || { echo "peach: cannot enter the memory cgroup $0" >&2; exit 125; }; exec "$@"'


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _number(path: Path) -> int | None:
    text = _read(path)
    return int(text.split()[0]) if text and text.split()[0].isdigit() else None


def _field(path: Path, name: str) -> int | None:
    """``name N`` in a flat keyed file (``memory.events``, ``memory.oom_control``)."""
    for line in (_read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        if key == name and value.strip().isdigit():
            return int(value)
    return None


@dataclass
class RunCgroup:
    """One run's cgroup: what its process enters, its peak, whether the kernel OOM-killed in it."""

    path: Path
    version: int
    limit_bytes: int

    def wrap(self, command: Sequence[str]) -> list[str]:
        """``command``, entering this cgroup first (the same pid: ``sh`` execs it)."""
        return ["/bin/sh", "-c", ENTER, str(self.path / "cgroup.procs"), *command]

    def peak_bytes(self) -> int | None:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        return _number(self.path / name)

    def oom_killed(self) -> bool:
        if self.version == 2:
            return bool(_field(self.path / "memory.events", "oom_kill"))
        kills = _field(self.path / "memory.oom_control", "oom_kill")
        if kills is not None:
            return kills > 0
        return bool(_number(self.path / "memory.failcnt"))

    def remove(self, attempts: int = 20) -> None:
        """Remove the directory (its processes are gone; the kernel may take a moment to notice)."""
        for _ in range(attempts):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)
        log.warning("memory cgroup %s could not be removed (processes left in it?)", self.path)


@dataclass
class MemoryCgroups:
    """Where runs' cgroups are made (``root``), on which cgroup version."""

    root: Path
    version: int

    def create(self, run_id: str, limit_mib: int) -> RunCgroup:
        """A new cgroup for ``run_id`` capped at ``limit_mib``; raises ``OSError``."""
        path = self.root / run_id
        path.mkdir(exist_ok=True)
        limit = limit_mib * 1024 * 1024
        try:
            if self.version == 2:
                (path / "memory.max").write_text(str(limit))
                if (path / "memory.swap.max").exists():
                    (path / "memory.swap.max").write_text("0")
            else:
                (path / "memory.limit_in_bytes").write_text(str(limit))
                if (path / "memory.memsw.limit_in_bytes").exists():
                    (path / "memory.memsw.limit_in_bytes").write_text(str(limit))
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
            raise
        return RunCgroup(path, self.version, limit)

    def describe(self) -> str:
        return f"cgroup v{self.version} at {self.root}"

    def remove_leftovers(self) -> None:
        """Empty run cgroups a killed service left behind."""
        for child in self.root.iterdir() if self.root.is_dir() else ():
            if child.is_dir():
                with contextlib.suppress(OSError):
                    child.rmdir()


def mounts(proc_self: Path = PROC_SELF) -> list[tuple[str, Path, str, str]]:
    """(filesystem type, mount point, root within the hierarchy, super options) of cgroup mounts."""
    found = []
    for line in (_read(proc_self / "mountinfo") or "").splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            found.append((tail[0], Path(fields[4]), fields[3], tail[2]))
    return found


def own_cgroups(proc_self: Path = PROC_SELF) -> dict[str, str]:
    """This process's cgroup path per hierarchy: ``""`` for v2, each v1 controller by name."""
    own = {}
    for line in (_read(proc_self / "cgroup") or "").splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            own[name] = path
    return own


def _inside(mount: Path, root: str, own: str) -> Path:
    """The directory of cgroup ``own`` under a hierarchy mounted at ``mount`` from ``root``."""
    relative = os.path.relpath(own, root) if own.startswith(root) else own.lstrip("/")
    return mount if relative in (".", "") else mount / relative


def v2(mount: Path, root: str, own: str) -> MemoryCgroups:
    """Runs' cgroups under this process's cgroup v2; raises ``OSError`` saying why not."""
    base = _inside(mount, root, own)
    if "memory" not in (_read(base / "cgroup.controllers") or "").split():
        raise OSError(f"cgroup v2 at {base} has no memory controller delegated to it")
    if not os.access(base, os.W_OK):
        raise OSError(f"cgroup v2 at {base} is not writable")
    subtree = base / "cgroup.subtree_control"
    if "memory" not in (_read(subtree) or "").split():
        service = base / "service"
        service.mkdir(exist_ok=True)
        for pid in (_read(base / "cgroup.procs") or "").split():  # our own process only, thread by thread
            if int(pid) == os.getpid():
                (service / "cgroup.procs").write_text(pid)
        if (_read(base / "cgroup.procs") or "").split():
            raise OSError(f"cgroup v2 at {base} holds other processes: no subtree can be delegated")
        subtree.write_text("+memory")
    runs = base / "runs"
    runs.mkdir(exist_ok=True)
    if "memory" not in (_read(runs / "cgroup.subtree_control") or "").split():
        (runs / "cgroup.subtree_control").write_text("+memory")
    return MemoryCgroups(runs, 2)


def v1(mount: Path, root: str, own: str) -> MemoryCgroups:
    """Runs' cgroups under this process's cgroup v1 memory hierarchy; raises ``OSError`` saying why not."""
    runs = _inside(mount, root, own) / "peach-runs"
    runs.mkdir(exist_ok=True)
    probe = runs / f"probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        if not (probe / "memory.limit_in_bytes").exists():
            raise OSError(f"cgroup v1 at {runs} has no memory.limit_in_bytes")
    finally:
        probe.rmdir()
    return MemoryCgroups(runs, 1)


def detect(proc_self: Path = PROC_SELF) -> tuple[MemoryCgroups | None, str]:
    """The memory cgroups runs can be capped with, and a line for the log and ``/readyz``."""
    own, reasons = own_cgroups(proc_self), []
    for kind, mount, root, options in sorted(mounts(proc_self), key=lambda m: m[0] != "cgroup2"):
        try:
            if kind == "cgroup2" and "" in own:
                found = v2(mount, root, own[""])
            elif kind == "cgroup" and "memory" in options.split(",") and "memory" in own:
                found = v1(mount, root, own["memory"])
            else:
                continue
        except OSError as exc:
            reasons.append(str(exc) if not exc.filename else f"{exc.filename}: {exc.strerror}")
            continue
        found.remove_leftovers()
        return found, f"memory caps for local runs: {found.describe()}"
    why = "; ".join(reasons) or "no cgroup hierarchy with a memory controller is mounted"
    return None, f"memory caps for local runs are off ({why}); local runs go on without caps"
