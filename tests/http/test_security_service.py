"""Security against a running scheduler (real git over authenticated HTTP, real child processes, real
PostgreSQL): task environments carry no scheduler secret, and no secret reaches the logs, the API, the
metrics or the dashboard; a repository cannot schedule into another organisation nor read another
organisation's checkout through paths (``..``, absolute paths, symlinks, ``file:`` requirements)."""

import json
import logging
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from scheduler.config import load_config
from scheduler.repos.sync import checkout_name
from scheduler.service.service import Service
from scheduler.status import RunStatus
from tests.helpers.backends import create_database, drop_database
from tests.helpers.gitserver import Upstream, git, git_http
from tests.helpers.orgs import QUICK, log_text, org_repo

pytestmark = pytest.mark.slow

API_TOKEN = "api-secret-5f1d0c77"
GIT_TOKEN = "git-secret-9a8b7c6d"
DB_PASSWORD = "db-secret-31415926"
BETA_SECRET = "beta-private-2718281828"  # in the other organisation's code only
SECRETS = (API_TOKEN, GIT_TOKEN, DB_PASSWORD)

DUMP = """\
import os, sys

def main():
    print("ENVIRON", sorted(os.environ.items()), flush=True)
    with open("/proc/self/environ", "rb") as proc:
        print("PROC", proc.read().replace(b"\\0", b"\\n").decode(errors="replace"), flush=True)
    print("ARGV", sys.argv, flush=True)
"""
BETA_CODE = f"SECRET = {BETA_SECRET!r}\n\ndef main():\n    print(SECRET)\n"


@dataclass
class Scene:
    service: Service
    log: list[str]
    beta_checkout: Path


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def task(notebook: str, **extra: object) -> dict[str, object]:
    return {"notebook": notebook, "method": "main", "executor": "python", **extra}


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str) -> Iterator[Scene]:
    tmp = tmp_path_factory.mktemp("security")
    beta = org_repo(tmp, "beta", {"private": (BETA_CODE, {})})
    upstream = Upstream(tmp / "alpha")
    database = create_database(postgres_admin_url, "security")
    with git_http(upstream.base, "peach", GIT_TOKEN) as server:
        workspace = tmp / "workspace"
        config_path = tmp / "config.yaml"
        repositories = {"url": f"{server.url}/tasks.git", "username": "peach", "token_env": "ALPHA_GIT_TOKEN"}
        config = {
            "workspace": str(workspace),
            "http": {"host": "127.0.0.1", "port": 0, "api_token_env": "PEACH_TEST_TOKEN"},
            "loops": {"pause": "0.2s"},
            "organisations": {
                "alpha": {"repositories": [repositories]},
                "beta": {"repositories": [{"url": str(beta)}]},
            },
        }
        config_path.write_text(yaml.safe_dump(config))
        beta_repo = load_config(config_path).organisations["beta"].repositories[0]
        beta_checkout = workspace / "checkouts" / "beta" / checkout_name(beta_repo)
        stolen = beta_checkout / "code" / "private.py"
        upstream.commit(alpha_files(beta_checkout), "alpha's tasks, some of them hostile")
        os.symlink(stolen, upstream.work / "code" / "link.py")
        os.symlink(beta_checkout, upstream.work / "code" / "beta")
        git("add", "--all", cwd=upstream.work)
        git("commit", "--quiet", "-m", "symlinks out", cwd=upstream.work)
        git("push", "--quiet", str(upstream.bare), "HEAD:refs/heads/master", cwd=upstream.work)

        url = database.replace(
            "postgresql+psycopg://postgres@", f"postgresql+psycopg://postgres:{DB_PASSWORD}@"
        )
        assert DB_PASSWORD in url
        secrets = {"PEACH_TEST_TOKEN": API_TOKEN, "ALPHA_GIT_TOKEN": GIT_TOKEN, "PEACH_STATE_URL": url}
        collect = Collect()
        collect.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        level = root.level
        root.addHandler(collect)
        root.setLevel(logging.DEBUG)
        with pytest.MonkeyPatch.context() as patch:
            for name, value in secrets.items():
                patch.setenv(name, value)
            service = Service(load_config(config_path))
            try:
                runs = service.once()
                assert {(r.codops, r.task): r.status for r in runs}[("alpha", "dump")] is RunStatus.SUCCEEDED
                service.start_http()
                yield Scene(service, collect.lines, beta_checkout)
            finally:
                service.close()
                root.removeHandler(collect)
                root.setLevel(level)
                drop_database(postgres_admin_url, "security")


