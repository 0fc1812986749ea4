"""Real git servers on loopback for the sync tests: ``git daemon``, smart HTTP (``git http-backend``
behind Basic authentication), and a server that accepts connections and never answers.

Every server binds 127.0.0.1 on a port the kernel picks (``git daemon`` cannot report one, so it gets
a port that was free a moment ago, and is retried if it lost the race), and is stopped by its fixture.
"""

import base64
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

GIT_USER = [
    "-c",
    "user.name=Peach Test",
    "-c",
    "user.email=test@peach.invalid",
    "-c",
    "init.defaultBranch=master",
]


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", *GIT_USER, *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout.strip()


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(0.02)


class Upstream:
    """A bare repository (what servers serve) and a work tree that commits and pushes into it."""

    def __init__(self, root: Path, name: str = "tasks") -> None:
        self.base = root / "srv"  # what the servers serve
        self.bare = self.base / f"{name}.git"
        self.work = root / "work" / name
        git("init", "--quiet", "--bare", str(self.bare))
        git("init", "--quiet", str(self.work))

    def commit(self, files: Mapping[str, str | None], message: str = "change", amend: bool = False) -> str:
        """Write (or, for None, delete) files, commit, force-push to master; return the commit."""
        for name, text in files.items():
            path = self.work / name
            if text is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
        git("add", "--all", cwd=self.work)
        git(
            "commit",
            "--quiet",
            "--allow-empty",
            *(["--amend"] if amend else []),
            "-m",
            message,
            cwd=self.work,
        )
        git("push", "--quiet", "--force", str(self.bare), "HEAD:refs/heads/master", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def delete_branch(self) -> None:
        git("update-ref", "-d", "refs/heads/master", cwd=self.bare)


def tasks_yaml(codops: str, *names: str) -> dict[str, str | None]:
    """Files of a valid repository: one python task per name, all calling ``main`` in tasks/hello.py."""
    body = "".join(
        f"  {name}:\n    notebook: tasks/hello.py\n    method: main\n    executor: python\n" for name in names
    )
    return {
        "peach.yaml": f"codops: {codops}\ntasks:\n{body}",
        "tasks/hello.py": "def main():\n    print('hello')\n",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _exited_or_accepts(proc: "subprocess.Popen[bytes]", port: int) -> bool:
    return proc.poll() is not None or _accepts(port)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def git_daemon(base: Path) -> Iterator[str]:
    """``git daemon`` serving every repository under ``base``; yields ``git://127.0.0.1:PORT``."""
    for _attempt in range(5):
        port = free_port()
        proc = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", "--informative-errors",
             f"--base-path={base}", "--listen=127.0.0.1", f"--port={port}", str(base)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for(partial(_exited_or_accepts, proc, port), what="git daemon listening")
            if proc.poll() is None:
                break
        except BaseException:
            _stop(proc)
            raise
    else:
        raise RuntimeError("git daemon did not start on a free port in 5 attempts")
    try:
        yield f"git://127.0.0.1:{port}"
    finally:
        _stop(proc)


def _stop(proc: "subprocess.Popen[bytes]") -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class _GitHttpHandler(BaseHTTPRequestHandler):
    server: "GitHttpServer"

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:  # quiet: no stderr noise in tests
        self.server.requests += 1

    def _serve(self) -> None:
        time.sleep(self.server.delay)  # a slow server, so a sync can be watched while it runs
        if self.headers.get("Authorization") != self.server.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="peach"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self._body()
        url = urlsplit(self.path)
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.server.base),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": url.path,
            "QUERY_STRING": url.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": self.server.username,
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60)
        head, _, payload = done.stdout.replace(b"\r\n", b"\n").partition(b"\n\n")
        headers = [line.split(":", 1) for line in head.decode("latin-1").splitlines() if ":" in line]
        status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
        self.send_response(status)
        for key, value in headers:
            if key.lower() != "status":
                self.send_header(key, value.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        self.rfile.readline()
        return b"".join(chunks)


class GitHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, base: Path, username: str, password: str, delay: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _GitHttpHandler)
        self.base, self.username, self.delay, self.requests = base, username, delay, 0
        self.expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def git_http(base: Path, username: str, password: str, delay: float = 0.0) -> Iterator[GitHttpServer]:
    """Smart HTTP with Basic authentication, in a thread of the test process."""
    server = GitHttpServer(base, username, password, delay)
    thread = threading.Thread(target=server.serve_forever, name="git-http", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def silent_server() -> Iterator[int]:
    """A socket that accepts connections and never answers; yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with suppress(TimeoutError, OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, name="silent-server", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=10)
        for conn in held:
            conn.close()
        listener.close()
