"""The notebook view for real: a notebook calling ``peach_client.initialize_tasks_info()`` executed by
nbclient on a real ipykernel against the running service; the assertions read what the kernel printed and
the widget state the kernel synchronised to the notebook (what a browser would render)."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pytest

from scheduler.config import load_config
from scheduler.service.service import Service
from scheduler.status import RunStatus
from tests.helpers.backends import wait_for
from tests.helpers.orgs import FAIL, org_repo, write_config

QUICK = "def main():\n    print('quick and fine')\n"
GATED = """\
import os, time

def main(gate):
    print("waiting for the gate", flush=True)
    deadline = time.monotonic() + 120
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    print("through the gate")
"""
HOURLY = {"every": "1h"}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    gate = tmp_path / "gate"
    repo = org_repo(
        tmp_path,
        "alpha",
        {
            "broken": (FAIL, HOURLY),
            "quick": (QUICK, HOURLY),
            "zgated": (GATED, {**HOURLY, "args": {"gate": str(gate)}}),
        },
    )
    started = Service(load_config(write_config(tmp_path, {"alpha": repo})), environ={})
    started.start()
    yield started
    started.request_force_stop()
    started.wait_stopped(30)
    started.close()


def widget_states(notebook: Any) -> list[dict[str, Any]]:
    """The widget models' states as the kernel synchronised them, with their model names."""
    stored = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return [{"model": model["model_name"], **model["state"]} for model in stored.values()]


def dropdown(states: list[dict[str, Any]], description: str) -> dict[str, Any]:
    return next(s for s in states if s["model"] == "DropdownModel" and s.get("description") == description)


def printed(cell: Any) -> Any:
    return json.loads("".join(o["text"] for o in cell.outputs if o.get("name") == "stdout"))


@pytest.mark.timeout(240)
def test_the_notebook_view_on_a_real_kernel(service: Service, tmp_path: Path) -> None:
    store = service.store
    wait_for(
        lambda: (
            {r.task: r.status for r in store.list_runs(codops="alpha")}
            == {"broken": RunStatus.FAILED, "quick": RunStatus.SUCCEEDED, "zgated": RunStatus.RUNNING}
        ),
        120,
        "the first pass: broken failed, quick succeeded, zgated running",
    )
    cells = [
        f"import json, os, time\nos.environ['PEACH_URL'] = 'http://127.0.0.1:{service.port}'\n"
        "import peach_client\nview = peach_client.initialize_tasks_info(refresh=0.3)",
        "print(json.dumps({'organisations': list(view.organisation.options), 'tasks': view.task_rows,"
        " 'chosen': view.task.value}))",
        "view.task.value = 'broken'\nview.log_run.value = view.run_rows[0][0]\nview.show_below.click()\n"
        "print(json.dumps({'runs': view.run_rows, 'log': view.logs.value, 'chart': view.chart.value}))",
        "view.task.value = 'zgated'\nview.log_run.value = view.run_rows[0][0]\nview.show_logs()\n"
        "before = view.logs.value\n"
        f"open({str(tmp_path / 'gate')!r}, 'w').close()\n"
        "deadline = time.monotonic() + 120\n"
        "def status(): return {r[0]: r[2] for r in view.task_rows}['zgated']\n"
        "while time.monotonic() < deadline and status() != 'SUCCEEDED':\n"
        "    time.sleep(0.05)\n"
        "deadline = time.monotonic() + 60\n"
        "while time.monotonic() < deadline and 'through the gate' not in view.logs.value:\n"
        "    time.sleep(0.05)\n"
        "print(json.dumps({'tasks': view.task_rows, 'before': before, 'after': view.logs.value}))",
    ]
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbclient.NotebookClient(notebook, kernel_name="python3", timeout=180, store_widget_state=True).execute()

    first = printed(notebook.cells[1])
    assert first["organisations"] == ["alpha"]
    rows = {row[0]: row for row in first["tasks"]}
    assert sorted(rows) == ["broken", "quick", "zgated"]
    assert rows["broken"][2] == "FAILED" and rows["quick"][2] == "SUCCEEDED"
    assert rows["zgated"][1] == "RUNNING" and rows["zgated"][3] != "-"  # running: its start time shown
    assert first["chosen"] == "broken"  # the first task is chosen

    chosen = printed(notebook.cells[2])
    broken = store.list_runs(codops="alpha", task="broken")[0]
    assert [row[0] for row in chosen["runs"]] == [broken.id]
    assert chosen["runs"][0][1] == broken.short_version and chosen["runs"][0][3] == "FAILED"
    assert "RuntimeError: boom" in chosen["log"]
    assert "class='failure'" in chosen["chart"] and "class='success'" not in chosen["chart"]

    last = printed(notebook.cells[3])
    refreshed = {row[0]: row for row in last["tasks"]}
    assert refreshed["zgated"][1:3] in (["FINISHED", "SUCCEEDED"], ["PENDING", "SUCCEEDED"])
    # the running run's log, followed while it ran: its last lines were added to what was shown
    assert "waiting for the gate" in last["before"] and "through the gate" not in last["before"]
    assert last["after"].startswith(last["before"]) and "through the gate" in last["after"]

    # what the kernel synchronised to the front end
    states = widget_states(notebook)
    organisations = dropdown(states, "Organisation")
    assert organisations["_options_labels"] == ["alpha"] and organisations["index"] == 0
    tasks = dropdown(states, "Task")
    assert tasks["_options_labels"] == ["broken", "quick", "zgated"] and tasks["index"] == 2
    tables = [s["value"] for s in states if s["model"] == "HTMLModel"]
    assert any("<td>zgated</td><td>" in t and "SUCCEEDED" in t and "<td>quick</td>" in t for t in tables)
    gated = store.list_runs(codops="alpha", task="zgated")[0]
    assert any(f"<td>{gated.id}</td>" in t for t in tables)  # the runs table of the chosen task
    logs = [s["value"] for s in states if s["model"] == "TextareaModel"]
    assert len(logs) == 1 and "through the gate" in logs[0]