def alpha_files(beta_checkout: Path) -> dict[str, str]:
    hostile = {
        "codops": "alpha",
        "tasks": {
            "dump": task("code/dump.py"),
            "dotdot": task("../" * 4 + "checkouts/beta/x/code/private.py"),
            "absolute": task(str(beta_checkout / "code" / "private.py")),
            "link": task("code/link.py"),
            "linkdir": task("code/beta/code/private.py"),
            "filedep": task("code/dump.py", dependencies=[f"private @ file://{beta_checkout}"]),
            "reldep": task("code/dump.py", dependencies=["private @ file:../../beta"]),
        },
    }
    other = {"codops": "beta", "tasks": {"stolen": task("code/dump.py")}}
    return {
        "code/dump.py": DUMP,
        "code/quick.py": QUICK,
        "peach.yaml": yaml.safe_dump(hostile),
        "peach.conf/other.yaml": yaml.safe_dump(other),
        "peach.conf/shared.yaml": yaml.safe_dump(
            {
                "codops": "alpha",
                "dependencies": [f"x @ file://{beta_checkout}"],
                "tasks": {"shared": task("code/quick.py")},
            }
        ),
    }


def get(scene: Scene, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{scene.service.port}{path}", timeout=10) as answer:
        return bytes(answer.read())


def test_task_environment_holds_no_scheduler_secret(scene: Scene) -> None:
    (run,) = scene.service.store.list_runs(codops="alpha", task="dump")
    log = log_text(run)
    assert "ENVIRON" in log and "PROC" in log and f"PEACH_RUN_ID={run.id}" in log  # the dump did run
    for secret in (*SECRETS, "ALPHA_GIT_TOKEN", "PEACH_TEST_TOKEN", "PEACH_STATE_URL", "postgresql"):
        assert secret not in log


def test_no_secret_in_the_service_log_api_metrics_or_dashboard(scene: Scene) -> None:
    service = scene.service
    assert scene.log, "the service logged nothing: the collector is not attached"
    pages = ["/", "/metrics", "/healthz", "/readyz", "/api/v1/openapi.json", "/api/v1/dashboard"]
    pages += ["/api/v1/organisations", "/api/v1/tasks", "/api/v1/runs?limit=500"]
    pages += [f"/dashboard/{name}" for name in ("app.js", "app.css", "index.html")]
    for codops in ("alpha", "beta"):
        pages += [f"/api/v1/organisations/{codops}/tasks", f"/api/v1/organisations/{codops}/problems"]
    for run in service.store.list_runs(limit=500):
        pages += [f"/api/v1/runs/{run.id}", f"/api/v1/runs/{run.id}/log"]
    bodies = {page: get(scene, page) for page in pages}
    for secret in SECRETS:
        for page, body in bodies.items():
            assert secret.encode() not in body, f"{secret} served at {page}"
        assert not [line for line in scene.log if secret in line]
    assert service.config.show().count(DB_PASSWORD) == 0


def test_a_repository_cannot_schedule_into_another_organisation(scene: Scene) -> None:
    keys = {(t.codops, t.task) for t in scene.service.store.task_states()}
    assert ("beta", "stolen") not in keys and ("beta", "private") in keys
    problems = [p for p in scene.service.store.problems("alpha") if p.file == "peach.conf/other.yaml"]
    assert problems and "may not schedule tasks for codops 'beta'" in problems[0].message
    assert scene.service.store.problems("beta") == []  # nothing is filed under the victim either


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("dotdot", "leaves the repository"),
        ("absolute", "is absolute"),
        ("link", "symbolic link leading outside"),
        ("linkdir", "symbolic link leading outside"),
        ("filedep", "never at files on the scheduler"),
        ("reldep", "never at files on the scheduler"),
    ],
)
def test_paths_never_reach_another_organisations_checkout(scene: Scene, name: str, why: str) -> None:
    store = scene.service.store
    assert (scene.beta_checkout / "code" / "private.py").exists()  # the target is really there
    listed = {t.state.value for t in store.task_states("alpha") if t.task == name}
    assert listed <= {"INVALID"}  # kept visible as INVALID (issue 19), never run
    assert store.list_runs(codops="alpha", task=name) == []
    problems = [p for p in store.problems("alpha") if p.task == name]
    assert problems and why in problems[0].message and problems[0].line, problems
    shared = [p for p in store.problems("alpha") if p.file == "peach.conf/shared.yaml"]
    assert shared and "never at files on the scheduler" in shared[0].message
    for run in store.list_runs(limit=500):
        if run.codops == "alpha" and run.log_path:
            assert BETA_SECRET not in log_text(run)
    assert BETA_SECRET not in json.dumps([p.as_dict() for p in store.problems("alpha")])
