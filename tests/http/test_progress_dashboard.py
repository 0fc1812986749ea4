"""The dashboard's progress bar, ETA and expected pass, in real headless Chromium against a running service
whose task reports progress while it waits on a pipe (history seeded so that the ETA comes from it)."""

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from scheduler.config import load_config
from scheduler.service.service import Service
from scheduler.status import RunStatus
from tests.helpers.backends import wait_for
from tests.helpers.browser import ARTIFACTS
from tests.helpers.orgs import QUICK, org_repo, write_config
from tests.service.test_progress_service import seed

pytestmark = pytest.mark.slow

WAITING = """\
import peach_progress


def main(gate):
    peach_progress.report(0.4, "loading partitions")
    with open(gate) as pipe:  # until the test is over
        pipe.read()
"""


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("progress-dashboard")
    gate = tmp / "gate"
    os.mkfifo(gate)
    hourly = {"every": "1h"}
    repo = org_repo(
        tmp,
        "alpha",
        {"crunch": (WAITING, {**hourly, "args": {"gate": str(gate)}}), "zz_quick": (QUICK, hourly)},
    )
    config = load_config(write_config(tmp, {"alpha": repo}))
    seed(config.database_url, "alpha", "crunch", [(600, RunStatus.SUCCEEDED), (900, RunStatus.SUCCEEDED)])
    seed(config.database_url, "alpha", "zz_quick", [(30, RunStatus.SUCCEEDED)])
    started = Service(config, environ={})
    started.start()
    try:
        wait_for(
            lambda: any(r.progress is not None for r in started.store.running_runs(codops="alpha")),
            90,
            "the running run's progress",
        )
        yield started
    finally:
        started.request_force_stop()
        started.wait_stopped(30)
        started.close()


def test_running_task_shows_progress_bar_message_and_eta(service: Service, page: Page) -> None:
    page.goto(f"http://127.0.0.1:{service.port}/?codops=alpha")
    row = page.locator('#tasks tbody tr[data-task="alpha/crunch"]')
    bar = row.locator("progress")
    expect(bar).to_have_attribute("value", "0.4")
    expect(bar).to_have_attribute("aria-label", "progress 40%")
    cell = row.locator("td.progress-col")
    expect(cell).to_contain_text("40% loading partitions")
    # history: 600 s and 900 s, median 750 s; at 40 %: 0.6 * (t + 0.6 * 750) = 270 s + 0.6 t
    eta = cell.locator(".eta")
    expect(eta).to_have_text(re.compile(r"^ ?ETA [45] min \d+ s$"))
    [run] = service.store.running_runs(codops="alpha")
    elapsed = (datetime.now(UTC) - run.started_at).total_seconds()
    minutes, seconds = (int(n) for n in re.findall(r"\d+", eta.inner_text()))
    assert 270 <= minutes * 60 + seconds <= 270 + 0.6 * elapsed + 1, (eta.inner_text(), elapsed)
    expect(page.locator('#tasks tbody tr[data-task="alpha/zz_quick"] td.progress-col')).to_have_text(
        "usually 30.0 s"
    )
    expect(page.locator("#loop-expected")).to_have_text("Expected pass: 13 min 0 s")  # 750 s + 30 s

    page.goto(f"http://127.0.0.1:{service.port}/?codops=alpha&task=crunch")
    running = page.locator('#runs tbody tr[data-status="RUNNING"]')
    expect(running.locator("progress")).to_have_attribute("value", "0.4")
    expect(running).to_contain_text("ETA 4 min")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-progress.png"), full_page=True)


def test_progress_is_never_rendered_as_html(service: Service, page: Page, tmp_path: Path) -> None:
    [run] = service.store.running_runs(codops="alpha")
    service.store.record_progress(run.id, 0.5, '<img src=x onerror="window.pwned=1">')
    page.goto(f"http://127.0.0.1:{service.port}/?codops=alpha")
    message = page.locator('#tasks tbody tr[data-task="alpha/crunch"] .progress-message')
    expect(message).to_have_text(' <img src=x onerror="window.pwned=1">')
    assert page.evaluate("window.pwned") is None
    assert page.locator("#tasks img").count() == 0
