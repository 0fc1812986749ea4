"""What the service holds in memory per run is let go when the run ends: under sustained load nothing
grows with the number of runs (bench/service_load.py shows the memory figures)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.config import load_config
from scheduler.service.service import Service
from scheduler.status import RunStatus
from tests.helpers.backends import wait_for
from tests.helpers.orgs import org_repo, write_config

# Ends by itself once the test creates the flag file: the run finishes as the kill is asked for.
UNTIL_FLAG = (
    "import pathlib, time\n\n"
    "def main(flag):\n"
    "    while not pathlib.Path(flag).exists():\n"
    "        time.sleep(0.05)\n"
)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    flag = tmp_path / "flag"
    repo = org_repo(tmp_path, "alpha", {"ends": (UNTIL_FLAG, {"args": {"flag": str(flag)}})})
    started = Service(load_config(write_config(tmp_path, {"alpha": repo})))
    yield started
    started.request_force_stop()
    started.wait_stopped(30)
    started.close()


def test_a_kill_asked_for_as_the_run_ends_by_itself_is_not_kept(tmp_path: Path, service: Service) -> None:
    service.runtime.poll = 60  # the supervisor looks at kill requests only after the run has ended
    service.start()
    run = wait_for(
        lambda: [
            r for r in service.store.list_runs(codops="alpha", task="ends") if r.status is RunStatus.RUNNING
        ],
        30,
        "a running run",
    )[0]
    service.runtime.kills.request(run.id, "killed through the API")
    (tmp_path / "flag").touch()
    wait_for(lambda: service.store.get_run(run.id).status is not RunStatus.RUNNING, 30, "the run's end")
    assert service.store.get_run(run.id).status is RunStatus.SUCCEEDED
    assert len(service.runtime.kills) == 0
