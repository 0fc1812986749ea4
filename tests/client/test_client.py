"""peach_client against the real API: a running service (in this process) with real tasks in a real git
repository; every method of the client, its errors, and that it imports nothing of the service."""

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from peach_client import Client, NotFound, Trigger, Unauthorized, WaitTimeout
from scheduler.config import load_config
from scheduler.service.service import Service
from tests.helpers.backends import wait_for
from tests.helpers.orgs import FAIL, org_repo, write_config

TALK = "def main():\n    for n in range(100):\n        print(f'line {n:03d}')\n"
HOURLY = {"every": "1h"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("client")
    repo = org_repo(tmp, "alpha", {"talk": (TALK, HOURLY), "broken": (FAIL, HOURLY)})
    started = Service(load_config(write_config(tmp, {"alpha": repo})), environ={"PEACH_TEST_TOKEN": "t"})
    started.start()
    yield started
    started.request_force_stop()
    started.wait_stopped(30)
    started.close()


@pytest.fixture
def client(service: Service) -> Iterator[Client]:
    with Client(f"http://127.0.0.1:{service.port}", token="t") as made:
        # wait for the first pass: both tasks have run once
        wait_for(
            lambda: all(t.last_status for t in made.tasks("alpha")) and len(made.tasks("alpha")) == 2,
            120,
            "both tasks to have run",
        )
        yield made


def test_reads(client: Client) -> None:
    assert [org.codops for org in client.organisations()] == ["alpha"]
    tasks = {t.task: t for t in client.tasks("alpha")}
    assert tasks["talk"].last_status == "SUCCEEDED" and tasks["broken"].last_status == "FAILED"
    assert tasks["talk"].state in ("PENDING", "FINISHED") and tasks["talk"].last_started_at is not None
    runs = client.runs("alpha", "broken")
    assert len(runs) >= 1 and runs[0].status == "FAILED" and runs[0].finished
    one = client.run(runs[0].id)
    assert one.id == runs[0].id and one.short_version and one.version.startswith(one.short_version)
    assert "boom" in (one.error or one.outcome or "") or "boom" in client.log_text(one)
    assert [p.id for p in client.durations("alpha", "broken")][-1] == runs[0].id
    assert [r.id for r in client.iter_runs("alpha", limit=1)] == [r.id for r in client.runs("alpha")]


def test_log_ranges(client: Client) -> None:
    run = client.runs("alpha", "talk")[0]
    whole = client.log(run)
    assert "line 000" in whole.text and "line 099" in whole.text and whole.size == len(whole.data)
    head = client.log(run, 0, 99)
    assert head.data == whole.data[:100] and head.size == whole.size and head.next == 100
    tail = client.log(run, head.next)
    assert head.data + tail.data == whole.data
    assert client.log(run, whole.size).data == b""  # past the end: nothing new yet


def test_trigger_and_rerun_with_wait(client: Client) -> None:
    with Client(client.url, token="") as anonymous, pytest.raises(Unauthorized, match="needs the API token"):
        anonymous.trigger("alpha", "talk")
    with Client(client.url, token="wrong") as wrong, pytest.raises(Unauthorized) as refused:
        wrong.trigger("alpha", "talk")
    assert refused.value.status == 401

    request = client.trigger("alpha", "talk")
    assert isinstance(request, Trigger) and request.task == "talk"
    triggered = client.wait(request, timeout=120, poll=0.1)
    assert triggered.trigger == "manual" and triggered.status == "SUCCEEDED"

    again = client.rerun(triggered)
    assert again.rerun_of == triggered.id
    rerun = client.wait(again, timeout=120, poll=0.1)
    assert rerun.rerun_of == triggered.id and rerun.trigger == "rerun" and rerun.finished
    assert client.wait(rerun.id).id == rerun.id  # an ended run: at once


def test_errors(client: Client) -> None:
    with pytest.raises(NotFound) as missing:
        client.run("r-19990101-000000-000000")
    assert missing.value.status == 404 and isinstance(missing.value, LookupError)
    with pytest.raises(NotFound):
        client.trigger("alpha", "nothing-here")
    never = Trigger(0, "alpha", "talk", "alpha", datetime(2999, 1, 1, tzinfo=UTC), None, None)
    with pytest.raises(WaitTimeout, match="the run of alpha/talk to start"):
        client.wait(never, timeout=0.5, poll=0.1)


def test_no_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PEACH_URL", raising=False)
    with pytest.raises(Exception, match=r"set \$PEACH_URL"):
        Client()
    monkeypatch.setenv("PEACH_URL", "http://127.0.0.1:1/")
    assert Client().url == "http://127.0.0.1:1"


def test_importable_alone() -> None:
    """Importing the client (and its widget module) loads nothing of the service nor its dependencies."""
    code = (
        "import sys, peach_client, peach_client.widget\n"
        "bad = {'scheduler', 'executors', 'queues', 'fastapi', 'sqlalchemy', 'pydantic', 'yaml', 'pyspark'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & bad))\n"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
