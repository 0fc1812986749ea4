"""Task environments: one virtual environment per normalised requirement set and interpreter, built once.

Layout under the store's root (``<workspace>/environments``)::

    envs/<key>/             ready environments; a directory appears here only by an atomic rename
    envs/<key>/peach-env.json   what it holds and how it was built (written last, before the rename)
    envs/<key>/.peach-used      touched at every use (its mtime drives eviction)
    building/<key>-<rand>/  builds in progress (garbage after a crash; removed by ``evict``)
    locks/<key>.build       flock: one builder per key, across threads and processes
    locks/<key>.use         flock: shared while a run uses the environment, exclusive to evict it
    failures/<key>.json     the last failed build: message, attempts, time of the next retry
    archives/<key>.tar.gz   the environment packed for YARN (``--archives``)

``key`` hashes the sorted requirement set with the interpreter's path and version. ``uv venv
--relocatable`` + ``uv pip install`` build it (pip when no uv binary is found: ``python -m venv`` +
``pip install``, with the scripts' paths fixed after the rename). Relocatable venvs make the rename
safe and let the same layout be packed as a plain tar for YARN, so no venv-pack (unmaintained, and it
cannot read uv-made venvs): ``archive()`` builds the set against the *cluster's* interpreter path
(``spark.python``; it must exist at the same path on this host, as in a shared base image), tars it
once, and the nodes run ``<alias>/bin/python``, whose symlink points at their own interpreter.

A failed build raises ``EnvironmentBuildError`` ("could not install 'foo==9.9': <resolver message>"),
is recorded, and is not tried again before its backoff (``backoff * 2**(attempts-1)``, capped) ends.
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from scheduler.errors import EnvironmentBuildError

log = logging.getLogger(__name__)

FORMAT = 1
META = "peach-env.json"
USED = ".peach-used"


def find_uv() -> str | None:
    """The uv binary: the one the ``uv`` package ships, else one on PATH, else None."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


