"""A real Prometheus (Debian's ``prometheus``, on loopback) scrapes sample scheduler metrics with the alert
rules loaded: every dashboard query returns data, the template variables list the organisation, and every
rule evaluates without error (no many-to-many matches, no bad types)."""

import contextlib
import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.backends import prometheus_api, prometheus_server, wait_for
from tests.helpers.backends import prometheus_query as query
from tests.helpers.deploytools import DASHBOARD, RULES
from tests.helpers.metric_samples import CODOPS, LiveSamples, static_exposition
from tests.helpers.promql import LABEL_VALUES_QUERY

# Grafana's variables as a user choosing one organisation and all its tasks would have them.
GRAFANA = {"$codops": CODOPS, "$task": ".*", "$__rate_interval": "30s", "$__range": "1m"}


@contextlib.contextmanager
def metrics_endpoint(render: Callable[[], str]) -> Iterator[str]:
    """``/metrics`` on loopback serving ``render()`` afresh on every scrape; yields host:port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def grafana(expr: str) -> str:
    for variable, value in sorted(GRAFANA.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    return expr


@pytest.fixture(params=["static", "live"])
def samples(request: pytest.FixtureRequest) -> Callable[[], str]:
    if request.param == "live":
        return LiveSamples().tick
    batches = iter(range(1, 1_000_000))
    return lambda: static_exposition(next(batches))


def test_dashboard_queries_and_rules_on_a_real_prometheus(samples: Callable[[], str], tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    with (
        metrics_endpoint(samples) as target,
        prometheus_server(target, tmp_path, job="peach-scheduler", rules=RULES) as base,
    ):
        wait_for(
            lambda: float(query(base, "count_over_time(up[1m])")[0]["value"][1]) >= 4, 30, "four scrapes"
        )

        empty = []
        for panel in dashboard["panels"]:
            for target_ in panel.get("targets", []):
                if not query(base, grafana(target_["expr"])):
                    empty.append(f"{panel['title']} {target_['refId']}: {grafana(target_['expr'])}")
        assert empty == [], "queries without data:\n" + "\n".join(empty)

        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                match = LABEL_VALUES_QUERY.match(variable["query"])
                assert match
                params = urllib.parse.urlencode({"match[]": grafana(match["selector"])})
                values = prometheus_api(base, f"/api/v1/label/{match['label']}/values?{params}")["data"]
                assert values, variable["name"]
                if variable["name"] == "codops":
                    assert values == [CODOPS]

        def evaluated() -> list[dict[str, Any]]:
            groups = prometheus_api(base, "/api/v1/rules")["data"]["groups"]
            return [rule for group in groups for rule in group["rules"]]

        wait_for(lambda: all(r["health"] != "unknown" for r in evaluated()), 30, "every rule evaluated")
        rules = evaluated()
        assert len(rules) >= 9
        assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
