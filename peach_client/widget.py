"""The task-information view for Jupyter, built with ``ipywidgets`` on ``peach_client.Client``.

Pick an organisation; see its tasks (state, last status, start time and duration of the last run); pick a
task to see its runs (version = short commit, start, status, duration), a chart of their durations
(successes as circles, failures as crosses) and the logs of all its recent runs or of one ("Show below").
Everything a run printed is shown as text (a ``Textarea``), never as HTML; tables and the chart are HTML
built here with every value escaped.

While the view is open it refreshes every ``refresh`` seconds from a background thread: task states
always, the runs and the chart when the chosen task's last run changed or is going, and the log shown
below by tailing it (byte ranges) while its run goes. ``close()`` stops it.
"""

import html
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import ipywidgets as widgets

from peach_client.client import Client, DurationPoint, PeachClientError, Run, Task

ALL_RUNS = "all runs"
LOG_RUNS = 10  # "all runs" shows the logs of this many recent runs
CHART_W, CHART_H, PAD = 640, 180, 36


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    minutes, seconds = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def choose(dropdown: widgets.Dropdown, options: Sequence[str]) -> None:
    """New options for ``dropdown``, keeping its value when it is still one of them, else the first."""
    current = dropdown.value
    if list(dropdown.options) != list(options):
        dropdown.options = list(options)
    wanted = current if current in options else (options[0] if options else None)
    if dropdown.value != wanted:
        dropdown.value = wanted


def html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> str:
    if not rows:
        return f"<p><i>{html.escape(empty)}</i></p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='peach'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def task_rows(tasks: Sequence[Task]) -> list[tuple[str, str, str, str, str]]:
    """(task, state, last status, last start, last duration) per task."""
    return [
        (
            t.task,
            t.state,
            t.last_status or "-",
            _time(t.last_started_at),
            _seconds(t.last_duration_seconds),
        )
        for t in tasks
    ]


def run_rows(runs: Sequence[Run]) -> list[tuple[str, str, str, str, str]]:
    """(run id, version, start, status, duration) per run, newest first."""
    return [
        (r.id, r.short_version or "-", _time(r.started_at), r.status, _seconds(r.duration_seconds))
        for r in runs
    ]


def duration_chart(points: Sequence[DurationPoint]) -> str:
    """An SVG scatter of durations over time: successes as circles, failures as crosses."""
    timed = [p for p in points if p.duration_seconds is not None]
    if not timed:
        return "<p><i>no finished run yet</i></p>"
    first, last = timed[0].started_at.timestamp(), timed[-1].started_at.timestamp()
    longest = max(p.duration_seconds or 0.0 for p in timed) or 1.0
    shapes = []
    for point in timed:
        x = PAD + (point.started_at.timestamp() - first) / ((last - first) or 1.0) * (CHART_W - 2 * PAD)
        y = CHART_H - PAD - (point.duration_seconds or 0.0) / longest * (CHART_H - 2 * PAD)
        title = html.escape(f"{point.id} {point.status} {_seconds(point.duration_seconds)}")
        if point.status == "SUCCEEDED":
            shapes.append(
                f"<circle class='success' cx='{x:.1f}' cy='{y:.1f}' r='4' fill='none' stroke='#2a7'>"
                f"<title>{title}</title></circle>"
            )
        else:
            a, b, c, d = x - 4, y - 4, x + 4, y + 4
            path = f"M{a:.1f},{b:.1f}L{c:.1f},{d:.1f}M{a:.1f},{d:.1f}L{c:.1f},{b:.1f}"
            shapes.append(
                f"<path class='failure' d='{path}' stroke='#c33' stroke-width='2'>"
                f"<title>{title}</title></path>"
            )
    axis = (
        f"<line x1='{PAD}' y1='{CHART_H - PAD}' x2='{CHART_W - PAD}' y2='{CHART_H - PAD}' stroke='#888'/>"
        f"<line x1='{PAD}' y1='{PAD}' x2='{PAD}' y2='{CHART_H - PAD}' stroke='#888'/>"
        f"<text x='2' y='{PAD}' font-size='10'>{html.escape(_seconds(longest))}</text>"
        f"<text x='{PAD}' y='{CHART_H - 8}' font-size='10'>{html.escape(_time(timed[0].started_at))}</text>"
        f"<text x='{CHART_W - PAD - 110}' y='{CHART_H - 8}' font-size='10'>"
        f"{html.escape(_time(timed[-1].started_at))}</text>"
    )
    legend = "<p>durations: &#9675; succeeded, &#215; failed</p>"
    svg = f"<svg width='{CHART_W}' height='{CHART_H}' role='img'>{axis}{''.join(shapes)}</svg>"
    return legend + svg