BUILDER_PASS_ENV = ("PATH", "HOME", "LANG", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR", "NO_PROXY", "no_proxy")
BUILDER_PASS_PREFIXES = ("UV_", "PIP_", "LC_", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")


def builder_environment(source: Mapping[str, str]) -> dict[str, str]:
    """What uv/pip see: installer and proxy settings only. Building an sdist runs package code, which must
    not see the scheduler's secrets any more than tasks do."""
    env = {k: v for k, v in source.items() if k in BUILDER_PASS_ENV or k.startswith(BUILDER_PASS_PREFIXES)}
    return {**env, "NO_COLOR": "1"}


@dataclass
class Environment:
    """A ready environment, leased: it is not evicted until ``release()`` (or the end of a ``with``)."""

    key: str
    path: Path
    requirements: tuple[str, ...]
    lease: int | None = None
    archive: Path | None = None  # set by ``EnvironmentStore.archive``

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def release(self) -> None:
        if self.lease is not None:
            os.close(self.lease)  # closing the descriptor drops its shared flock
            self.lease = None

    def __enter__(self) -> "Environment":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
        yield fd
    finally:
        os.close(fd)


def _install_error(requirements: Sequence[str], output: str) -> str:
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", output).splitlines()]
    lines = [line for line in lines if line and not line.startswith(("Using Python", "Looking in"))]
    first = next(
        (i for i, line in enumerate(lines) if re.search(r"error|\N{MULTIPLICATION SIGN}", line, re.I)), 0
    )
    reason = " ".join(lines[first:]).removeprefix("error: ").removeprefix("ERROR: ")[:800]
    named = [r for r in requirements if _mentions(output, Requirement(r).name)]
    which = ", ".join(repr(r) for r in (named or requirements))
    return f"could not install {which}: {reason or 'the installer failed without a message'}"


def _mentions(text: str, name: str) -> bool:
    """Whether ``text`` names the project ``name`` as a whole word (``foo`` is not in ``foo-bar``)."""
    spellings = {name, canonicalize_name(name)}
    return any(re.search(rf"(?<![\w.-]){re.escape(n)}(?![\w-])", text, re.I) for n in spellings)


class EnvironmentStore:
    """Builds, caches, leases, packs and evicts task environments. Safe across threads and processes."""

    def __init__(
        self,
        root: Path,
        python: str = sys.executable,
        *,
        uv: str | None = "auto",
        install_args: Sequence[str] = (),
        backoff: float = 60.0,
        max_backoff: float = 3600.0,
        build_timeout: float = 1800.0,
        wall: Callable[[], float] = time.time,
        observe: Callable[[str], None] = lambda event: None,
    ) -> None:
        self.root, self.python = Path(root), python
        self._observe = observe  # told "hit", "ok" or "failed" (for metrics)
        self.uv = find_uv() if uv == "auto" else uv
        self.install_args = list(install_args)
        self.backoff, self.max_backoff, self.build_timeout = backoff, max_backoff, build_timeout
        self._wall = wall
        self._identities: dict[str, str] = {}
        self.builds = 0  # builds this store ran (for tests and metrics)

    # ---- keys and paths

    def _identity(self, python: str) -> str:
        if python not in self._identities:
            found = shutil.which(python) or python
            try:
                version = subprocess.run(
                    [found, "-c", "import sys; print(sys.version)"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                ).stdout.strip()
            except (OSError, subprocess.TimeoutExpired):
                version = ""
            if not version:
                raise EnvironmentBuildError(f"interpreter {python!r} is missing or does not run")
            self._identities[python] = f"{os.path.realpath(found)} {version}"
        return self._identities[python]

    def key(self, requirements: Iterable[str], python: str | None = None) -> str:
        data = {
            "format": FORMAT,
            "python": self._identity(python or self.python),
            "requirements": sorted(set(requirements)),
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def path(self, key: str) -> Path:
        return self.root / "envs" / key

    # ---- the main entry

    def ensure(self, requirements: Iterable[str], python: str | None = None) -> Environment:
        """A ready, leased environment for ``requirements``: cached, or built now (once, whoever asks)."""
        reqs = tuple(sorted(set(requirements)))
        for requirement in reqs:  # they reach the installer's command line: never let one be an option
            try:
                Requirement(requirement)
            except InvalidRequirement as exc:
                raise EnvironmentBuildError(f"{requirement!r} is not a valid requirement: {exc}") from None
        python = python or self.python
        key = self.key(reqs, python)
        locks = self._dir("locks")
        built = False
        while True:
            env = self._lease(key, reqs, locks)
            if env is not None:
                if not built:
                    self._observe("hit")
                return env
            self._check_backoff(key)
            with _flock(locks / f"{key}.build", fcntl.LOCK_EX):
                if not (self.path(key) / META).exists():
                    self._check_backoff(key)
                    self._build(key, reqs, python)
                    built = True

    def _lease(self, key: str, reqs: tuple[str, ...], locks: Path) -> Environment | None:
        path = self.path(key)
        if not (path / META).exists():
            return None
        fd = os.open(locks / f"{key}.use", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        if not (path / META).exists():  # evicted while we waited
            os.close(fd)
            return None
        (path / USED).touch()
        os.utime(path / USED, (self._wall(), self._wall()))
        return Environment(key, path, reqs, lease=fd)

    # ---- building

    def _build(self, key: str, reqs: tuple[str, ...], python: str) -> None:
        staging = self._dir("building") / f"{key}-{secrets.token_hex(4)}"
        started = time.monotonic()
        log.info("environment %s: building %d requirement(s) with %s", key, len(reqs), self.uv or "pip")
        self.builds += 1
        try:
            output = self._install(staging, reqs, python)
            meta = {
                "key": key,
                "requirements": list(reqs),
                "python": self._identity(python),
                "builder": "uv" if self.uv else "pip",
                "built_at": self._wall(),
                "build_seconds": round(time.monotonic() - started, 3),
                "output": output[-4000:],
            }
            (staging / META).write_text(json.dumps(meta, indent=2))
            (staging / USED).touch()
            os.utime(staging / USED, (self._wall(), self._wall()))
            if not self.uv:
                _fix_scripts(staging, self.path(key))
            self._dir("envs")
            os.rename(staging, self.path(key))
        except EnvironmentBuildError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            self._record_failure(key, exc)
            self._observe("failed")
            raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        (self.root / "failures" / f"{key}.json").unlink(missing_ok=True)
        self._observe("ok")
        log.info("environment %s: built in %.1f s", key, time.monotonic() - started)

    def _install(self, target: Path, reqs: tuple[str, ...], python: str) -> str:
        if self.uv:
            venv = [self.uv, "venv", "--quiet", "--relocatable", "--no-python-downloads", "--python", python]
            steps = [[*venv, str(target)]]
            install = [self.uv, "pip", "install", "--python", str(target / "bin" / "python")]
        else:
            steps = [[python, "-m", "venv", str(target)]]
            install = [str(target / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
        if reqs:
            steps.append([*install, *self.install_args, *reqs])
        output = []
        for command in steps:
            try:
                done = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    timeout=self.build_timeout,
                    env=builder_environment(os.environ),
                    cwd=target.parent,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise EnvironmentBuildError(
                    f"could not install {', '.join(map(repr, reqs))}: "
                    f"no result after {self.build_timeout:g} s"
                ) from exc
            except OSError as exc:
                raise EnvironmentBuildError(f"could not run {command[0]}: {exc}") from exc
            output.append(done.stdout + done.stderr)
            if done.returncode != 0:
                raise EnvironmentBuildError(_install_error(reqs, output[-1]), details="".join(output))
        return "".join(output)

    # ---- failures and backoff

    def _record_failure(self, key: str, exc: EnvironmentBuildError) -> None:
        path = self._dir("failures") / f"{key}.json"
        attempts = self._failure(key).get("attempts", 0) + 1
        delay = min(self.max_backoff, self.backoff * 2 ** (attempts - 1))
        exc.retry_at = self._wall() + delay
        record = {"attempts": attempts, "retry_at": exc.retry_at, "message": exc.message}
        path.write_text(json.dumps({**record, "details": exc.details[-20000:]}))
        log.warning(
            "environment %s: build failed (attempt %d, next in %.0f s): %s", key, attempts, delay, exc
        )

    def _failure(self, key: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.root / "failures" / f"{key}.json").read_text())
            return data
        except (OSError, ValueError):
            return {}

    def backing_off(self, requirements: Iterable[str], python: str | None = None) -> str | None:
        """Why ``requirements`` cannot get an environment before its backoff ends (the last build failed),
        or None: when it is built, never failed, or may be tried again. Builds nothing."""
        try:
            key = self.key(requirements, python)
        except EnvironmentBuildError:
            return None  # no interpreter: the run says so (not a build that backs off)
        failure = self._failure(key)
        if not failure or failure["retry_at"] <= self._wall() or (self.path(key) / META).exists():
            return None
        at = datetime.fromtimestamp(failure["retry_at"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        tried = f"failed {failure['attempts']} time(s)"
        return f"environment failing: {failure['message']} ({tried}); next try at {at}"

    def _check_backoff(self, key: str) -> None:
        failure = self._failure(key)
        if failure and failure["retry_at"] > self._wall():
            wait = failure["retry_at"] - self._wall()
            raise EnvironmentBuildError(
                f"{failure['message']} (failed {failure['attempts']} time(s); next try in {wait:.0f} s)",
                details=failure.get("details", ""),
                retry_at=failure["retry_at"],
            )

    # ---- YARN archives

    def archive(self, requirements: Iterable[str], python: str) -> Environment:
        """The environment for ``python`` (the cluster's interpreter), leased, with ``archive`` set to its
        ``archives/<key>.tar.gz`` (packed once). Keep the lease until the run no longer needs the file."""
        env = self.ensure(requirements, python)
        try:
            env.archive = target = self._dir("archives") / f"{env.key}.tar.gz"
            if target.exists():
                return env
            with _flock(self._dir("locks") / f"{env.key}.pack", fcntl.LOCK_EX):
                if not target.exists():
                    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
                    with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
                        for item in sorted(env.path.iterdir()):
                            if item.name != USED:
                                tar.add(item, arcname=item.name)
                    os.rename(partial, target)
                    log.info("environment %s: packed for YARN into %s", env.key, target)
            return env
        except BaseException:
            env.release()
            raise

    # ---- eviction

    def evict(self, max_age: float | None = None, max_bytes: int | None = None) -> list[str]:
        """Remove environments unused for ``max_age`` s, then the least recently used above ``max_bytes``.

        Environments leased by a run are skipped; leftovers of crashed builds are removed. Returns keys.
        """
        for stale in (self.root / "building").glob("*"):
            if self._wall() - stale.stat().st_mtime > self.build_timeout:
                shutil.rmtree(stale, ignore_errors=True)
        entries = []
        for path in (self.root / "envs").glob("*"):
            used = (path / USED).stat().st_mtime if (path / USED).exists() else 0.0
            archive = self.root / "archives" / f"{path.name}.tar.gz"
            entries.append(
                (used, path.name, _size(path) + (archive.stat().st_size if archive.exists() else 0))
            )
        entries.sort()
        total = sum(size for _, _, size in entries)
        removed = []
        for used, key, size in entries:
            too_old = max_age is not None and self._wall() - used > max_age
            too_big = max_bytes is not None and total > max_bytes
            if (too_old or too_big) and self._remove(key):
                removed.append(key)
                total -= size
        return removed

    def _remove(self, key: str) -> bool:
        fd = os.open(self._dir("locks") / f"{key}.use", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False  # in use by a run
        try:
            trash = self._dir("building") / f"evicted-{key}-{secrets.token_hex(4)}"
            os.rename(self.path(key), trash)
            shutil.rmtree(trash, ignore_errors=True)
            (self.root / "archives" / f"{key}.tar.gz").unlink(missing_ok=True)
            log.info("environment %s: evicted", key)
            return True
        finally:
            os.close(fd)


_FROZEN: dict[tuple[str, tuple[int, ...]], tuple[str, ...]] = {}
_FROZEN_LOCK = threading.Lock()


def freeze(python: Path, uv: str | None = "auto", timeout: float = 60.0) -> tuple[str, ...]:
    """The distributions installed in the environment of ``python``, as ``uv pip freeze`` (or ``pip
    freeze``) prints them (``name==version``), sorted. Remembered until its site-packages change."""
    sites = sorted((Path(python).parent.parent / "lib").glob("python*/site-packages"))
    stamp = (str(python), tuple(site.stat().st_mtime_ns for site in sites))
    with _FROZEN_LOCK:
        if stamp in _FROZEN:
            return _FROZEN[stamp]
    uv = find_uv() if uv == "auto" else uv
    command = [uv, "pip", "freeze", "--python", str(python)] if uv else [str(python), "-m", "pip", "freeze"]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=builder_environment(os.environ),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentBuildError(f"cannot list the packages of {python}: {exc}") from exc
    if done.returncode != 0:
        raise EnvironmentBuildError(f"cannot list the packages of {python}: {done.stderr.strip()[-500:]}")
    frozen = tuple(sorted(line.strip() for line in done.stdout.splitlines() if line.strip()))
    with _FROZEN_LOCK:
        _FROZEN[stamp] = frozen
    return frozen


def _size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _fix_scripts(staging: Path, final: Path) -> None:
    """Before a pip-built venv moves from ``staging`` to ``final``: point its scripts at ``final``."""
    old, new = str(staging).encode(), str(final).encode()
    for script in (staging / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            data = script.read_bytes()
            if old in data[:65536]:
                script.write_bytes(data.replace(old, new))
