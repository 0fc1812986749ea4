"""Push webhooks and triggers wake their loop: a real service, a real git server on loopback, and a pause
and a head freshness of an hour, so that only the webhook (or the trigger) can make the new run happen."""

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.config import load_config
from scheduler.service.service import Service
from scheduler.status import RunStatus
from tests.helpers.backends import wait_for
from tests.helpers.gitserver import Upstream, git_daemon, tasks_yaml
from tests.helpers.orgs import write_config

SECRET = "webhook-s3cret"
TOKEN = "api-token"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Upstream, str]]:
    upstream = Upstream(tmp_path / "upstream", "alpha")
    upstream.commit(tasks_yaml("alpha", "job"))
    with git_daemon(upstream.base) as url:
        yield upstream, f"{url}/alpha.git"


@pytest.fixture
def service(tmp_path: Path, served: tuple[Upstream, str]) -> Iterator[Service]:
    path = write_config(tmp_path, {"alpha": served[1]}, pause="1h")  # type: ignore[dict-item]
    config = yaml.safe_load(path.read_text())
    config["git"] = {"freshness": "1h"}
    path.write_text(yaml.safe_dump(config))
    started = Service(load_config(path), environ={"PEACH_TEST_TOKEN": TOKEN, "PEACH_WEBHOOK_SECRET": SECRET})
    started.start()
    yield started
    started.request_force_stop()
    started.wait_stopped(30)
    started.close()


def post(service: Service, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{service.port}/api/v1{path}", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (loopback)
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def push(url: str, branch: str = "master") -> bytes:
    return json.dumps({"ref": f"refs/heads/{branch}", "repository": {"clone_url": url}}).encode()


def github(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={digest}"}


def gitea(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {
        "X-Gitea-Event": "push",
        "X-Gitea-Signature": hmac.new(secret.encode(), body, "sha256").hexdigest(),
    }


def gitlab(_body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": secret}


def versions(service: Service) -> list[str | None]:
    return [r.version for r in service.store.list_runs(codops="alpha", task="job", limit=100)]


def ended_at(service: Service, head: str) -> bool:
    runs = service.store.list_runs(codops="alpha", task="job", limit=100)
    return any(r.version == head and r.status is RunStatus.SUCCEEDED for r in runs)


def outcomes(service: Service) -> dict[tuple[str, str], float]:
    return {
        (labels["source"], labels["outcome"]): value
        for name, labels, value in service.metrics.series()
        if name == "peach_webhooks_total"
    }


def test_each_servers_push_webhook_runs_the_new_commit_at_once(
    service: Service, served: tuple[Upstream, str]
) -> None:
    upstream, url = served
    wait_for(lambda: versions(service), 60, "the first run")
    for sign in (github, gitlab, gitea):
        head = upstream.commit({"tasks/hello.py": f"def main():\n    print('{sign.__name__}')\n"})
        body = push(url)
        assert post(service, "/hooks/git", body, sign(body)) == (200, {"changed": [f"alpha: {url}"]})
        wait_for(
            lambda h=head: ended_at(service, h), 60, f"a run at {head[:12]} after {sign.__name__}'s hook"
        )
    assert {s for (s, o), v in outcomes(service).items() if o == "changed" and v == 1} == {
        "github",
        "gitlab",
        "gitea",
    }


def test_bad_signature_unknown_repository_and_other_branch_change_nothing(
    service: Service, served: tuple[Upstream, str]
) -> None:
    _, url = served
    wait_for(lambda: versions(service), 60, "the first run")
    body = push(url)
    for sign in (github, gitlab, gitea):
        status, answer = post(service, "/hooks/git", body, sign(body, secret="wrong"))
        assert status == 401 and "signature or token" in answer["detail"]
    assert post(service, "/hooks/git", body, {})[0] == 401  # no signature at all
    other = push("git://elsewhere.example/alpha.git")
    assert post(service, "/hooks/git", other, github(other)) == (200, {"changed": []})
    branch = push(url, branch="feature")
    assert post(service, "/hooks/git", branch, gitlab(branch)) == (200, {"changed": []})
    garbage = b"not json"
    assert post(service, "/hooks/git", garbage, github(garbage))[0] == 400
    ping = b'{"zen": "hi"}'
    assert post(service, "/hooks/git", ping, {**github(ping), "X-GitHub-Event": "ping"}) == (
        200,
        {"changed": [], "ignored": "not a push event"},
    )
    counted = outcomes(service)
    refused = [counted[(source, "refused")] for source in ("github", "gitlab", "gitea", "unknown")]
    assert refused == [1, 1, 1, 1]
    assert (counted[("github", "ignored")], counted[("gitlab", "ignored")]) == (2, 1)
    assert counted[("github", "invalid")] == 1
    assert len(versions(service)) == 1  # none of them woke the loop into a run: it is still paused


def test_a_trigger_wakes_its_loop(service: Service) -> None:
    wait_for(lambda: versions(service), 60, "the first run")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert post(service, "/organisations/alpha/tasks/job/trigger", b"", headers)[0] == 202
    wait_for(lambda: len(versions(service)) == 2, 30, "the triggered run, with the loop's pause an hour")


def test_without_a_secret_webhooks_are_refused(tmp_path: Path, served: tuple[Upstream, str]) -> None:
    path = write_config(tmp_path, {"alpha": served[1]}, pause="1h")  # type: ignore[dict-item]
    service = Service(load_config(path), environ={})
    try:
        service.start_http()
        body = push(served[1])
        status, answer = post(service, "/hooks/git", body, github(body))
        assert status == 403 and "PEACH_WEBHOOK_SECRET" in answer["detail"]
    finally:
        service.close()