class TasksInfo(widgets.VBox):  # type: ignore[misc]  # ipywidgets is untyped
    """The view. Its parts are public for scripts and tests: ``organisation``, ``tasks_table``,
    ``task``, ``runs_table``, ``chart``, ``log_run``, ``show_below``, ``logs``, ``message``; the rows
    shown are ``task_rows`` and ``run_rows``."""

    def __init__(self, client: Client, *, refresh: float = 5.0, runs_shown: int = 50) -> None:
        self.client, self.refresh_seconds, self.runs_shown = client, refresh, runs_shown
        self.organisation = widgets.Dropdown(description="Organisation", options=[])
        self.tasks_table = widgets.HTML()
        self.task = widgets.Dropdown(description="Task", options=[])
        self.runs_table = widgets.HTML()
        self.chart = widgets.HTML()
        self.log_run = widgets.Dropdown(description="Logs of", options=[ALL_RUNS])
        self.show_below = widgets.Button(description="Show below")
        self.logs = widgets.Textarea(layout=widgets.Layout(width="100%", height="320px"), disabled=True)
        self.message = widgets.HTML()
        self.task_rows: list[tuple[str, str, str, str, str]] = []
        self.run_rows: list[tuple[str, str, str, str, str]] = []
        self._tasks: dict[str, Task] = {}
        self._runs: list[Run] = []
        self._shown: tuple[str, int] | None = None  # the one run whose log is shown, and how far
        self._lock = threading.RLock()
        self._stop = threading.Event()
        super().__init__(
            [
                self.organisation,
                self.message,
                self.tasks_table,
                self.task,
                self.runs_table,
                self.chart,
                widgets.HBox([self.log_run, self.show_below]),
                self.logs,
            ]
        )
        self.organisation.observe(lambda _: self._organisation_chosen(), names="value")
        self.task.observe(lambda _: self._task_chosen(), names="value")
        self.show_below.on_click(lambda _: self.show_logs())
        self._load_organisations()
        self._thread: threading.Thread | None = None
        if refresh > 0:
            self._thread = threading.Thread(target=self._refreshing, name="peach-tasks-info", daemon=True)
            self._thread.start()

    # -- what the user does -----------------------------------------------------------------------------

    def _load_organisations(self) -> None:
        found = self._call(self.client.organisations)
        if found is not None:
            choose(self.organisation, [org.codops for org in found])

    def _organisation_chosen(self) -> None:
        with self._lock:
            self._tasks = {}
            choose(self.task, [])
            self.refresh_tasks()

    def _task_chosen(self) -> None:
        with self._lock:
            self._shown = None
            self.logs.value = ""
            self.refresh_runs()

    def show_logs(self) -> None:
        """Fill the log area with the chosen run's log, or the logs of the recent runs ("all runs")."""
        with self._lock:
            choice = self.log_run.value
            if choice in (None, ALL_RUNS):
                self._shown = None
                parts = []
                for run in self._runs[:LOG_RUNS]:
                    chunk = self._call(lambda run=run: self.client.log(run))
                    body = chunk.text if chunk else "(log unavailable)"
                    parts.append(f"===== {run.id} {run.status} ({run.short_version or '-'}) =====\n{body}")
                self.logs.value = "\n".join(parts)
                return
            chunk = self._call(lambda: self.client.log(choice))
            self.logs.value = chunk.text if chunk else ""
            self._shown = (choice, chunk.next if chunk else 0)

    # -- refreshing -------------------------------------------------------------------------------------

    def refresh_tasks(self) -> None:
        codops = self.organisation.value
        if not codops:
            return
        found = self._call(lambda: self.client.tasks(codops))
        if found is None:
            return
        with self._lock:
            previous = self._tasks
            self._tasks = {t.task: t for t in found}
            self.task_rows = task_rows(found)
            headers = ("task", "state", "last status", "last start", "last duration")
            self.tasks_table.value = html_table(headers, self.task_rows, f"{codops} has no task")
            chosen = self.task.value
            choose(self.task, [t.task for t in found])
            if self.task.value != chosen:
                return  # another task is chosen: its runs were just read
            before, now = (
                previous.get(chosen) if chosen else None,
                self._tasks.get(chosen) if chosen else None,
            )
            if now is not None and (
                before is None or before.last_run_id != now.last_run_id or now.state == "RUNNING"
            ):
                self.refresh_runs()

    def refresh_runs(self) -> None:
        codops, name = self.organisation.value, self.task.value
        if not codops or not name:
            self._runs, self.run_rows = [], []
            self.runs_table.value = self.chart.value = ""
            choose(self.log_run, [ALL_RUNS])
            return
        runs = self._call(lambda: self.client.runs(codops, name, limit=self.runs_shown))
        points = self._call(lambda: self.client.durations(codops, name))
        with self._lock:
            if runs is not None:
                self._runs = runs
                self.run_rows = run_rows(runs)
                headers = ("run", "version", "start", "status", "duration")
                self.runs_table.value = html_table(headers, self.run_rows, f"{name} has not run yet")
                choose(self.log_run, [ALL_RUNS, *(r.id for r in runs)])
            if points is not None:
                self.chart.value = duration_chart(points)

    def _tail(self) -> None:
        """Append what the shown run added to its log since the last look, while it runs, and once more
        when it has ended (its last lines); then stop following it."""
        shown = self._shown
        if shown is None:
            return
        run = next((r for r in self._runs if r.id == shown[0]), None)
        if run is None:
            return
        chunk = self._call(lambda: self.client.log(shown[0], shown[1]))
        with self._lock:
            if self._shown != shown:
                return  # another run was chosen meanwhile
            if chunk is not None and chunk.data:
                self.logs.value += chunk.text
                self._shown = (shown[0], chunk.next)
            if run.finished and chunk is not None:
                self._shown = None

    def refresh(self) -> None:
        """One refresh: what the background thread does every ``refresh`` seconds."""
        with self._lock:
            self.refresh_tasks()
            self._tail()

    def _refreshing(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception as exc:  # the view must keep going; say what happened
                self.message.value = f"<b>refresh failed:</b> {html.escape(repr(exc))}"

    def close(self) -> None:
        """Stop refreshing, close the widgets and the client's connections."""
        self._stop.set()
        super().close()
        self.client.close()

    def _call(self, read: Any) -> Any:
        """``read()``, or None with the error shown in the view (the service may be down a moment)."""
        try:
            found = read()
        except PeachClientError as exc:
            self.message.value = f"<b>{html.escape(type(exc).__name__)}:</b> {html.escape(str(exc))}"
            return None
        self.message.value = ""
        return found


def show_tasks_info(url: str | None = None, token: str | None = None, **options: Any) -> TasksInfo:
    """Build the view on ``Client(url, token)``, display it (in IPython) and return it."""
    view = TasksInfo(Client(url, token), **options)
    try:
        from IPython.display import display
    except ImportError:  # not in IPython: the caller shows it
        return view
    display(view)  # type: ignore[no-untyped-call]
    return view
