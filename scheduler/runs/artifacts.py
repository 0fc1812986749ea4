"""Run artifacts: the files a task writes to its artifacts directory, kept with the run.

The executor gives each run a directory (``PEACH_ARTIFACTS_DIR``, and the entry function's ``artifacts``
argument when it declares one). When the run ends, ``settle`` collects it: every regular file is recorded
(path, size, sha256) in the store; symbolic links and special files are never followed nor served (a
note says they were left out). Over the per-run size limit, the largest files are deleted first until
the rest fits, and the run's record and log say which. Then the run's log is compressed
(``scheduler.runs.runlogs``).

Directories are walked with file descriptors that never follow links (``os.fwalk``, ``O_NOFOLLOW``), and a
download opens its file one path component at a time the same way, so a link planted by the task cannot
make the service read outside the run's directory. Retention (``prune``) deletes the directories of runs
that are neither among the last ``keep_runs`` runs of their task nor marked keep.
"""

import hashlib
import logging
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from executors.logs import append_note
from scheduler.errors import PeachError
from scheduler.runs import runlogs
from scheduler.store.models import ArtifactsState
from scheduler.store.records import Artifact
from scheduler.store.store import Store

log = logging.getLogger(__name__)

ENV = "PEACH_ARTIFACTS_DIR"
MAX_PATH = 1024
MiB = 1024 * 1024
_CHUNK = MiB
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class ArtifactNotFound(PeachError, LookupError):
    """No such artifact of the run (never recorded, dropped, pruned, or not a plain file any more)."""


@dataclass(frozen=True)
class ArtifactPolicy:
    """Per run at most ``max_bytes`` are kept; per task the last ``keep_runs`` runs keep theirs."""

    max_bytes: int = 100 * MiB
    keep_runs: int = 10


@dataclass
class Collected:
    files: list[Artifact] = field(default_factory=list)
    dropped: list[Artifact] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # "link (a symbolic link)" ...

    @property
    def kept_bytes(self) -> int:
        return sum(f.size for f in self.files if not f.dropped)

    def summary(self, max_bytes: int) -> str:
        kept = [f for f in self.files if not f.dropped]
        words = [f"artifacts: {len(kept)} file{'' if len(kept) == 1 else 's'} kept ({size(self.kept_bytes)})"]
        if self.dropped:
            names = ", ".join(f"{f.path} ({size(f.size)})" for f in self.dropped)
            words.append(f"dropped over the {size(max_bytes)} limit: {names}")
        if self.left_out:
            words.append(f"left out: {', '.join(self.left_out)}")
        return "; ".join(words)


