"""Real backends for the tests: a PostgreSQL server and a Prometheus server, started and always stopped.

PostgreSQL comes from Debian (``bin/setup`` installs it when missing). As root, the server runs as the
``postgres`` user (initdb refuses root) through ``runuser``; as anyone else, as that user.
"""

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except Exception as error:  # the condition may fail until the backend is up
            last_error, result = error, None
        if result:
            return result
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    raise TimeoutError(f"gave up waiting {timeout} s for {what}{detail}")


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries missing: run bin/setup (installs Debian's postgresql)")
    return Path(found[-1]).parent


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1; yields the admin URL (psycopg form)."""
    bindir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="peach-pg-"))
    data, logfile = root / "data", root / "server.log"
    port = free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
    subprocess.run(_as_postgres(initdb), check=True, capture_output=True)
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60"]
    try:
        started = subprocess.run(
            _as_postgres([*pg_ctl, "start", "-l", str(logfile), "-o", options]), capture_output=True
        )
        if started.returncode:
            log = logfile.read_text(errors="replace") if logfile.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr.decode(errors='replace')}{log}")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([*pg_ctl, "stop", "-m", "fast"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def create_database(admin_url: str, name: str) -> str:
    """A fresh, empty database; returns its SQLAlchemy URL."""
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    parts = urllib.parse.urlsplit(admin_url)
    return f"postgresql+psycopg://{parts.netloc}/{name}"


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def prometheus_server(
    target: str, workdir: Path, *, job: str = "peach", rules: Path | None = None
) -> Iterator[str]:
    """A real Prometheus scraping ``target`` (host:port) every second as ``job``, evaluating ``rules``
    if given; yields its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus missing: run bin/setup (installs Debian's prometheus)")
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        + (f"rule_files: ['{rules}']\n" if rules else "")
        + f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
    )
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(f"{base}/-/ready"), 30, "Prometheus to be ready")
        yield base
    finally:
        _stop(process)
        log.close()


def prometheus_api(base: str, path: str) -> Any:
    """The decoded JSON answer of Prometheus's HTTP API at ``path`` (e.g. ``/api/v1/rules``)."""
    return json.loads(_get(f"{base}{path}"))


def prometheus_query(base: str, query: str) -> list[dict[str, Any]]:
    answer = prometheus_api(base, "/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback test URL)
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as error:  # e.g. 503 while starting: close it, or its socket leaks
        error.close()
        raise RuntimeError(f"{url}: HTTP {error.code}") from None


def _stop(process: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM the process group, SIGKILL after ``grace`` s, and reap; "no such process" is success."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
