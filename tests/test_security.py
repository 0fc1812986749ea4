"""Security checks: no shell anywhere; mutation endpoints refuse missing and wrong tokens and compare in
constant time; organisation and task names cannot inject into spark-submit arguments, YARN queues and
tags, file paths or metric labels. (Secrets and organisation boundaries against a running service are
in tests/test_security_service.py; escaping in the dashboard in tests/test_dashboard.py.)"""

import ast
import hmac
import inspect
import json
import re
import threading
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from executors.base import RunRequest
from executors.spark import run_tags, submit_command
from queues.profiles import render
from scheduler.config import Config, OrganisationSettings, SparkSettings
from scheduler.http import api
from scheduler.http.hooks import signed
from scheduler.metrics import Metrics
from scheduler.spec.definitions import load_definitions
from scheduler.spec.taskspec import ExecutorKind
from scheduler.status import RunStatus
from scheduler.store.models import RunTrigger
from scheduler.store.records import Run
from scheduler.store.store import Store
from tests.helpers.backends import wait_for
from tests.helpers.repos import write_repo

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("scheduler", "executors", "queues", "bench", "tests")
TOKEN = "security-test-token"


# -- no shell -------------------------------------------------------------------------------------------


def python_files() -> Iterator[Path]:
    for folder in SOURCES:
        yield from (ROOT / folder).rglob("*.py")
    yield from (p for p in (ROOT / "bin").iterdir() if p.is_file() and b"python" in p.read_bytes()[:40])


def shell_uses(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        off = isinstance(node, ast.keyword) and ast.unparse(node.value) == "False"
        if isinstance(node, ast.keyword) and node.arg == "shell" and not off:
            found.append((node.value.lineno, "shell=" + ast.unparse(node.value)))
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if name in (
                "os.system",
                "os.popen",
                "system",
                "popen",
                "subprocess.getoutput",
                "subprocess.getstatusoutput",
            ):
                found.append((node.lineno, name))
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name in ("system", "popen"):
                    found.append((node.lineno, f"from os import {alias.name}"))
    return found


def test_no_shell_anywhere() -> None:
    scanned, offenders = 0, []
    for path in python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        offenders += [f"{path.relative_to(ROOT)}:{line}: {what}" for line, what in shell_uses(tree)]
        scanned += 1
    assert scanned > 50
    assert offenders == []


def test_the_shell_scan_finds_what_it_looks_for() -> None:
    bad = "import os, subprocess\nsubprocess.run('ls', shell=True)\nos.system('ls')\nos.popen('ls')\n"
    bad += "subprocess.call('x', shell=flag)\nfrom os import system\n"
    assert sorted(line for line, _ in shell_uses(ast.parse(bad))) == [2, 3, 4, 5, 6]
    assert shell_uses(ast.parse("subprocess.run(['ls'], shell=False)\n")) == []


# -- tokens on every mutation route ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two API servers on one store: one with a token configured, one without."""
    store = Store.from_url(f"sqlite:///{tmp_path_factory.mktemp('api')}/state.db")
    bases, running = {}, []
    for name, token in (("token", TOKEN), ("none", None)):
        app = api.create_app(store, Metrics(), token=token, token_env="PEACH_TEST_TOKEN")
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda s=server: s.started, 15, "the API server")
        bases[name] = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        running.append((server, thread))
    yield bases
    for server, thread in running:
        server.should_exit = True
        thread.join(10)
    store.close()


def mutation_routes() -> list[RouteContext]:
    """Every non-GET route, the routers' included (FastAPI keeps an included router as one entry of
    ``app.routes``; ``iter_route_contexts`` gives each route as served, with its router's dependencies)."""
    app = api.create_app(None, Metrics(), token=TOKEN)  # type: ignore[arg-type]  # routes only
    served = iter_route_contexts(app.routes)
    routes = [r for r in served if isinstance(r.original_route, APIRoute) and r.methods - {"GET", "HEAD"}]
    assert len(routes) >= 2  # trigger and kill at least; new ones are picked up here
    return [r for r in routes if signed not in [d.call for d in r.dependant.dependencies]]


