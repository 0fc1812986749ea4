"""The dashboard in real headless Chromium (Debian's ``chromium`` driven by Playwright) against a running
service with real runs: real git repositories, real child processes, SQLite. Screenshots go to
``test-artifacts/``."""

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from scheduler.config import load_config
from scheduler.runs import runlogs
from scheduler.service.service import Service
from scheduler.status import RunStatus
from scheduler.store.records import Run, iso
from tests.helpers.backends import wait_for
from tests.helpers.browser import ARTIFACTS
from tests.helpers.orgs import QUICK, commit, org_repo, write_config

pytestmark = pytest.mark.slow

TOKEN = "dashboard-test-token"

XSS = (
    "def main():\n"
    "    print('<script>window.pwned=1</script>', flush=True)\n"
    "    print('<img src=x onerror=\"window.pwned=2\">', flush=True)\n"
)
# Fails on every second run: a task whose history mixes successes and failures.
FLAKY = (
    "from pathlib import Path\n\n"
    "def main(marker):\n"
    "    path = Path(marker)\n"
    "    count = int(path.read_text()) if path.exists() else 0\n"
    "    path.write_text(str(count + 1))\n"
    "    print('attempt', count, flush=True)\n"
    "    if count % 2:\n"
    "        raise RuntimeError('odd attempt')\n"
)
TAIL = (
    "import time\n\n"
    "def main():\n"
    "    for tick in range(2000):\n"
    "        print('tick', tick, flush=True)\n"
    "        time.sleep(0.2)\n"
)
HOURLY = {"every": "1h"}
# An exception whose message is far wider than any screen: the runs table must still show every column.
WORDY = "def main():\n    raise ValueError('the input table ' + 'is much longer than expected, ' * 30)\n"
# A definition file whose name and content are markup: its problems are shown as text, never run.
HOSTILE_FILE = "peach.conf/<img src=x onerror=window.pwned=5>.yaml"
HOSTILE_KEY = "<script>window.pwned=6</script>"
HOSTILE_YAML = (  # with one valid task: a file that yields none would hold the whole head back
    "codops: beta\ntasks:\n  quiet: {notebook: code/bad.py, method: main, executor: python, enabled: false}\n"
    f'  evil:\n    notebook: code/bad.py\n    method: main\n    "{HOSTILE_KEY}": 1\n'
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("dashboard")
    marker = str(tmp / "flaky-count")
    alpha = org_repo(
        tmp,
        "alpha",
        {
            "ok": (QUICK, HOURLY),
            "flaky": (FLAKY, {**HOURLY, "args": {"marker": marker}}),
            "xss": (XSS, HOURLY),
            "wordy": (WORDY, HOURLY),
        },
    )
    beta = org_repo(
        tmp,
        "beta",
        {
            "meta": (QUICK, {**HOURLY, "loop": "metadata", "timeout": "1m"}),
            "bad": (QUICK, {"colour": "red"}),  # an unknown key: a validation problem with file and line
        },
    )
    commit(beta, {HOSTILE_FILE: HOSTILE_YAML}, "a definition file full of markup")
    gamma = org_repo(tmp, "gamma", {"tail": (TAIL, HOURLY)})
    config = load_config(write_config(tmp, {"alpha": alpha, "beta": beta, "gamma": gamma}))
    started = Service(config, environ={"PEACH_TEST_TOKEN": TOKEN})
    started.start()
    try:
        for codops, task in (
            ("alpha", "ok"),
            ("alpha", "flaky"),
            ("alpha", "xss"),
            ("alpha", "wordy"),
            ("beta", "meta"),
        ):
            wait_for(lambda c=codops, t=task: finished(started, c, t) >= 1, 90, f"a run of {codops}/{task}")
        yield started
    finally:
        started.request_force_stop()
        started.wait_stopped(30)
        started.close()


def finished(service: Service, codops: str, task: str) -> int:
    runs = service.store.list_runs(codops=codops, task=task, limit=100)
    return sum(run.status is not RunStatus.RUNNING for run in runs)


def flaky_runs(service: Service) -> list[Run]:
    """Four runs of the flaky task (succeeded, failed, succeeded, failed), newest first."""
    for count in range(finished(service, "alpha", "flaky") + 1, 5):
        service.store.request_trigger("alpha", "flaky", requested_by="test")
        wait_for(lambda n=count: finished(service, "alpha", "flaky") >= n, 90, f"flaky run {count}")
    return service.store.list_runs(codops="alpha", task="flaky", limit=100)


def url(service: Service, query: str = "") -> str:
    return f"http://127.0.0.1:{service.port}/{query}"


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def open_task(page: Page, service: Service, codops: str, task: str) -> None:
    page.goto(url(service, f"?codops={codops}&task={task}"))
    expect(page.locator("#task-title")).to_have_text(f"{codops} / {task}")
    expect(page.locator("#runs tbody tr").first).to_be_visible()


def test_selector_lists_organisations_and_metadata_loop_and_is_kept_in_the_url(
    service: Service, page: Page
) -> None:
    page.goto(url(service))
    options = page.locator("#org option")
    expect(options).to_have_count(4)
    assert options.evaluate_all("os => os.map(o => o.value)") == ["alpha", "beta", "gamma", "metadata"]
    expect(page.locator("#org")).to_have_value("alpha")

    page.select_option("#org", "beta")
    expect(page).to_have_url(re.compile(r"\?codops=beta$"))
    problems = page.locator("#problems li")
    expect(problems.first).to_be_visible()
    problem = service.store.problems("beta")[0]
    assert problem.line is not None
    expect(problems.first).to_contain_text(f"{problem.file}:{problem.line}")
    expect(problems.first).to_contain_text("colour")
    shot(page, "problems")

    page.select_option("#org", "metadata")
    expect(page).to_have_url(re.compile(r"\?codops=metadata$"))
    expect(page.locator("#tasks tbody tr")).to_have_count(1)
    expect(page.locator("#tasks tbody tr").first).to_have_attribute("data-task", "beta/meta")
    page.reload()
    expect(page.locator("#org")).to_have_value("metadata")  # the place survives a reload


def test_tasks_table_shows_state_last_status_and_duration(service: Service, page: Page) -> None:
    page.goto(url(service, "?codops=alpha"))
    rows = page.locator("#tasks tbody tr")
    tasks = service.store.task_states("alpha")
    expect(rows).to_have_count(len(tasks))
    for task in tasks:
        row = page.locator(f'#tasks tbody tr[data-task="alpha/{task.task}"]')
        cells = row.locator("td")
        expect(cells.nth(1)).to_have_text(task.state.value)
        if task.last_status is not None:
            expect(cells.nth(2)).to_contain_text(task.last_status.value)
        expect(cells.nth(5)).to_have_text(task.executor.value)
        expect(cells.nth(6)).to_have_text("alpha")
    row = page.locator('#tasks tbody tr[data-task="alpha/ok"] td')
    expect(row.nth(4)).to_have_text(re.compile(r"\d+\.\d s"))
    ok = next(task for task in tasks if task.task == "ok")
    started = iso(ok.last_started_at) or ""
    expect(row.nth(3)).to_have_text(started.replace("T", " ")[:19])  # UTC, as the header says
    due = iso(ok.next_due)  # the loop sets it after each run of a task with `every`
    assert due is not None
    expect(row.nth(7)).to_have_text(due.replace("T", " ")[:19])


def test_runs_table_and_chart_points_match_the_database(service: Service, page: Page) -> None:
    runs = flaky_runs(service)
    assert [run.status for run in runs] == [RunStatus.FAILED, RunStatus.SUCCEEDED] * 2

    open_task(page, service, "alpha", "flaky")
    rows = page.locator("#runs tbody tr")
    expect(rows).to_have_count(4)
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.run)") == [run.id for run in runs]
    first = rows.first.locator("td")
    expect(first.nth(0)).to_have_text(runs[0].short_version or "")
    expect(first.nth(2)).to_contain_text("FAILED")

    points = page.locator("#chart .pt")
    expect(points).to_have_count(4)
    drawn = points.evaluate_all("ps => ps.map(p => [p.dataset.run, p.dataset.status, p.tagName])")
    expected = {run.id: run.status.value for run in runs}
    assert {run_id: status for run_id, status, _ in drawn} == expected
    shapes = {status: tag for _, status, tag in drawn}
    assert shapes == {"SUCCEEDED": "circle", "FAILED": "path"}  # shape as well as colour
    colours = points.evaluate_all("ps => ps.map(p => getComputedStyle(p).fill + getComputedStyle(p).stroke)")
    assert len(set(colours)) == 2
    expect(page.locator("#chart-caption")).to_contain_text("4 runs")
    shot(page, "task")


