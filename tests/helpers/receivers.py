"""Real receivers of notifications on loopback: an SMTP server (aiosmtpd), an HTTPS webhook receiver whose
certificate comes from a throw-away CA (trustme), and an SMTP server that accepts connections and never
says a word."""

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.helpers.backends import free_port


@dataclass
class Mailbox:
    """What the SMTP server received; ``refuse``: answers to give to the next DATA commands first."""

    messages: list[Message] = field(default_factory=list)
    envelopes: list[list[str]] = field(default_factory=list)
    refuse: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return self.refuse.pop(0)
        self.messages.append(message_from_bytes(envelope.content))
        self.envelopes.append(list(envelope.rcpt_tos))
        return "250 OK"


@contextmanager
def smtp_server(
    ca_file: Path | None = None, login: tuple[str, str] | None = None
) -> Iterator[tuple[int, Mailbox]]:
    """An SMTP server on 127.0.0.1; with ``ca_file``, STARTTLS required (certificate from a CA written
    there); with ``login``, AUTH required (after STARTTLS) with that user name and password."""
    mailbox = Mailbox()
    options: dict[str, Any] = {}
    if ca_file is not None:
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(ca_file))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
        options.update(tls_context=context, require_starttls=True)
    if login is not None:

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            given = (data.login.decode(), data.password.decode())
            return AuthResult(success=given == login)

        options.update(authenticator=authenticator, auth_required=True, auth_require_tls=ca_file is not None)
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    try:
        yield controller.port, mailbox
    finally:
        controller.stop()


@contextmanager
def silent_smtp_server() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers: a hung mail relay."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@dataclass
class Hook:
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


@contextmanager
def https_receiver(ca_file: Path, answers: list[int] | None = None) -> Iterator[tuple[int, list[Hook]]]:
    """An HTTPS server on 127.0.0.1 (certificate for localhost from a CA written to ``ca_file``) that
    records every POST and answers the next of ``answers`` (taken from the list), else 204."""
    answers = [] if answers is None else answers
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    received: list[Hook] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append(Hook({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(answers.pop(0) if answers else 204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
