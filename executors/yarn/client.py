"""The YARN ResourceManager, through its REST API (``yarn-api-client``), with HA failover and bounded retries.

Every call goes to the ResourceManager that answered last; when it stops answering (connection error,
timeout, a standby's 503) the next address is tried, and the whole list is retried ``retries`` times with a
growing pause before ``ResourceManagerError`` is raised. A standby that knows the active one redirects
(307) and ``requests`` follows the redirect, as Hadoop intends. A 404 from an answering RM is an answer
(the application is unknown), not a reason to fail over.

The endpoints used (Hadoop "ResourceManager REST APIs"): ``/ws/v1/cluster/apps?applicationTags=&states=``,
``/ws/v1/cluster/apps/{id}``, ``/ws/v1/cluster/apps/{id}/state`` (GET, and PUT ``{"state": "KILLED"}``),
``/ws/v1/cluster/apps/{id}/timeout`` (PUT LIFETIME), ``/ws/v1/cluster/apps/{id}/appattempts`` and
``/ws/v1/cluster/scheduler``; for logs, a log server's or NodeManager's
``/ws/v1/node/containers/{container}/logs/{file}`` (Hadoop 3 NodeManager REST API).

A log server answers a file the container does not have with 200 and the body "Can not find logs for
container:..." (3.1.1's timeline server: observed): that is no file, not its content. Aggregated files
come wrapped (``Container: ... LogContents:`` before, ``End of LogType:...`` and a line of stars after; a
NodeManager adds the end lines too): the wrapping is taken off.
"""

import logging
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import requests
from yarn_api_client import ResourceManager as RestClient  # type: ignore[import-untyped]
from yarn_api_client.errors import APIError  # type: ignore[import-untyped]

from executors.yarn.site import parse_properties
from scheduler.errors import ResourceManagerError

log = logging.getLogger(__name__)

ACTIVE_STATES = ("NEW", "NEW_SAVING", "SUBMITTED", "ACCEPTED", "RUNNING")
FINAL_STATES = ("FINISHED", "FAILED", "KILLED")
LOG_FILES = ("stdout", "stderr")
AGGREGATING = ("NOT_START", "RUNNING", "RUNNING_WITH_FAILURE")  # logAggregationStatus while it goes
NOT_SERVED = b"Can not find logs for container"
LOG_CONTENTS = b"\nLogContents:\n"
LOG_END = re.compile(rb"\n?End of LogType:[^\n]*\n\**\s*\Z")  # NodeManagers add it too (observed on 3.1.1)


class NotFound(ResourceManagerError, LookupError):
    """The ResourceManager answered 404: it does not know the application."""


class Refused(ResourceManagerError, PermissionError):
    """A YARN web service answered 401 or 403: not authenticated, or not allowed, as the scheduler's user."""


