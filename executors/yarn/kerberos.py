"""The scheduler's own Kerberos ticket cache: ``kinit -kt`` at start and again before the ticket expires.

The cache is a file in the workspace (``<workspace>/kerberos/krb5cc``, its directory owner-only), named
explicitly (``FILE:<path>``) in every ``kinit`` and in the scheduler's REST calls, so the scheduler never
reads or overwrites a user's default cache (``/tmp/krb5cc_<uid>``), and no task environment names it: task
processes get an allow-listed environment (``executors.rundir``) without ``KRB5CCNAME``. Spark renews the
driver's own tokens from ``--principal``/``--keytab``; this cache is only for the scheduler.

``refresh()`` obtains a ticket when there is none or when it is due (a third of its lifetime left, or the
operator's ``renew_every``); a failure (keytab not matching the principal, KDC unreachable) is kept in
``error``, counted through ``observe("failure")``, and makes ``valid`` false once the last ticket has
expired, which ``/readyz`` reports.
"""

import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import requests

from scheduler.config import Config, KerberosSettings
from scheduler.errors import PeachError

log = logging.getLogger(__name__)

KINIT_TIMEOUT = 30.0


class KerberosError(PeachError, RuntimeError):
    """No ticket could be obtained for the scheduler's principal."""


class TicketCache:
    """The scheduler's ticket cache under ``directory``; ``clock`` is wall time (epoch seconds)."""

    def __init__(
        self,
        settings: KerberosSettings,
        directory: Path,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        observe: Callable[[str], None] = lambda event: None,
    ) -> None:
        self.settings, self.directory, self._clock, self._observe = settings, directory, clock, observe
        self._environ = os.environ if environ is None else environ
        self.path = directory / "krb5cc"
        self.error: str | None = None  # why the last kinit failed (None: it did not)
        self.obtained: float | None = None  # when the current ticket was obtained
        self.expires: float | None = None  # when it expires
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"FILE:{self.path}"

    def environ(self) -> dict[str, str]:
        """What a Kerberos client of the scheduler needs (kinit, spark-submit, GSSAPI): this cache and the
        operator's ``krb5.conf``."""
        env = {"KRB5CCNAME": self.name}
        if self.settings.krb5_conf is not None:
            env["KRB5_CONFIG"] = str(self.settings.krb5_conf)
        return env

    @property
    def valid(self) -> bool:
        """Whether the cache holds a ticket that has not expired."""
        return self.expires is not None and self._clock() < self.expires

    def due(self) -> bool:
        if self.expires is None or self.obtained is None:
            return True
        every = self.settings.renew_every
        if every is not None:
            return self._clock() >= self.obtained + every
        return self._clock() >= self.expires - (self.expires - self.obtained) / 3

    def refresh(self) -> bool:
        """kinit when due; True when a ticket was obtained now. Never raises (``error`` says why not)."""
        with self._lock:
            if not self.due():
                return False
            try:
                self.kinit()
            except KerberosError as exc:
                log.error("kerberos: %s", exc)
                return False
            return True

    def kinit(self) -> None:
        """Obtain a ticket from the keytab now; raises ``KerberosError`` saying why not."""
        settings = self.settings
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        base = {k: v for k, v in self._environ.items() if k in ("PATH", "LANG", "TZ") or k.startswith("LC_")}
        command = ["kinit", "-kt", str(settings.keytab), "-c", self.name, settings.principal]
        started = self._clock()
        try:
            done = subprocess.run(
                command,
                env={**base, **self.environ()},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=KINIT_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._failed(f"kinit for {settings.principal} could not run: {exc}")
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            self._failed(f"kinit -kt {settings.keytab} {settings.principal} failed: {why}")
        self.obtained, self.expires, self.error = started, self._expiry(started), None
        self._observe("renewed")
        log.info(
            "kerberos: ticket for %s in %s until %s", settings.principal, self.path, time.ctime(self.expires)
        )

    def _failed(self, message: str) -> None:
        self.error = message
        self._observe("failure")
        raise KerberosError(message)

    def _expiry(self, now: float) -> float:
        try:
            import gssapi  # python-gssapi: the MIT library's own view of the cache
        except ImportError:
            self._failed("python-gssapi is not installed: install peach-scheduler[kerberos]")
        credentials = gssapi.Credentials(usage="initiate", store={"ccache": self.name})
        return now + float(credentials.lifetime)

    def wait_next(self, stop: threading.Event) -> None:
        """Sleep until the next refresh is due (or ``stop`` is set), then refresh: one step of the loop."""
        if self.expires is None or self.obtained is None:
            pause = 60.0  # no ticket: try again in a minute
        elif self.settings.renew_every is not None:
            pause = self.obtained + self.settings.renew_every - self._clock()
        else:
            pause = self.expires - (self.expires - self.obtained) / 3 - self._clock()
        if not stop.wait(max(1.0, min(pause, 3600.0))):
            self.refresh()


class SpnegoAuth(requests.auth.AuthBase):
    """SPNEGO (``Authorization: Negotiate``) for the YARN REST calls, by requests-gssapi, with credentials
    read from the scheduler's own cache at each request (so a renewed ticket is used at once)."""

    def __init__(self, tickets: TicketCache) -> None:
        self.tickets = tickets

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        import gssapi
        import requests_gssapi  # type: ignore[import-untyped]

        credentials = gssapi.Credentials(usage="initiate", store={"ccache": self.tickets.name})
        auth = requests_gssapi.HTTPSPNEGOAuth(
            creds=credentials, mutual_authentication=requests_gssapi.OPTIONAL
        )
        result: requests.PreparedRequest = auth(request)
        return result


class SimpleAuth(requests.auth.AuthBase):
    """Hadoop's simple authentication: ``user.name=<user>`` on every REST call (no Kerberos)."""

    def __init__(self, user: str) -> None:
        self.user = user

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.prepare_url(request.url or "", {"user.name": self.user})
        return request


def rest_auth(config: Config, tickets: TicketCache | None) -> tuple[requests.auth.AuthBase | None, str]:
    """How the scheduler authenticates to YARN's web services, and who it is: SPNEGO with its own ticket
    when Kerberos is configured, else Hadoop's simple auth when ``yarn.user`` is set, else nothing."""
    if tickets is not None:
        if tickets.settings.krb5_conf is not None:  # the MIT library in this process reads it from here
            os.environ["KRB5_CONFIG"] = str(tickets.settings.krb5_conf)
        return SpnegoAuth(tickets), tickets.settings.principal
    if config.yarn.user:
        return SimpleAuth(config.yarn.user), f"user.name={config.yarn.user}"
    return None, "anonymous (no kerberos, no yarn.user)"
