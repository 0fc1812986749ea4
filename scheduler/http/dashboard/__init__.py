"""The dashboard served at ``/``: static files (``index.html``, ``app.js``, ``app.css``) written here, no
framework and no CDN, plus the compact durations series its chart reads.

The page reads only the JSON API; everything a run printed is shown with ``textContent``, never as HTML.
"""

from collections.abc import Sequence
from datetime import datetime
from importlib.resources import files
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from scheduler.store.records import iso

if TYPE_CHECKING:
    from scheduler.config import Config

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
MAX_POINTS = 600


def asset(name: str) -> bytes:
    return files(__package__).joinpath(name).read_bytes()


def durations_series(
    runs: Sequence[tuple[str, datetime, float | None, str]], max_points: int = MAX_POINTS
) -> dict[str, Any]:
    """The chart's points, oldest first: every run when there are at most ``max_points``, otherwise the
    slowest run of each of ``max_points // 2`` equal slices plus the first non-success of the slice, so
    failures and spikes stay visible while the page stays light."""
    chosen = list(runs)
    if len(runs) > max_points:
        slices = max(1, max_points // 2)
        chosen = []
        for number in range(slices):
            part = runs[number * len(runs) // slices : (number + 1) * len(runs) // slices]
            if not part:
                continue
            slowest = max(part, key=lambda run: run[2] or 0.0)
            odd = next((run for run in part if run[3] != "SUCCEEDED" and run is not slowest), None)
            chosen.extend(sorted([slowest, *([odd] if odd else [])], key=lambda run: (run[1], run[0])))
    return {
        "total": len(runs),
        "points": [
            {"id": run_id, "started_at": iso(started), "duration_seconds": duration, "status": status}
            for run_id, started, duration, status in chosen
        ],
    }


def repository_links(config: "Config") -> dict[str, str]:
    """Each organisation's first http(s) repository, without credentials or ``.git``: the base of the
    dashboard's ``/commit/<sha>`` links (GitHub, GitLab and Gitea all answer there)."""
    links = {}
    for codops, organisation in config.organisations.items():
        for repository in organisation.repositories:
            parts = urlsplit(repository.url)
            if parts.scheme in ("http", "https") and parts.hostname:
                host = parts.hostname + (f":{parts.port}" if parts.port else "")
                path = parts.path.rstrip("/").removesuffix(".git")
                links[codops] = urlunsplit((parts.scheme, host, path, "", ""))
                break
    return links


def yarn_ui(config: "Config") -> str | None:
    """The ResourceManager UI that application ids link to (``<rm>/cluster/app/<id>``), when configured."""
    return config.yarn.resourcemanagers[0] if config.yarn.resourcemanagers else None
