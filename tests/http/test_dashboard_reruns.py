"""The dashboard's Rerun, What ran and Diff in real headless Chromium, against a service with real runs at
two commits of a real git repository (SQLite)."""

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from scheduler.config import load_config
from scheduler.service.service import Service
from scheduler.store.models import RunTrigger
from scheduler.store.records import Run
from tests.helpers.browser import ARTIFACTS
from tests.helpers.orgs import commit, log_text, org_repo, tasks_files, write_config

pytestmark = pytest.mark.slow

TOKEN = "dashboard-rerun-token"
# Markup in task code must reach the page as text.
CODE = (
    "def main(label):\n    print('code {which} <b>bold</b><img src=x onerror=\"window.pwned=1\">', label)\n"
)


def job(which: str, label: str) -> dict[str, tuple[str, dict[str, object]]]:
    return {"job": (CODE.format(which=which), {"args": {"label": label}})}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Run, Run]]:
    """A service (HTTP only; passes run by the test) with a run at commit A and one at commit B."""
    tmp = tmp_path_factory.mktemp("dashboard-reruns")
    repo = org_repo(tmp, "alpha", job("A", "first"))
    service = Service(load_config(write_config(tmp, {"alpha": repo})), environ={"PEACH_TEST_TOKEN": TOKEN})
    service.start_http()
    try:
        (run_a,) = service.once()
        commit(repo, tasks_files("alpha", job("B", "second")), "B")
        (run_b,) = service.once()
        yield service, run_a, run_b
    finally:
        service.close()


def open_job(page: Page, service: Service) -> None:
    page.goto(f"http://127.0.0.1:{service.port}/?codops=alpha&task=job")
    expect(page.locator("#task-title")).to_have_text("alpha / job")
    expect(page.locator("#runs tbody tr").first).to_be_visible()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def test_diff_of_two_picked_runs_is_shown_as_text(history: tuple[Service, Run, Run], page: Page) -> None:
    service, run_a, run_b = history
    open_job(page, service)
    diff_button = page.locator("#diff-runs")
    expect(diff_button).to_be_disabled()
    page.locator(f'#runs tr[data-run="{run_b.id}"] input.pick').check()
    expect(diff_button).to_be_disabled()
    page.locator(f'#runs tr[data-run="{run_a.id}"] input.pick').check()
    expect(diff_button).to_be_enabled()
    diff_button.click()

    panel = page.locator("#diff")
    expect(page.locator("#diff-title")).to_have_text(f"Diff of run {run_a.id} -> run {run_b.id}")
    expect(panel).to_contain_text(f"commit: {run_a.version} -> {run_b.version}")
    expect(panel).to_contain_text("-    print('code A <b>bold</b><img src=x")
    expect(panel).to_contain_text("+    print('code B <b>bold</b><img src=x")
    expect(panel).to_contain_text("-      label: first")
    expect(panel).to_contain_text("+      label: second")
    expect(panel.locator("span.del").filter(has_text="code A")).to_have_count(1)
    assert panel.locator("b, img").count() == 0  # text, never markup
    shot(page, "diff")

    # The picks survive the page's refresh.
    loaded = page.locator("body").get_attribute("data-loaded") or ""
    expect(page.locator("body")).not_to_have_attribute("data-loaded", loaded, timeout=15_000)
    expect(page.locator(f'#runs tr[data-run="{run_a.id}"] input.pick')).to_be_checked()
    expect(diff_button).to_be_enabled()

    page.locator(f'#runs tr[data-run="{run_a.id}"] button.show-manifest').click()
    expect(page.locator("#diff-title")).to_have_text(f"What run {run_a.id} ran")
    expect(panel).to_contain_text(f"commit: {run_a.version}")
    expect(panel).to_contain_text('arguments: {"label":"first"}')
    expect(panel).to_contain_text("CHUNKS = json.loads(")  # the runner script as executed


def test_rerun_needs_the_token_and_runs_the_old_commit(history: tuple[Service, Run, Run], page: Page) -> None:
    service, run_a, _ = history
    open_job(page, service)
    page.locator(f'#runs tr[data-run="{run_a.id}"] button.rerun').click()
    expect(page.locator("#status")).to_contain_text("401")
    assert service.store.take_triggers("alpha") == []

    page.fill("#token", TOKEN)
    page.locator(f'#runs tr[data-run="{run_a.id}"] button.rerun').click()
    expect(page.locator("#status")).to_contain_text(f"rerun of run {run_a.id}: accepted")
    rerun = next(run for run in service.once() if run.trigger is RunTrigger.RERUN)
    assert (rerun.rerun_of, rerun.version) == (run_a.id, run_a.version)
    assert "code A <b>bold</b>" in log_text(rerun)

    row = page.locator(f'#runs tr[data-run="{rerun.id}"]')
    expect(row).to_contain_text(f"(rerun of {run_a.id})", timeout=15_000)  # the next refresh shows it
    assert TOKEN not in page.url


def test_keep_toggle_needs_the_token_and_marks_the_run_in_the_store(
    history: tuple[Service, Run, Run], page: Page
) -> None:
    service, run_a, _ = history
    open_job(page, service)
    keep = page.locator(f'#runs tr[data-run="{run_a.id}"] button.keep')
    expect(keep).to_have_text("Keep")
    expect(keep).to_have_attribute("aria-pressed", "false")

    keep.click()  # no token: refused, nothing changes
    expect(page.locator("#status")).to_contain_text(f"keep of run {run_a.id} refused (HTTP 401")
    assert service.store.get_run(run_a.id).keep is False

    page.evaluate("document.getElementById('status').textContent = ''")
    page.fill("#token", "wrong-token")
    keep.click()
    expect(page.locator("#status")).to_contain_text(f"keep of run {run_a.id} refused (HTTP 401")
    assert service.store.get_run(run_a.id).keep is False

    page.fill("#token", TOKEN)
    keep.click()
    expect(page.locator("#status")).to_contain_text(f"keep of run {run_a.id}: accepted")
    expect(keep).to_have_text("Kept")  # the refresh after the action shows the mark
    expect(keep).to_have_attribute("aria-pressed", "true")
    assert service.store.get_run(run_a.id).keep is True
    shot(page, "keep")

    keep.click()  # a kept run's button takes the mark off
    expect(page.locator("#status")).to_contain_text(f"unkeep of run {run_a.id}: accepted")
    expect(keep).to_have_text("Keep")
    assert service.store.get_run(run_a.id).keep is False