def test_log_of_one_run_and_of_all_runs(service: Service, page: Page) -> None:
    runs = flaky_runs(service)
    failed = next(run for run in runs if run.status is RunStatus.FAILED)
    open_task(page, service, "alpha", "flaky")
    page.locator(f'#runs tr[data-run="{failed.id}"] button.show-log').click()
    log = page.locator("#log")
    expect(log).to_contain_text("RuntimeError: odd attempt")
    assert log.text_content() == runlogs.read(Path(failed.log_path or ""))[0].decode()

    page.locator("#all-logs").click()
    expect(page.locator("#log-title")).to_have_text(f"Logs of {len(runs)} runs, oldest first")
    text = log.text_content() or ""
    assert [line.split()[2] for line in text.splitlines() if line.startswith("===== run ")] == [
        run.id for run in reversed(runs)
    ]
    assert text.count("attempt ") >= len(runs)


def test_task_output_is_shown_as_text_never_run(service: Service, page: Page) -> None:
    open_task(page, service, "alpha", "xss")
    page.locator("#runs button.show-log").first.click()
    log = page.locator("#log")
    expect(log).to_contain_text("<script>window.pwned=1</script>")
    expect(log).to_contain_text('<img src=x onerror="window.pwned=2">')
    assert page.locator("#log *").count() == 0  # text nodes only: no element came from the log
    assert page.evaluate("window.pwned") is None
    shot(page, "xss")