def test_webhooks_compare_their_signature_in_constant_time() -> None:
    source = inspect.getsource(signed)
    assert source.count("hmac.compare_digest(") == 3  # GitLab's token, Gitea's and GitHub's HMAC
    assert "==" not in source


def request(base: str, route: RouteContext, headers: dict[str, str]) -> int:
    path = re.sub(r"\{[^}]+\}", "x", route.path)
    method = sorted(route.methods - {"GET", "HEAD"})[0]
    sent = urllib.request.Request(base + path, method=method, headers=headers, data=b"{}")  # noqa: S310
    try:
        with urllib.request.urlopen(sent, timeout=10) as response:  # noqa: S310 (http on loopback)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


WRONG = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Bearer {TOKEN.upper()}"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": f"Bearer  {TOKEN} extra"},
    {"X-Api-Token": TOKEN},
]


@pytest.mark.parametrize("route", mutation_routes(), ids=lambda r: r.path)
def test_mutation_routes_refuse_missing_and_wrong_tokens(
    servers: dict[str, str], route: RouteContext
) -> None:
    for headers in WRONG:
        assert request(servers["token"], route, headers) == 401, headers
        assert request(servers["none"], route, headers) == 403, headers
    right = request(servers["token"], route, {"Authorization": f"Bearer {TOKEN}"})
    assert right not in (401, 403)  # past the check: 404 for the made-up names
    assert request(servers["none"], route, {"Authorization": f"Bearer {TOKEN}"}) == 403  # never open


def test_every_mutation_route_compares_the_token_in_constant_time() -> None:
    for route in mutation_routes():
        checks = [d.call for d in route.dependant.dependencies if d.call is not None]
        sources = [inspect.getsource(check) for check in checks]  # type: ignore[arg-type]
        assert any("compare_digest(" in source for source in sources), route.path
        for source in sources:
            tree = ast.parse(inspect.cleandoc("\n" + source) if source.startswith(" ") else source)
            compared = [
                ast.unparse(node)
                for node in ast.walk(tree)
                if isinstance(node, ast.Compare)
                and "token" in ast.unparse(node)
                and not all(isinstance(op, ast.Is | ast.IsNot | ast.In | ast.NotIn) for op in node.ops)
            ]
            assert compared == [], f"{route.path}: token compared with == ({compared})"
        comparing = [
            inspect.getmodule(c) for c, s in zip(checks, sources, strict=True) if "compare_digest(" in s
        ]
        assert all(getattr(module, "hmac", None) is hmac for module in comparing)  # compare_digest is hmac's


# -- names cannot inject --------------------------------------------------------------------------------

HOSTILE = st.sampled_from(
    [
        "a,b",
        "a b",
        "a\nb",
        "a=b",
        "a--queue",
        "--queue",
        "../x",
        "a/b",
        "a}b",
        'a"b',
        "a\\b",
        "a.b",
        "root.x",
        "a\0b",
        "A",
        "a" * 33,
        "a" * 65,
        "é",
        "metadata",
        "a;rm -rf /",
        "$(id)",
        "a`b`",
        "<script>",
    ]
)
NAME = HOSTILE | st.from_regex(r"[a-z][a-z0-9_-]{0,40}", fullmatch=True) | st.text(max_size=20)
SUBMIT_OPTIONS = {
    "--master",
    "--deploy-mode",
    "--name",
    "--queue",
    "--num-executors",
    "--executor-cores",
    "--executor-memory",
    "--driver-memory",
    "--archives",
    "--conf",
}
TAG = re.compile(r"[a-z0-9_.-]{1,100}")