def size(count: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", MiB), ("KiB", 1024)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


# -- collecting ---------------------------------------------------------------------------------------


def _walk(directory: Path) -> Iterator[tuple[str, int, str, os.stat_result]]:
    """(relative path, fd of its directory, name, lstat) of everything under ``directory``, no link
    followed (``OSError`` if ``directory`` itself is a link or not a directory)."""
    top = os.open(directory, _DIR_FLAGS)
    try:
        for folder, dirs, files, dir_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            for name in [*dirs, *files]:
                try:
                    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    continue  # fwalk descends into it (never into a link)
                relative = str(PurePosixPath(folder, name)).removeprefix("./")
                yield relative, dir_fd, name, info
    finally:
        os.close(top)


def collect(directory: Path, max_bytes: int) -> Collected:
    """Record the regular files under ``directory``; over ``max_bytes``, delete the largest first."""
    found: dict[str, int] = {}
    result = Collected()
    for relative, _, _, info in _walk(directory):
        if stat.S_ISLNK(info.st_mode):
            result.left_out.append(f"{relative} (a symbolic link, not followed)")
        elif not stat.S_ISREG(info.st_mode):
            result.left_out.append(f"{relative} (not a regular file)")
        elif len(relative.encode()) > MAX_PATH:
            result.left_out.append(f"{relative[:80]}... (path longer than {MAX_PATH} bytes)")
        else:
            found[relative] = info.st_size
    total, drop = sum(found.values()), set()
    for relative in sorted(found, key=lambda name: (-found[name], name)):
        if total <= max_bytes:
            break
        drop.add(relative)
        total -= found[relative]
    for relative, dir_fd, name, _ in _walk(directory):
        if relative not in found:
            continue
        if relative in drop:
            os.unlink(name, dir_fd=dir_fd)
            result.dropped.append(Artifact(relative, found[relative], None, True))
            continue
        try:
            digest, length = _hash(os.open(name, _FILE_FLAGS, dir_fd=dir_fd))
        except OSError as exc:
            result.left_out.append(f"{relative} (unreadable: {exc.strerror})")
            continue
        result.files.append(Artifact(relative, length, digest, False))
    result.files.extend(result.dropped)
    result.files.sort(key=lambda f: f.path)
    return result


def _hash(fd: int) -> tuple[str, int]:
    digest, length = hashlib.sha256(), 0
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise OSError(0, "not a regular file")
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
            length += len(chunk)
    return digest.hexdigest(), length


def settle(store: Store, run_id: str, policy: ArtifactPolicy) -> Collected | None:
    """After a run: collect its artifacts (noted in its log), then compress its log. Never raises for
    the run's own files; returns what was collected (None when the run had no artifacts directory)."""
    run = store.get_run(run_id)
    log_path = Path(run.log_path) if run.log_path else None
    collected, note = None, run.artifacts_note
    if run.artifacts_dir and run.artifacts_state == ArtifactsState.PENDING:
        try:
            collected = collect(Path(run.artifacts_dir), policy.max_bytes)
            note = collected.summary(policy.max_bytes)
            store.record_artifacts(run_id, collected.files, note)
        except OSError as exc:
            note = f"artifacts: not collected: {exc.strerror or exc} ({run.artifacts_dir})"
            store.record_artifacts(run_id, [], note)
        log.debug("run %s of %s/%s: %s", run_id, run.codops, run.task, note)
    if log_path is not None and not log_path.name.endswith(runlogs.GZ) and log_path.is_file():
        try:
            if note:
                append_note(log_path, note)
            packed = runlogs.compress(log_path)
        except OSError as exc:  # a full disk: the plain log stays, complete as far as it goes
            log.warning("run %s: its log stays uncompressed: %s", run_id, exc)
            return collected
        store.attach(run_id, log_path=str(packed))
        log_path.unlink(missing_ok=True)
    return collected


# -- serving ------------------------------------------------------------------------------------------


def safe_relative(path: str) -> PurePosixPath:
    """``path`` as a relative path without ``.``/``..``/empty parts; ``ArtifactNotFound`` otherwise."""
    parts = path.split("/")
    if not path or "\0" in path or any(part in ("", ".", "..") for part in parts):
        raise ArtifactNotFound(f"{path!r} is not a file name of this run's artifacts")
    return PurePosixPath(*parts)


def open_artifact(directory: Path, path: str) -> int:
    """A read-only fd of the regular file ``path`` under ``directory``, opened one component at a time
    without following any link."""
    relative = safe_relative(path)
    try:
        fd = os.open(directory, _DIR_FLAGS)
    except OSError:
        raise ArtifactNotFound(f"the artifacts of this run are gone ({path})") from None
    try:
        for part in relative.parts[:-1]:
            parent, fd = fd, os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(parent)
        file_fd = os.open(relative.name, _FILE_FLAGS, dir_fd=fd)
    except OSError:
        raise ArtifactNotFound(f"no artifact {path!r}") from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise ArtifactNotFound(f"{path!r} is not a regular file")
    return file_fd


# -- retention ----------------------------------------------------------------------------------------


def prune(store: Store, policy: ArtifactPolicy) -> tuple[int, int]:
    """Delete the artifacts of runs past their task's last ``keep_runs`` that are not marked keep;
    returns (runs pruned, bytes freed)."""
    runs, freed = 0, 0
    note = f"pruned by retention (the last {policy.keep_runs} runs of a task and runs marked keep are kept)"
    while batch := store.prunable_artifacts(policy.keep_runs):
        for run in batch:
            assert run.artifacts_dir is not None
            remove_tree(Path(run.artifacts_dir))
            freed += store.mark_artifacts_pruned(run.id, note)
            runs += 1
            log.debug("run %s of %s/%s: artifacts %s", run.id, run.codops, run.task, note)
    return runs, freed


def remove_tree(path: Path) -> None:
    """Remove a run's artifacts directory (a link in its place is removed, never followed)."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
