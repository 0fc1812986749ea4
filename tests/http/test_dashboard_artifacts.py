"""A run's artifacts in the dashboard, in real headless Chromium: listed with the run's log, downloaded
as attachments (never opened in the dashboard's origin)."""

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from scheduler.service.service import Service
from scheduler.store.records import Run
from tests.helpers.browser import ARTIFACTS
from tests.helpers.orgs import org_repo
from tests.runs.test_artifacts import BY_PARAM, service_with_artifacts

pytestmark = pytest.mark.slow

NESTED = (
    "def main(artifacts):\n"
    "    (artifacts / 'plots').mkdir()\n"
    "    (artifacts / 'plots' / 'loss curve.svg').write_text('<svg xmlns=\"http://www.w3.org/2000/svg\">"
    "<script>window.pwned=1</script></svg>')\n"
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, dict[str, Run]]]:
    tmp = tmp_path_factory.mktemp("dashboard-artifacts")
    repo = org_repo(tmp, "alpha", {"report": (BY_PARAM, {}), "plots": (NESTED, {})})
    service = service_with_artifacts(tmp, {"alpha": repo})
    try:
        runs = {run.task: run for run in service.once()}
        service.start_http()
        yield service, runs
    finally:
        service.close()


def test_the_run_view_links_its_artifacts_and_they_download(
    served: tuple[Service, dict[str, Run]], page: Page, tmp_path: Path
) -> None:
    service, runs = served
    run = runs["report"]
    page.goto(f"http://127.0.0.1:{service.port}/?codops=alpha&task=report")
    page.locator(f'#runs tr[data-run="{run.id}"] button.show-log').click()
    link = page.locator('#artifact-list a[data-artifact="report.csv"]')
    expect(link).to_be_visible()
    expect(page.locator("#artifacts-title")).to_have_text(f"Artifacts of run {run.id}")
    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename == "report.csv"
    saved = tmp_path / "report.csv"
    download.save_as(saved)
    assert saved.read_text() == f"run,{run.id}\n"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-artifacts.png"), full_page=True)


def test_an_active_artifact_is_downloaded_never_run(
    served: tuple[Service, dict[str, Run]], page: Page
) -> None:
    service, runs = served
    run = runs["plots"]
    page.goto(f"http://127.0.0.1:{service.port}/?codops=alpha&task=plots")
    page.locator(f'#runs tr[data-run="{run.id}"] button.show-log').click()
    link = page.locator('#artifact-list a[data-artifact="plots/loss curve.svg"]')
    expect(link).to_be_visible()
    with page.expect_download() as download_info:
        link.click()
    body = Path(download_info.value.path()).read_bytes()
    assert hashlib.sha256(body).hexdigest() == link.get_attribute("title").removeprefix("sha256 ")
    # Opened directly (a pasted URL), it is still an attachment: the page never runs its script.
    with page.expect_download():
        page.evaluate("url => { window.location.href = url; }", link.get_attribute("href"))
    assert page.evaluate("window.pwned") is None
