"""Tools that break the outside world on purpose, for the fault suite (tests/test_faults.py) and its report
(bench/faults.py): a TCP link on loopback that can go down, be slow or flap; a PostgreSQL cluster the test
stops and starts; a size-limited tmpfs; a probe that keeps asking the API while a fault lasts.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.backends import _as_postgres, free_port, postgres_bin


class FaultyLink:
    """A TCP proxy on 127.0.0.1 in front of ``target_port`` whose behaviour the test sets at any moment.

    ``down()`` closes the listening socket (clients get "connection refused", as from a stopped server)
    and cuts the open connections; ``up()`` listens again on the same port. ``slow(delay)`` forwards each
    chunk ``delay`` seconds late. ``flap(period)`` goes down and up every ``period`` seconds until
    ``steady()``.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.delay = 0.0
        self.connections = 0
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._flapping: threading.Thread | None = None
        self._flap_stop = threading.Event()
        self.up()

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def up(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            listener.settimeout(0.05)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="faulty-link", daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            open_, self._open = self._open, []
        if listener is not None:
            listener.close()
        for conn in open_:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def slow(self, delay: float) -> None:
        self.delay = delay

    def flap(self, period: float) -> None:
        self._flap_stop.clear()

        def toggle() -> None:
            while not self._flap_stop.wait(period):
                self.down() if self.is_up else self.up()

        self._flapping = threading.Thread(target=toggle, name="faulty-link-flap", daemon=True)
        self._flapping.start()

    def steady(self) -> None:
        """Stop flapping and any delay; the link is up afterwards."""
        self._flap_stop.set()
        if self._flapping is not None:
            self._flapping.join()
            self._flapping = None
        self.delay = 0.0
        self.up()

    def close(self) -> None:
        self._flap_stop.set()
        self.down()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by down()
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            client.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # went down meanwhile
                    client.close()
                    server.close()
                    return
                self._open += [client, server]
                self.connections += 1
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class PostgresCluster:
    """A PostgreSQL cluster of its own (the session's shared server must never be stopped by one test),
    with ``stop()`` and ``start()`` as an operator's restart would do them."""

    def __init__(self) -> None:
        self.bindir = postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="peach-pg-fault-"))
        self.data, self.logfile, self.port = self.root / "data", self.root / "server.log", free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"]
        subprocess.run(_as_postgres([*initdb, "-E", "UTF8"]), check=True, capture_output=True, timeout=120)
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> "subprocess.CompletedProcess[bytes]":
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60"]
        return subprocess.run(_as_postgres([*pg_ctl, *args]), capture_output=True, timeout=120)

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        done = self._ctl("start", "-l", str(self.logfile), "-o", options)
        if done.returncode:
            raise RuntimeError(f"PostgreSQL did not start: {done.stderr.decode(errors='replace')}")

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, new ones refused until ``start()``."""
        self._ctl("stop", "-m", "fast")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def small_disk(path: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` (created), always unmounted; skips when mounting is refused."""
    path.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    done = (
        subprocess.run(
            [mount, "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
            capture_output=True,
            timeout=30,
        )
        if mount
        else None
    )
    if done is None or done.returncode:
        why = done.stderr.decode(errors="replace").strip() if done else "no mount command"
        pytest.skip(f"cannot mount a size-limited tmpfs on {path} (needs root or CAP_SYS_ADMIN): {why}")
    try:
        yield path
    finally:
        for _ in range(50):  # a run may still hold a file there for a moment after the service stopped
            if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill the filesystem of ``disk`` with one file until at most ``leave`` bytes are free; returns it."""
    filler = disk / "filler"
    with filler.open("wb") as out:
        while True:
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            if free <= leave:
                break
            try:
                out.write(b"\0" * min(65536, max(free - leave, 1)))
                out.flush()
            except OSError:
                break
    return filler


@dataclass
class ApiProbe:
    """Asks the service's API every ``interval`` seconds on a thread, and counts the answers by status."""

    base: str
    paths: tuple[str, ...] = ("/api/v1/runs?limit=5", "/api/v1/organisations", "/healthz")
    interval: float = 0.1
    answers: list[tuple[float, str, int]] = field(default_factory=list)  # (time, path, status; 0: none)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "ApiProbe":
        self._thread = threading.Thread(target=self._run, name="api-probe", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in self.paths:
                self.answers.append((time.monotonic(), path, self.get(path)))
            self._stop.wait(self.interval)

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as response:  # noqa: S310 (loopback)
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as error:
            error.close()
            return int(error.code)
        except OSError:
            return 0

    def between(self, start: float, end: float) -> list[tuple[str, int]]:
        return [(path, status) for at, path, status in self.answers if start <= at <= end]

    def availability(self, start: float, end: float, ok: tuple[int, ...] = (200,)) -> float:
        """Share of the answers in [start, end] whose status is in ``ok`` (1.0 when none was asked)."""
        seen = self.between(start, end)
        return sum(status in ok for _, status in seen) / len(seen) if seen else 1.0
