"""Helpers of the deployment tests: the repository's deployment files, and the external tools (helm,
promtool, hadolint) that ``bin/setup`` installs, found in ``.venv/bin`` or on PATH."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "peach-scheduler"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "peach-scheduler.json"
RULES = ROOT / "deploy" / "prometheus" / "peach-scheduler-rules.yaml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "peach-scheduler-rules.test.yaml"
DASHBOARD_SCHEMA = ROOT / "tests" / "schemas" / "grafana-dashboard.schema.json"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
LOCK = ROOT / "deploy" / "requirements.lock"
KUBERNETES_VERSION = "1.33.0"


def tool(name: str) -> str:
    """Path of an external tool; fails (not skips) when missing: bin/setup installs every one."""
    venv_bin = Path(sys.executable).parent
    found = shutil.which(name, path=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, f"{name} is not installed: run bin/setup"
    return found


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def helm(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run(tool("helm"), *args)


def render_chart(
    values: dict[str, Any] | None = None,
    *,
    files: tuple[Path, ...] = (),
    name: str = "peach",
    namespace: str = "data",
    show_only: str | None = None,
) -> list[dict[str, Any]]:
    """``helm template`` of the chart with ``values`` (merged over ``files``); the rendered objects.

    Fails with helm's own message when rendering fails (use ``render_error`` to expect that)."""
    proc = _template(values, files, name, namespace, show_only)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def render_error(values: dict[str, Any]) -> str:
    """helm's error message for values that must not render."""
    proc = _template(values, (), "peach", "data", None)
    assert proc.returncode != 0, "the chart rendered values it should refuse"
    return proc.stderr


def _template(
    values: dict[str, Any] | None, files: tuple[Path, ...], name: str, namespace: str, show_only: str | None
) -> subprocess.CompletedProcess[str]:
    args: list[str | Path] = ["template", name, CHART, "--namespace", namespace]
    for path in files:
        args += ["--values", path]
    if show_only:
        args += ["--show-only", show_only]
    with tempfile.TemporaryDirectory(prefix="peach-helm-") as tmp:
        if values:
            extra = Path(tmp) / "values.yaml"
            extra.write_text(yaml.safe_dump(values), encoding="utf-8")
            args += ["--values", extra]
        return helm(*args)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]
