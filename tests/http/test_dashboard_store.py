"""The dashboard in Chromium against an API over a store filled directly (no loops): commit and YARN links
built from the operator configuration, and the runs table's pages."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from threading import Thread

import uvicorn
import yaml
from fastapi import FastAPI
from playwright.sync_api import Page, expect

from scheduler.config import load_config
from scheduler.http import dashboard
from scheduler.http.api import create_app
from scheduler.metrics import Metrics
from scheduler.status import RunStatus
from scheduler.store.store import Store
from tests.helpers.backends import wait_for
from tests.helpers.browser import ARTIFACTS

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_links_come_from_http_repositories_and_the_first_resourcemanager(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "workspace": str(tmp_path / "ws"),
                "yarn": {"resourcemanagers": ["http://rm1:8088/", "http://rm2:8088"]},
                "organisations": {
                    "alpha": {"repositories": [{"url": "https://git.example.org/data/alpha.git/"}]},
                    "beta": {"repositories": [{"url": "ssh://git@git.example.org/data/beta.git"}]},
                    "gamma": {
                        "repositories": [
                            {"url": "git@git.example.org:data/gamma.git"},
                            {"url": "http://oauth2@gitea.local:3000/data/gamma", "token_env": "T"},
                        ]
                    },
                },
            }
        )
    )
    config = load_config(config_file)
    assert dashboard.repository_links(config) == {
        "alpha": "https://git.example.org/data/alpha",
        "gamma": "http://gitea.local:3000/data/gamma",  # the user name is not shown
    }
    assert dashboard.yarn_ui(config) == "http://rm1:8088"


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 15, "the HTTP server")
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)


def test_runs_table_links_commit_and_application(tmp_path: Path, page: Page) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        run = store.start_run("alpha", "spark", loop="alpha", executor="spark", version=SHA)
        store.attach(run.id, handle="yarn:application_1700000000000_0042")
        store.finish_run(run.id, RunStatus.SUCCEEDED, "final status SUCCEEDED")
        app = create_app(
            store,
            Metrics(),
            token=None,
            repositories={"alpha": "https://git.example.org/data/alpha"},
            yarn_ui="http://rm1:8088",
        )
        with serve(app) as base:
            page.goto(f"{base}/?codops=alpha&task=spark")
            cells = page.locator(f'#runs tr[data-run="{run.id}"] td')
            version = cells.nth(0).locator("a")
            expect(version).to_have_text(SHA[:12])
            expect(version).to_have_attribute("href", f"https://git.example.org/data/alpha/commit/{SHA}")
            application = cells.nth(4).locator("a")
            expect(application).to_have_text("application_1700000000000_0042")
            expect(application).to_have_attribute(
                "href", "http://rm1:8088/cluster/app/application_1700000000000_0042"
            )
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-links.png"))
    finally:
        store.close()


def test_runs_are_paginated_newest_first(tmp_path: Path, page: Page) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        ids = []
        for number in range(60):
            run = store.start_run("alpha", "busy", loop="alpha", executor="python", version=SHA)
            status = RunStatus.FAILED if number % 5 == 0 else RunStatus.SUCCEEDED
            store.finish_run(run.id, status, "exit code 1" if number % 5 == 0 else "exit code 0")
            ids.append(run.id)
        newest_first = [run.id for run in store.list_runs(codops="alpha", task="busy", limit=100)]
        assert sorted(newest_first) == sorted(ids)
        with serve(create_app(store, Metrics(), token=None)) as base:
            page.goto(f"{base}/?codops=alpha&task=busy")
            rows = page.locator("#runs tbody tr")
            ids_shown = "rs => rs.map(r => r.dataset.run)"
            expect(rows).to_have_count(25)
            expect(rows.first).to_have_attribute("data-run", newest_first[0])
            assert rows.evaluate_all(ids_shown) == newest_first[:25]
            expect(page.locator("#newer")).to_be_disabled()
            page.locator("#older").click()
            expect(rows.first).to_have_attribute("data-run", newest_first[25])
            assert rows.evaluate_all(ids_shown) == newest_first[25:50]
            page.locator("#older").click()
            expect(rows).to_have_count(10)
            expect(page.locator("#older")).to_be_disabled()
            page.locator("#newer").click()
            expect(rows.first).to_have_attribute("data-run", newest_first[0])
            expect(page.locator("#chart .pt")).to_have_count(60)  # the chart has every run, not a page
            expect(page.locator("#chart .pt-failed")).to_have_count(12)
    finally:
        store.close()
