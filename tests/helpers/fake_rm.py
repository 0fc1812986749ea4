"""A small fake YARN ResourceManager (and NodeManager log endpoints) for the spark executor tests.

It serves the subset of the documented Hadoop REST contract the scheduler uses, with the documented shapes
("ResourceManager REST API's", hadoop-yarn-site/ResourceManagerRest.html; "NodeManager REST API's",
hadoop-yarn-site/NodeManagerRest.html, Hadoop 3.3):

- ``GET /ws/v1/cluster/apps?applicationTags=a,b&states=ACCEPTED,RUNNING``: ``{"apps": {"app": [...]}}``,
  and ``{"apps": null}`` when nothing matches; a tag matches when the application has any of the tags.
- ``GET /ws/v1/cluster/apps/{id}``: ``{"app": {...}}``; unknown ids answer 404 with a ``RemoteException``.
- ``GET /ws/v1/cluster/apps/{id}/state``: ``{"state": "RUNNING"}``.
- ``PUT /ws/v1/cluster/apps/{id}/state`` ``{"state": "KILLED"}``: 202 Accepted with the current state while
  the kill is in progress, 200 with ``{"state": "KILLED"}`` once the application is final.
- ``PUT /ws/v1/cluster/apps/{id}/timeout`` ``{"timeout": {"type": "LIFETIME", "expiryTime": "...Z"}}``:
  200 with the updated timeout.
- ``GET /ws/v1/cluster/apps/{id}/appattempts``: ``{"appAttempts": {"appAttempt": [...]}}`` with
  ``containerId`` and ``nodeHttpAddress`` of the AM container.
- ``GET /ws/v1/cluster/scheduler``: capacity scheduler ``schedulerInfo`` with its ``queues`` (a real leaf
  queue also carries ``AMResourceLimit`` {memory, vCores}, as Hadoop 3.1.1's does: observed).
- ``GET /conf``: the RM's effective configuration as Hadoop's ConfServlet serves it by default, XML
  ``<configuration><property><name/><value/><final/><source/>`` (observed on 3.1.1; JSON only with an
  ``Accept: application/json`` header).
- A standby RM (HA) answers ``/cluster`` and the web services with a 307 redirect to the active RM when it
  knows it, else 503 "This is standby RM" (``RMWebAppFilter``).
- NodeManager: ``GET /ws/v1/node/containers/{container}/logs/{file}``: the file as text/plain while the
  NodeManager has the container: always with log aggregation disabled, else until aggregation is done.
  After that it has forgotten it: 404 "Unknown container ..." (observed on 3.1.1 without a log server),
  or, when ``nm_log_server`` is set (``yarn.log.server.web-service.url``), a 307 to that server's
  ``.../containers/{container}/logs/{file}?redirected_from_node=true`` (observed).
- Log server (``/logserver``, as the 3.1.1 timeline server's ``/ws/v1/applicationhistory``):
  ``GET /logserver/containers/{container}/logs/{file}``: the aggregated file wrapped as Hadoop writes it
  (``Container: ... LogContents:`` before, ``End of LogType:{file}`` after); a file the container does not
  have: 200 with the body "Can not find logs for container:{container}"; an unknown container: 500
  (both observed).
- Progress: an application set RUNNING reports ``progress`` 0.0 on the first report, then Spark's AM's
  constant 10.0, until ``set_progress`` says otherwise (observed on 3.1.1 with Spark 3.5 and 4.0).

Not Hadoop: ``submit`` (a Python method the stand-in spark-submit reaches through ``POST /fake/submit``)
registers an application as YARN would when a client submits one.
"""

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CLUSTER_TIMESTAMP = 1700000000000


