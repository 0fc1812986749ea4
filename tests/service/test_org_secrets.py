"""Organisations' settings and secrets reach their own tasks only, and their values never reach a log,
a manifest, the API, ``ps`` or a git configuration (the service in this process, real child processes)."""

import base64
import json
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from scheduler.config import load_config
from scheduler.runs import runlogs
from scheduler.service.service import Service
from scheduler.status import RunStatus
from tests.helpers.backends import wait_for
from tests.helpers.orgs import QUICK, org_repo, write_config
from tests.service.test_service import TOKEN, http

ALPHA_REDIS = "redis://:alpha-redis-pw@cache:6379/0"
ALPHA_KEY = "alpha-api-key-0123456789"
BETA_KEY = "beta-api-key-9876543210"

SHOWS = textwrap.dedent(
    """\
    import base64, json, os, subprocess, sys, urllib.parse

    def main(artifacts):
        names = ("MODEL_BUCKET", "REDIS_URL", "API_KEY", "BETA_ONLY")
        seen = {name: os.environ.get(name) for name in names}
        (artifacts / "seen.json").write_text(json.dumps(seen))
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        (artifacts / "ps.txt").write_text(ps)
        secret = os.environ["API_KEY"]
        print("whole:", secret)
        sys.stdout.write("split: " + secret[:7]); sys.stdout.flush()
        sys.stdout.write(secret[7:] + "\\n"); sys.stdout.flush()
        print("quoted:", urllib.parse.quote(os.environ.get("REDIS_URL", secret), safe=""))
        print("b64:", base64.b64encode(secret.encode()).decode())
        import peach_progress
        peach_progress.report(0.5, "using " + secret)
        raise RuntimeError("failing with " + secret)
    """
)


def configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alpha: Path, beta: Path) -> Path:
    path = write_config(tmp_path, {"alpha": alpha, "beta": beta})
    config = yaml.safe_load(path.read_text())
    (tmp_path / "alpha.key").write_text(ALPHA_KEY + "\n")
    (tmp_path / "beta.key").write_text(BETA_KEY)
    config["organisations"]["alpha"].update(
        env={"MODEL_BUCKET": "s3://models/alpha"},
        secrets={"REDIS_URL": {"env": "ALPHA_REDIS"}, "API_KEY": {"file": "alpha.key"}},
    )
    config["organisations"]["beta"].update(
        env={"BETA_ONLY": "beta-setting"},
        secrets={"API_KEY": {"file": "beta.key"}, "REDIS_URL": {"file": "missing.key"}},
    )
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("ALPHA_REDIS", ALPHA_REDIS)
    return path


def test_each_organisation_gets_its_own_secrets_masked_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alpha = org_repo(tmp_path, "alpha", {"shows": (SHOWS, {})})
    beta = org_repo(
        tmp_path,
        "beta",
        {"narrow": (SHOWS, {"secrets": ["API_KEY"]}), "unreadable": (QUICK, {"secrets": ["REDIS_URL"]})},
    )
    service = Service(
        load_config(configure(tmp_path, monkeypatch, alpha, beta)), environ={"PEACH_TEST_TOKEN": TOKEN}
    )
    try:
        service.start()
        wait_for(
            lambda: len([r for r in service.store.list_runs(limit=50) if r.status.final]) >= 3, 60, "runs"
        )
        runs = {r.task: r for r in reversed(service.store.list_runs(limit=50)) if r.status.final}

        shows, narrow, unreadable = runs["shows"], runs["narrow"], runs["unreadable"]
        seen = json.loads(Path(shows.artifacts_dir or "", "seen.json").read_text())
        assert seen == {
            "MODEL_BUCKET": "s3://models/alpha",
            "REDIS_URL": ALPHA_REDIS,
            "API_KEY": ALPHA_KEY,
            "BETA_ONLY": None,
        }
        seen = json.loads(Path(narrow.artifacts_dir or "", "seen.json").read_text())
        assert seen == {
            "MODEL_BUCKET": None,
            "REDIS_URL": None,
            "API_KEY": BETA_KEY,
            "BETA_ONLY": "beta-setting",
        }

        # the unreadable secret fails that run before it starts, naming the secret and why
        assert unreadable.status is RunStatus.FAILED
        assert unreadable.outcome is not None and "secret REDIS_URL (file " in unreadable.outcome
        assert "missing.key) cannot be read: cannot read" in unreadable.outcome
        assert "No such file or directory" in unreadable.outcome
        assert narrow.status is RunStatus.FAILED and narrow.error == "RuntimeError: failing with ***"

        log = runlogs.read(Path(shows.log_path or ""))[0].decode()
        assert "whole: ***" in log and "split: ***" in log and "quoted: ***" in log and "b64: ***" in log
        assert "RuntimeError: failing with ***" in log
        values = [
            ALPHA_KEY,
            ALPHA_REDIS,
            quote(ALPHA_REDIS, safe=""),
            base64.b64encode(ALPHA_KEY.encode()).decode(),
        ]
        values += [ALPHA_KEY[7:], "alpha-redis-pw"]
        for value in values:
            assert value not in log
        assert shows.error == "RuntimeError: failing with ***"
        for child in (shows, narrow):
            ps = Path(child.artifacts_dir or "", "ps.txt").read_text()
            assert ALPHA_KEY not in ps and BETA_KEY not in ps and "alpha-redis-pw" not in ps

        surfaces = []
        for path in (
            f"/api/v1/runs/{shows.id}",
            f"/api/v1/runs/{shows.id}/log",
            f"/api/v1/runs/{shows.id}/manifest",
        ):
            status, _, body = http(service, path)
            assert status == 200, path
            surfaces.append(body.decode())
        status, _, body = http(service, "/api/v1/runs?codops=alpha")
        surfaces += [body.decode(), http(service, "/")[2].decode()]
        surfaces += [p.read_text() for p in (tmp_path / "workspace" / "checkouts").rglob(".git/config")]
        for text in surfaces:
            for value in (ALPHA_KEY, BETA_KEY, "alpha-redis-pw", "s3://models/alpha"):
                assert value not in text
        assert "failing with ***" in surfaces[0]
    finally:
        service.request_force_stop()
        service.wait_stopped(30)
        service.close()