def accepted(tmp: Path, codops: str, task: str) -> list[object]:
    body = {"codops": codops, "tasks": {task: {"notebook": "code/good.py", "method": "main"}}}
    repo = write_repo(tmp, {"peach.yaml": json.dumps(body)}, good=False)
    return list(load_definitions(repo).tasks)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(codops=NAME, task=NAME)
def test_names_cannot_inject_into_argv_tags_paths_queues_or_labels(
    tmp_path_factory: pytest.TempPathFactory, codops: str, task: str
) -> None:
    tasks = accepted(tmp_path_factory.mktemp("names"), codops, task)
    if not tasks:
        return  # refused by the validator, with a problem: nothing downstream ever sees the name
    (loaded,) = tasks
    assert (loaded.codops, loaded.name) == (codops, task)  # type: ignore[attr-defined]
    for name in (codops, task):
        assert name.isascii() and name.isprintable() and not set(name) & set(" ,=/\\.;$`\"'<>{}\n")
    request = RunRequest("r-20260101-000000-abcdef", loaded, version="0" * 40)  # type: ignore[arg-type]
    organisation = OrganisationSettings(queue=codops)
    argv = submit_command(SparkSettings(master="yarn"), organisation, request, Path("/runs/x/runner.py"))
    assert argv[argv.index("--queue") + 1] == codops
    assert argv[argv.index("--name") + 1] == f"peach-{codops}-{task}"
    options = [a for a in argv if a.startswith("--")]
    assert len(options) == len(set(options) - {"--conf"}) + argv.count("--conf")  # no option twice
    assert {a for a in argv if a.startswith("-")} <= SUBMIT_OPTIONS  # a name never becomes an option
    tags = run_tags(request)
    assert all(TAG.fullmatch(tag) for tag in tags) and len(tags) == 4
    conf = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--conf")
    assert conf["spark.yarn.tags"].split(",") == tags
    # file paths: the checkout folder and metric-free names stay one component under their parent
    workspace = Path("/workspace")
    assert (workspace / "checkouts" / codops).parent == workspace / "checkouts"
    # queue rendering: well-formed XML naming exactly the queue
    config = Config(organisations={codops: {"queue": codops}})  # type: ignore[dict-item]
    document = ET.fromstring(render(config))  # noqa: S314 (our own output)
    names = [p.findtext("name") for p in document.iter("property")]
    assert f"yarn.scheduler.capacity.root.{codops}.capacity" in names
    # metric labels: the exposition parses back to the same label values
    metrics = Metrics()
    now = datetime.now(UTC)
    run = Run(
        "r-1", codops, task, codops, ExecutorKind.SPARK, "v", RunStatus.FAILED, RunTrigger.SCHEDULE,
        now, now, 1.0, "exit code 1", "boom", None, None, None, None, None, None,
    )  # fmt: skip
    metrics.run_finished(run)
    samples = [
        s for f in text_string_to_metric_families(metrics.render().decode()) for s in f.samples
        if s.name == "peach_runs_total"
    ]  # fmt: skip
    assert [(s.labels["codops"], s.labels["task"]) for s in samples] == [(codops, task)]


def test_metric_labels_are_escaped_whatever_reaches_them() -> None:
    """Defence in depth: even a name that slipped past the validator cannot forge a series."""
    metrics = Metrics()
    now = datetime.now(UTC)
    hostile = 'x",codops="forged"} 1\npeach_fake 1\n#'
    run = Run(
        "r-1", hostile, hostile, "l", ExecutorKind.PYTHON, None, RunStatus.FAILED, RunTrigger.SCHEDULE,
        now, now, 1.0, None, None, None, None, None, None, None, None,
    )  # fmt: skip
    metrics.run_finished(run)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    assert "peach_fake" not in families
    (sample,) = [s for s in families["peach_runs"].samples if s.name == "peach_runs_total"]
    assert "forged" not in sample.labels.values() and "\n" not in sample.labels["codops"]