class ResourceManager:
    """A client for one YARN cluster: ``addresses`` are its ResourceManagers (several for HA)."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        observe: Callable[[str], None] = lambda event: None,
        auth: requests.auth.AuthBase | None = None,
        identity: str = "anonymous",
    ) -> None:
        if not addresses:
            raise ResourceManagerError(
                "no YARN ResourceManager address is configured (yarn.resourcemanagers)"
            )
        self.addresses = [address.rstrip("/") for address in addresses]
        self.timeout, self.retries, self.backoff, self._sleep = timeout, retries, backoff, sleep
        # told "request" (each REST call), "failover", "error" (no ResourceManager answered) and "refused"
        # (401/403): metrics
        self._observe = observe
        self.auth, self.identity = auth, identity  # SPNEGO or simple auth; who we are, said in refusals
        self._active = 0
        self._clients: dict[int, RestClient] = {}

    @property
    def active(self) -> str:
        """The address that answered last (or will be tried first)."""
        return self.addresses[self._active]

    def _client(self, index: int, what: str = "connecting") -> RestClient:
        if index not in self._clients:
            try:  # yarn-api-client checks the address answers /cluster as an active RM
                self._clients[index] = RestClient(
                    [self.addresses[index]], timeout=self.timeout, auth=self.auth
                )
            except requests.RequestException as exc:
                raise ResourceManagerError(str(exc)) from exc
            except Exception as exc:  # "No active RMs found" is a bare Exception
                self._check_refused(what, f"{self.addresses[index]}/ws/v1/cluster/info")
                raise ResourceManagerError(f"{self.addresses[index]}: {exc}") from exc
        return self._clients[index]

    def call(self, what: str, request: Callable[[RestClient], Any]) -> Any:
        """``request(client)`` against the active RM, failing over and retrying; the response's JSON."""
        last: Exception | None = None
        for attempt in range(self.retries):
            for step in range(len(self.addresses)):
                index = (self._active + step) % len(self.addresses)
                self._observe("request")
                try:
                    data = request(self._client(index, what)).data
                except APIError as exc:
                    if "status: 404" in str(exc):
                        raise NotFound(f"{what}: {self.addresses[index]} answered 404") from exc
                    for code in (401, 403):
                        if f"status: {code}" in str(exc):
                            raise self._refused(what, self.addresses[index], code) from exc
                    last = exc
                except Refused:
                    raise  # another address would refuse the same identity: said at once, not retried
                except (requests.RequestException, ResourceManagerError, ValueError) as exc:
                    last = exc
                else:
                    if index != self._active:
                        log.warning("YARN: failed over to ResourceManager %s", self.addresses[index])
                        self._observe("failover")
                    self._active = index
                    return data
                self._clients.pop(index, None)
                log.info("YARN: %s on %s failed: %s", what, self.addresses[index], last)
            if attempt + 1 < self.retries:
                self._sleep(self.backoff * 2**attempt)
        self._observe("error")
        raise ResourceManagerError(f"YARN: {what}: no ResourceManager answered ({last})")

    # -- applications -----------------------------------------------------------------------------------

    def apps_by_tag(self, tag: str, states: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Applications carrying ``tag`` (YARN lowercases tags), optionally only in ``states``."""
        data = self.call(
            f"applications tagged {tag}",
            lambda rm: rm.cluster_applications(
                application_tags=[tag], states=list(states) if states else None
            ),
        )
        apps = (data or {}).get("apps") or {}  # {"apps": null} when there are none
        return list(apps.get("app") or [])

    def app(self, app_id: str) -> dict[str, Any]:
        """The application report (state, finalStatus, diagnostics, applicationTags, ...)."""
        report: dict[str, Any] = self.call(f"report of {app_id}", lambda rm: rm.cluster_application(app_id))[
            "app"
        ]
        return report

    def attempts(self, app_id: str) -> list[dict[str, Any]]:
        data = self.call(f"attempts of {app_id}", lambda rm: rm.cluster_application_attempts(app_id))
        return list(((data or {}).get("appAttempts") or {}).get("appAttempt") or [])

    def kill(self, app_id: str, confirm: float = 30.0, poll: float = 0.5) -> str:
        """Kill an application (``PUT .../state {"state": "KILLED"}``), re-asked until the RM confirms a
        final state or ``confirm`` seconds pass; returns the last state seen."""
        end = time.monotonic() + confirm
        state = ""
        while True:
            state = self.call(f"state of {app_id}", lambda rm: rm.cluster_application_state(app_id))["state"]
            if state in FINAL_STATES:
                return str(state)
            if time.monotonic() >= end:
                return str(state)
            self.call(f"kill of {app_id}", lambda rm: rm.cluster_application_kill(app_id))
            self._sleep(poll)

    def set_lifetime(self, app_id: str, expiry: float) -> None:
        """Set the application's LIFETIME timeout to the epoch time ``expiry``: YARN kills it then."""
        moment = datetime.fromtimestamp(expiry, UTC)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"
        self.call(
            f"lifetime of {app_id}",
            lambda rm: rm.cluster_update_application_timeout(app_id, "LIFETIME", stamp),
        )

    def scheduler(self) -> dict[str, Any]:
        """The scheduler description (``schedulerInfo``: capacity scheduler queues)."""
        info: dict[str, Any] = self.call("scheduler", lambda rm: rm.cluster_scheduler())["scheduler"][
            "schedulerInfo"
        ]
        return info

    def configuration(self) -> dict[str, str]:
        """The active ResourceManager's effective configuration (its ``/conf`` page, Hadoop's ConfServlet):
        what it really runs with, e.g. ``yarn.scheduler.minimum-allocation-mb``."""
        last: Exception | None = None
        for step in range(len(self.addresses)):
            address = self.addresses[(self._active + step) % len(self.addresses)]
            try:
                response = requests.get(f"{address}/conf", timeout=self.timeout, auth=self.auth)
                response.raise_for_status()
                return parse_properties(response.content)
            except (requests.RequestException, ET.ParseError) as exc:
                last = exc
        raise ResourceManagerError(f"YARN: configuration: no ResourceManager answered ({last})")

    # -- logs -------------------------------------------------------------------------------------------

    def driver_logs(
        self, app_id: str, log_server: str | None, max_bytes: int, wait: float = 30.0, poll: float = 0.25
    ) -> tuple[str, dict[str, bytes]]:
        """The AM (driver) container's stdout/stderr: (the source used, {file: content}).

        Waits up to ``wait`` seconds for log aggregation to settle. With aggregation done and a log server
        configured, the logs come from it; otherwise (aggregation disabled, failed or still going) from the
        NodeManager that ran the container, which keeps them when aggregation is disabled. (Asking the
        NodeManager while aggregation is still going was tried: a killed application's container may still
        be writing then, and the real-YARN timeout scenario got a driver log without its last output.)
        """
        attempts = self.attempts(app_id)
        if not attempts:
            return "none (the application has no attempt)", {}
        container = str(attempts[-1].get("containerId") or "")
        node = str(attempts[-1].get("nodeHttpAddress") or "")

        def nodemanager(status: str) -> list[tuple[str, str]]:
            base = node if "://" in node else f"http://{node}"
            return [(f"NodeManager {node} (log aggregation {status})", f"{base}/ws/v1/node")] if node else []

        end = time.monotonic() + wait
        status = self._aggregation(app_id)
        while status in AGGREGATING and time.monotonic() < end:
            self._sleep(poll)
            status = self._aggregation(app_id)
        sources = [(f"aggregated logs from {log_server}", log_server.rstrip("/"))] if log_server else []
        found = self._serve(
            container, (sources if status == "SUCCEEDED" else []) + nodemanager(status), max_bytes
        )
        return found or (f"none (log aggregation {status}; no log server or NodeManager served them)", {})

    def _aggregation(self, app_id: str) -> str:
        return str(self.app(app_id).get("logAggregationStatus") or "DISABLED")

    def _serve(
        self, container: str, sources: list[tuple[str, str]], max_bytes: int
    ) -> tuple[str, dict[str, bytes]] | None:
        """The first of ``sources`` (name, base URL) that serves any of the container's log files."""
        for source, base in sources:
            files = {}
            for name in LOG_FILES:
                content = self._fetch(f"{base}/containers/{container}/logs/{name}", max_bytes)
                if content is not None and not content.startswith(NOT_SERVED):
                    files[name] = unwrap(content)
            if files:
                return source, files
        return None

    def _refused(self, what: str, where: str, code: int) -> Refused:
        """A 401/403: counted, and said with the call and who we are, never taken as "nothing there"."""
        self._observe("refused")
        why = "not authenticated" if code == 401 else "not allowed"
        return Refused(f"YARN: {what}: {where} refused it as {self.identity} (HTTP {code}: {why})")

    def _check_refused(self, what: str, url: str) -> None:
        try:
            code = requests.get(url, timeout=self.timeout, auth=self.auth).status_code
        except requests.RequestException:
            return
        if code in (401, 403):
            raise self._refused(what, url, code)

    def _fetch(self, url: str, max_bytes: int) -> bytes | None:
        try:
            with requests.get(url, timeout=self.timeout, stream=True, auth=self.auth) as response:
                if response.status_code in (401, 403):
                    raise self._refused("fetching driver logs", url, response.status_code)
                if response.status_code != 200:
                    return None
                data = b""
                for chunk in response.iter_content(65536):
                    data += chunk
                    if len(data) >= max_bytes:
                        return data[:max_bytes]
                return data
        except requests.RequestException as exc:
            log.info("YARN: fetching %s failed: %s", url, exc)
            return None


def unwrap(content: bytes) -> bytes:
    """An aggregated log file's own content, without Hadoop's wrapping (a file as written, unchanged)."""
    if content.startswith(b"Container: ") and LOG_CONTENTS in content:
        content = content.split(LOG_CONTENTS, 1)[1]
    return LOG_END.sub(b"", content)