class FakeResourceManager:
    def __init__(self) -> None:
        self.apps: dict[str, dict[str, Any]] = {}
        self.standby = False
        self.active_url: str | None = None  # where a standby redirects
        self.kill_requests: list[str] = []
        self.timeouts: dict[str, str] = {}
        self.node_logs: dict[str, dict[str, str]] = {}  # container -> file -> text (NodeManager)
        self.server_logs: dict[str, dict[str, str]] = {}  # container -> file -> text (log server)
        self.nm_log_server: str | None = None  # where the NodeManager redirects for aggregated logs
        self.queues: list[dict[str, Any]] = []
        self.configuration = {"yarn.scheduler.minimum-allocation-mb": "1024"}  # Hadoop's default
        self.requests: list[tuple[str, str]] = []
        self.error: int | None = None  # a fault: answer every web service call with this HTTP status
        self.delay = 0.0  # a fault: answer this many seconds late (past the client's timeout: a timeout)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- what YARN does on its side -------------------------------------------------------------------

    def submit(self, name: str, queue: str, tags: list[str]) -> str:
        with self._lock:
            app_id = f"application_{CLUSTER_TIMESTAMP}_{len(self.apps) + 1:04d}"
            container = f"container_{CLUSTER_TIMESTAMP}_{len(self.apps) + 1:04d}_01_000001"
            self.apps[app_id] = {
                "id": app_id,
                "name": name,
                "queue": queue,
                "applicationTags": ",".join(tag.lower() for tag in tags),
                "state": "ACCEPTED",
                "finalStatus": "UNDEFINED",
                "progress": 0.0,
                "diagnostics": "",
                "logAggregationStatus": "DISABLED",
                "startedTime": int(time.time() * 1000),
                "finishedTime": 0,  # Hadoop reports 0 until the application ends (observed on 3.1.1)
                "_container": container,
                "_killing": False,
                "_reports": 0,  # reports served while RUNNING: the first says 0.0, then the AM's 10.0
                "_progress_set": False,
            }
            return app_id

    def set_state(self, app_id: str, state: str, final: str = "UNDEFINED", diagnostics: str = "") -> None:
        with self._lock:
            app = self.apps[app_id]
            app.update(state=state, finalStatus=final, diagnostics=diagnostics)
            if state in ("FINISHED", "FAILED", "KILLED") and not app.get("finishedTime"):
                app["finishedTime"] = int(time.time() * 1000)

    def set_progress(self, app_id: str, percent: float) -> None:
        """What the application master last reported to the RM (``progress``, 0-100)."""
        with self._lock:
            self.apps[app_id].update(progress=percent, _progress_set=True)

    def container(self, app_id: str) -> str:
        return str(self.apps[app_id]["_container"])

    # -- HTTP -----------------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_PUT(self) -> None:
                self._dispatch("PUT")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def _send(self, code: int, data: Any, content: str = "application/json") -> None:
                if code == 307:  # data is where to
                    self.send_response(307)
                    self.send_header("Location", data)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data.encode() if isinstance(data, str) else json.dumps(data).encode()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that timed out
                    self.send_response(code)
                    self.send_header("Content-Type", content)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def _dispatch(self, method: str) -> None:
                parts = urlsplit(self.path)
                fake.requests.append((method, parts.path))
                if not parts.path.startswith("/fake/"):
                    if fake.delay:
                        time.sleep(fake.delay)
                    if fake.error is not None:
                        self._send(fake.error, {"RemoteException": {"message": "fault"}})
                        return
                if fake.standby and not parts.path.startswith("/fake/"):
                    if fake.active_url:
                        self.send_response(307)
                        self.send_header("Location", fake.active_url + self.path)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    else:
                        self._send(503, "This is standby RM. The redirect url is: ", "text/plain")
                    return
                if parts.path == "/fake/submit":
                    body = self._body()
                    self._send(200, {"id": fake.submit(body["name"], body["queue"], body["tags"])})
                    return
                with fake._lock:
                    code, data, content = fake._route(method, parts.path, parse_qs(parts.query), self)
                self._send(code, data, content)

        return Handler

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], handler: Any
    ) -> tuple[int, Any, str]:
        json_type = "application/json"
        segments = [s for s in path.split("/") if s]
        if path == "/cluster":
            return 200, "<html>ResourceManager</html>", "text/html"
        if path == "/conf":
            rows = "".join(
                f"<property><name>{k}</name><value>{v}</value><final>false</final><source>yarn-site.xml</source>"
                "</property>"
                for k, v in self.configuration.items()
            )
            return (
                200,
                f'<?xml version="1.0" encoding="UTF-8"?><configuration>{rows}</configuration>',
                "text/xml",
            )
        if segments[:3] == ["ws", "v1", "cluster"]:
            rest = segments[3:]
            if rest == ["scheduler"]:
                info = {"type": "capacityScheduler", "queueName": "root", "queues": {"queue": self.queues}}
                return 200, {"scheduler": {"schedulerInfo": info}}, json_type
            if rest == ["apps"]:
                return 200, {"apps": self._list(query)}, json_type
            if len(rest) >= 2 and rest[0] == "apps":
                app = self.apps.get(rest[1])
                if app is None:
                    exception = {
                        "exception": "NotFoundException",
                        "message": f"app with id: {rest[1]} not found",
                    }
                    return 404, {"RemoteException": exception}, json_type
                return self._app(method, app, rest[2:], handler)
        if segments[:3] == ["ws", "v1", "node"] and len(segments) == 7:
            return self._node_log(segments[4], segments[6])
        if segments[:1] == ["logserver"] and len(segments) == 5:
            return self._server_log(segments[2], segments[4])
        return 404, {"RemoteException": {"exception": "NotFoundException", "message": path}}, json_type

    def _node_log(self, container: str, name: str) -> tuple[int, Any, str]:
        app = next((a for a in self.apps.values() if a["_container"] == container), None)
        aggregated = app is not None and app["logAggregationStatus"] in ("SUCCEEDED", "FAILED", "TIME_OUT")
        if aggregated and self.nm_log_server:
            where = f"{self.nm_log_server}/containers/{container}/logs/{name}?redirected_from_node=true"
            return 307, where, "text/plain"
        text = None if aggregated else self.node_logs.get(container, {}).get(name)
        if text is None:
            message = (
                "Unknown container. Container either has not started or has already completed or "
                "doesn't belong to this node at all."
            )
            exception = {"exception": "NotFoundException", "message": message}
            return 404, {"RemoteException": exception}, "application/json"
        return 200, text, "text/plain"

    def _server_log(self, container: str, name: str) -> tuple[int, Any, str]:
        files = self.server_logs.get(container)
        if files is None:
            return 500, "<html><h2>HTTP ERROR 500</h2><pre>    Server Error</pre></html>", "text/html"
        if name not in files:
            return 200, f"Can not find logs for container:{container}", "text/plain"
        header = (
            f"Container: {container} on localhost_45454\nLogAggregationType: AGGREGATED\n{'=' * 68}\n"
            f"LogType:{name}\nLogLastModifiedTime:Wed Dec 02 12:42:04 +0000 2026\n"
            f"LogLength:{len(files[name].encode())}\nLogContents:\n"
        )
        return 200, f"{header}{files[name]}\nEnd of LogType:{name}\n***", "text/plain"

    def _list(self, query: dict[str, list[str]]) -> dict[str, Any] | None:
        tags = {t for value in query.get("applicationTags", []) for t in value.lower().split(",") if t}
        states = {s for value in query.get("states", []) for s in value.upper().split(",") if s}
        found = []
        for app in self.apps.values():
            if tags and not tags & set(app["applicationTags"].split(",")):
                continue
            if states and app["state"] not in states:
                continue
            found.append(_reported(app))
        return {"app": found} if found else None

    def _app(self, method: str, app: dict[str, Any], rest: list[str], handler: Any) -> tuple[int, Any, str]:
        json_type = "application/json"
        final = app["state"] in ("FINISHED", "FAILED", "KILLED")
        if app["_killing"] and not final:  # the kill takes effect between two requests
            app.update(state="KILLED", finalStatus="KILLED", diagnostics="Application killed by user.")
            app["finishedTime"] = int(time.time() * 1000)
            final = True
        if rest == []:
            return 200, {"app": _reported(app)}, json_type
        if rest == ["state"] and method == "GET":
            return 200, {"state": app["state"]}, json_type
        if rest == ["state"] and method == "PUT":
            if handler._body().get("state") != "KILLED":
                return 400, {"RemoteException": {"message": "only KILLED"}}, json_type
            self.kill_requests.append(app["id"])
            if final:
                return 200, {"state": app["state"]}, json_type
            app["_killing"] = True
            return 202, {"state": app["state"]}, json_type
        if rest == ["timeout"] and method == "PUT":
            timeout = handler._body()["timeout"]
            self.timeouts[app["id"]] = timeout["expiryTime"]
            return 200, {"timeout": {**timeout, "remainingTimeInSeconds": 3600}}, json_type
        if rest == ["appattempts"]:
            attempt = {
                "id": 1,
                "containerId": app["_container"],
                "nodeHttpAddress": self.url.removeprefix("http://"),
                "appAttemptId": app["id"].replace("application", "appattempt") + "_000001",
            }
            return 200, {"appAttempts": {"appAttempt": [attempt]}}, json_type
        return 404, {"RemoteException": {"exception": "NotFoundException"}}, json_type


def _reported(app: dict[str, Any]) -> dict[str, Any]:
    """The application as a report shows it; a RUNNING one's progress is 0.0, then Spark's AM's 10.0."""
    if app["state"] == "RUNNING" and not app["_progress_set"]:
        app["progress"] = 0.0 if app["_reports"] == 0 else 10.0
        app["_reports"] += 1
    return _public(app)


def _public(app: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in app.items() if not k.startswith("_")}
