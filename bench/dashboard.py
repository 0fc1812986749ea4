"""Page weight and first render time of the dashboard on a task with 10,000 runs, in real Chromium.

    .venv/bin/python bench/dashboard.py [--runs 10000] [--rounds 5]

The runs are inserted straight into a SQLite state store (one failure in seven, durations with noise),
the API is served by uvicorn in this process and Debian's chromium opens ``/?codops=bench&task=big``.
"First render" is from navigation to the task's runs table and every chart point drawn; "weight" is
every byte the page fetched for that (HTML, JS, CSS, JSON). The baseline is a bare static page of the
same number of bytes served by the same server: the ratio is what the dashboard's own work costs.
"""

import argparse
import contextlib
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: find tests.helpers.browser

import uvicorn
from fastapi.responses import HTMLResponse
from playwright.sync_api import Page, sync_playwright

from scheduler.http.api import create_app
from scheduler.metrics import Metrics
from scheduler.store.models import RunRow, TaskRow
from scheduler.store.store import Store
from tests.helpers.browser import ARGS, CHROMIUM


def fill(store: Store, runs: int) -> None:
    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for number in range(runs):
        began = start + timedelta(minutes=10 * number)
        failed = rng.random() < 1 / 7
        took = max(1.0, rng.gauss(120, 30)) * (0.3 if failed else 1.0)
        rows.append(
            RunRow(
                id=f"r-{number:08d}",
                codops="bench",
                task="big",
                loop="bench",
                executor="python",
                version=f"{rng.getrandbits(160):040x}",
                status="FAILED" if failed else "SUCCEEDED",
                trigger="schedule",
                started_at=began,
                finished_at=began + timedelta(seconds=took),
                duration_seconds=took,
                outcome="exit code 1" if failed else "exit code 0",
            )
        )
    last = rows[-1]
    with store._session(write=True) as session:  # bulk insert: start_run/finish_run would take minutes
        session.add_all(rows)
        session.add(
            TaskRow(
                codops="bench",
                task="big",
                loop="bench",
                executor="python",
                enabled=True,
                state="FINISHED",
                last_status=last.status,
                last_run_id=last.id,
                last_started_at=last.started_at,
                last_finished_at=last.finished_at,
                last_duration_seconds=last.duration_seconds,
                updated_at=last.finished_at,
            )
        )


def measure(page: Page, url: str, *ready: str) -> tuple[float, int]:
    fetched: list[int] = []

    def count(response: object) -> None:
        with contextlib.suppress(Exception):  # a redirect or aborted response has no body
            fetched.append(len(response.body()))  # type: ignore[attr-defined]

    page.on("response", count)
    began = time.perf_counter()
    page.goto(url)
    for selector in ready:
        page.wait_for_selector(selector, state="attached")
    took = time.perf_counter() - began
    page.remove_listener("response", count)
    return took, sum(fetched)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = Store.from_url(f"sqlite:///{Path(tmp) / 'state.db'}")
        began = time.perf_counter()
        fill(store, options.runs)
        print(f"inserted {options.runs} runs in {time.perf_counter() - began:.1f} s")
        app = create_app(store, Metrics(), token=None)
        bare: dict[str, str] = {"html": ""}
        app.get("/bare", response_class=HTMLResponse)(lambda: bare["html"])
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                print("the server did not start", file=sys.stderr)
                return 1
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        expected = len(store.durations("bench", "big"))
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
                page = browser.new_page(viewport={"width": 1366, "height": 768})
                task = f"{base}/?codops=bench&task=big"
                ready = ("#runs tbody tr:nth-child(25)", "#chart .pt")
                dashboard = [measure(page, task, *ready) for _ in range(options.rounds)]
                points = page.locator("#chart .pt").count()
                weight = dashboard[-1][1]
                filler = "x" * max(0, weight - 60)
                bare["html"] = f"<!doctype html><title>bare</title><pre id=done>{filler}</pre>"
                static = [measure(page, f"{base}/bare", "#done") for _ in range(options.rounds)]
                browser.close()
        finally:
            server.should_exit = True
            thread.join(10)
            store.close()

    render = statistics.median(took for took, _ in dashboard)
    baseline = statistics.median(took for took, _ in static)
    print(f"task with {expected} runs: chart draws {points} points (downsampled), runs table 25 per page")
    print(f"page weight: {weight / 1024:.1f} KiB (HTML, JS, CSS, JSON)")
    print(f"first render (median of {options.rounds}): {render * 1000:.0f} ms")
    print(f"bare static page of the same size: {baseline * 1000:.0f} ms; ratio {render / baseline:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
