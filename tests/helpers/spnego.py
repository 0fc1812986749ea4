"""A real SPNEGO (``Negotiate``) HTTP front in front of a backend (the fake ResourceManager), accepting
with a keytab against the real KDC of tests/helpers/kdc.py, as Hadoop's ``AuthenticationFilter`` does.

It answers ``401`` with ``WWW-Authenticate: Negotiate`` to a request without a token, accepts the client's
GSSAPI token with python-gssapi (the MIT library, service principal ``HTTP/127.0.0.1``), answers ``403``
when the authenticated principal is not in ``allowed``, and otherwise forwards the request (method, path,
query, body) to the backend and returns its answer. ``seen`` records who was let through.
"""

import base64
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gssapi


@contextmanager
def spnego_front(backend: str, keytab: Path, allowed: set[str]) -> Iterator[tuple[str, list[str]]]:
    credentials = gssapi.Credentials(usage="accept", store={"keytab": str(keytab)})
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(code)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            header = self.headers.get("Authorization") or ""
            if not header.startswith("Negotiate "):
                self._send(401, b"Authentication required", {"WWW-Authenticate": "Negotiate"})
                return
            context = gssapi.SecurityContext(creds=credentials, usage="accept")
            try:
                answer = context.step(base64.b64decode(header.split(" ", 1)[1]))
            except gssapi.exceptions.GSSError:
                self._send(403, b"GSSAPI authentication failed", {})
                return
            user = str(context.initiator_name)
            reply = {"WWW-Authenticate": "Negotiate " + base64.b64encode(answer).decode()} if answer else {}
            if user not in allowed:
                self._send(403, f"{user} is not allowed".encode(), reply)
                return
            seen.append(user)
            request = urllib.request.Request(backend + self.path, data=body, method=self.command)  # noqa: S310
            for key in ("Content-Type", "Range"):
                if self.headers.get(key):
                    request.add_header(key, self.headers[key])
            try:
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
                    code, data, kind = response.status, response.read(), response.headers.get("Content-Type")
            except urllib.error.HTTPError as error:
                code, data, kind = error.code, error.read(), error.headers.get("Content-Type")
            self._send(code, data, {**reply, **({"Content-Type": kind} if kind else {})})

        do_GET = do_PUT = do_POST = do_DELETE = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