def test_problem_file_names_and_messages_are_shown_as_text_never_run(service: Service, page: Page) -> None:
    hostile = [p for p in service.store.problems("beta") if p.task == "evil"]
    assert hostile and hostile[0].file == HOSTILE_FILE and HOSTILE_KEY in hostile[0].message
    page.goto(url(service, "?codops=beta"))
    problems = page.locator("#problems")
    expect(problems).to_contain_text(HOSTILE_FILE)
    expect(problems).to_contain_text(HOSTILE_KEY)
    assert page.locator("#problems img, #problems script").count() == 0
    assert page.evaluate("window.pwned") is None


def test_live_tail_follows_a_running_run_and_kill_needs_the_token(service: Service, page: Page) -> None:
    running = wait_for(
        lambda: [
            r for r in service.store.list_runs(codops="gamma", task="tail") if r.status is RunStatus.RUNNING
        ],
        90,
        "the tail task running",
    )[0]
    open_task(page, service, "gamma", "tail")
    page.locator(f'#runs tr[data-run="{running.id}"] button.show-log').click()
    expect(page.locator("#log-title")).to_contain_text("following")
    log = page.locator("#log")
    expect(log).to_contain_text("tick 1")
    seen = len(log.text_content() or "")
    last = int(re.findall(r"tick (\d+)", log.text_content() or "")[-1])
    expect(log).to_contain_text(f"tick {last + 5}", timeout=20_000)  # more arrived without reloading
    ticks = [int(tick) for tick in re.findall(r"tick (\d+)", log.text_content() or "")]
    assert ticks == list(range(len(ticks)))  # appended in order, nothing lost or repeated
    assert len(log.text_content() or "") > seen
    shot(page, "tail")

    kill = page.locator(f'#runs tr[data-run="{running.id}"] button.kill')
    kill.click()
    expect(page.locator("#status")).to_contain_text("401")
    assert service.store.get_run(running.id).status is RunStatus.RUNNING

    page.fill("#token", TOKEN)
    page.locator(f'#runs tr[data-run="{running.id}"] button.kill').click()
    expect(page.locator("#status")).to_contain_text("accepted")
    wait_for(lambda: service.store.get_run(running.id).status is RunStatus.KILLED, 30, "the killed run")
    expect(page.locator("#log-title")).to_contain_text("KILLED", timeout=15_000)  # the tail stops
    assert TOKEN not in page.url


def test_trigger_without_then_with_the_token(service: Service, page: Page) -> None:
    before = finished(service, "alpha", "ok")
    page.goto(url(service, "?codops=alpha"))
    button = page.locator('#tasks tr[data-task="alpha/ok"] button.trigger')
    button.click()
    expect(page.locator("#status")).to_contain_text("401")
    expect(page.locator("#status")).to_contain_text("enter the API token")

    page.fill("#token", TOKEN)
    page.locator("#token").dispatch_event("change")
    page.locator('#tasks tr[data-task="alpha/ok"] button.trigger').click()
    expect(page.locator("#status")).to_contain_text("accepted")
    loaded = page.locator("body").get_attribute("data-loaded") or ""
    expect(page.locator("body")).not_to_have_attribute("data-loaded", loaded, timeout=15_000)
    expect(page.locator("#status")).to_contain_text("accepted")  # a refresh does not wipe the answer
    wait_for(lambda: finished(service, "alpha", "ok") == before + 1, 90, "the triggered run")
    assert TOKEN not in page.url
    assert page.evaluate("sessionStorage.getItem('peach-token')") == TOKEN


def test_refresh_keeps_the_users_place(service: Service, page: Page) -> None:
    flaky_runs(service)
    open_task(page, service, "alpha", "flaky")
    loaded = page.locator("body").get_attribute("data-loaded")
    button = page.locator("#runs button.show-log").nth(1)
    button.focus()
    key = button.get_attribute("data-focus")
    expect(page.locator("body")).not_to_have_attribute("data-loaded", loaded or "", timeout=15_000)
    assert page.evaluate("document.activeElement.dataset.focus") == key
    expect(page).to_have_url(re.compile(r"codops=alpha&task=flaky"))
    page.keyboard.press("Enter")  # keyboard works on the refreshed button
    expect(page.locator("#log-title")).to_contain_text("Log of run")


def test_durations_endpoint_downsamples_and_the_page_is_self_contained(service: Service) -> None:
    durations = url(service, "api/v1/durations?codops=alpha&task=flaky")
    with urllib.request.urlopen(durations) as response:  # noqa: S310 (http on loopback)
        series = json.load(response)
    assert series["total"] == len(series["points"]) >= 4
    with urllib.request.urlopen(url(service)) as response:  # noqa: S310 (http on loopback)
        html = response.read().decode()
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "http" not in html  # no CDN: every asset comes from the service


@pytest.mark.parametrize("width", [1280, 1500, 1920])
def test_runs_table_keeps_every_column_in_view_and_shows_the_error(
    service: Service, page: Page, width: int
) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    open_task(page, service, "alpha", "wordy")
    run = service.store.list_runs(codops="alpha", task="wordy")[0]
    assert run.error and run.error.startswith("ValueError: the input table is much longer")
    row = page.locator(f'#runs tbody tr[data-run="{run.id}"]')
    error = row.locator(".error-line")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("title", run.error)  # the full text on hover
    pane = page.locator(".runs-pane").bounding_box()
    assert pane is not None and pane["x"] + pane["width"] <= width
    cells = row.locator("td")
    for index, name in (
        (0, "Version"),
        (1, "Start"),
        (2, "Status"),
        (3, "Duration"),
        (5, "Actions"),
        (6, "Diff"),
    ):
        box = cells.nth(index).bounding_box()
        assert box is not None, name
        assert box["x"] >= pane["x"] - 1 and box["x"] + box["width"] <= pane["x"] + pane["width"] + 1, (
            name,
            box,
        )
    for control in ("button.show-log", "button.keep", "input.pick"):
        expect(row.locator(control)).to_be_in_viewport()
    expect(cells.nth(3)).to_have_text(re.compile(r"\d+\.\d s"))

    row.locator("button.show-log").click()
    expect(page.locator("#log-title")).to_contain_text(run.id)
    assert page.locator(".runs-pane").evaluate("pane => pane.scrollLeft") == 0  # Version, Start stay
    expect(cells.nth(0)).to_be_in_viewport()
    shot(page, f"runs-{width}")
    error.click()  # expands in place
    expect(error).to_have_class(re.compile("expanded"))


def test_task_list_shows_the_last_error_and_invalid_tasks_with_their_problem(
    service: Service, page: Page
) -> None:
    page.goto(url(service, "?codops=alpha"))
    wordy = page.locator('#tasks tbody tr[data-task="alpha/wordy"] td')
    expect(wordy.nth(2).locator(".error-line")).to_contain_text("ValueError: the input table")

    bad = next(t for t in service.store.task_states("beta") if t.task == "bad")
    assert bad.state.value == "INVALID" and bad.reason and "unknown task key 'colour'" in bad.reason
    page.goto(url(service, "?codops=beta"))
    cells = page.locator('#tasks tbody tr[data-task="beta/bad"] td')
    expect(cells.nth(1)).to_contain_text("INVALID")
    expect(cells.nth(1)).to_contain_text(f"since {bad.invalid_since}")
    expect(cells.nth(1).locator(".why")).to_have_attribute("title", bad.reason)
    shot(page, "invalid")
