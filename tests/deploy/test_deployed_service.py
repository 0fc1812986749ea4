"""The chart's pod, minus Kubernetes: the real ``peach-scheduler`` process started with the container's
command, the ConfigMap's configuration file and the pod's environment (its volumes mapped to temporary
directories). Its probes answer on the chart's paths, its live ``/metrics`` exports every metric and label
the dashboard and the alert rules use, and SIGTERM stops it well within terminationGracePeriodSeconds."""

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_metric_references import all_problems
from tests.helpers.backends import free_port, wait_for
from tests.helpers.deploytools import one, render_chart
from tests.helpers.orgs import FAIL, QUICK, SLOW, org_repo
from tests.helpers.promql import EXPORTED, LABEL_VALUES, exposition_catalogue

TYPE_LINE = re.compile(r"^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$", re.MULTILINE)
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}


def families(text: str) -> set[str]:
    """Series names every ``# TYPE`` line announces (a family is announced even before its first sample)."""
    names = set()
    for name, kind in TYPE_LINE.findall(text):
        names.update(name + suffix for suffix in SUFFIXES.get(kind, ("",)))
    return names


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        error.close()
        return error.code, ""


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The rendered Deployment's container started as a local process; yields what the test needs."""
    repo = org_repo(
        tmp_path,
        "chrts",
        {
            "train": (QUICK, {}),
            "broken": (FAIL, {}),
            "slow": (SLOW, {"timeout": "1s", "args": {"seconds": 30}}),
            "fetch": (QUICK, {"loop": "metadata"}),
        },
    )
    values = {
        "config": {
            "loops": {"pause": "0.2s"},
            "spark": {"master": "local[*]", "deploy_mode": "client"},
            "organisations": {"chrts": {"repositories": [{"url": str(repo)}]}},
        },
        "gracefulStop": {"drainSeconds": 20, "marginSeconds": 10},
    }
    objects = render_chart(values)
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    mounts = {"/var/lib/peach": tmp_path / "workspace", "/tmp": tmp_path / "pod-tmp"}
    for directory in mounts.values():
        directory.mkdir()
    config = tmp_path / "etc-peach" / "config.yaml"
    config.parent.mkdir()
    text = one(objects, "ConfigMap")["data"]["config.yaml"]
    config.write_text(text.replace("/var/lib/peach", str(mounts["/var/lib/peach"])), encoding="utf-8")

    def local(value: str) -> str:
        for inside, outside in mounts.items():
            if value == inside or value.startswith(inside + "/"):
                return str(outside) + value[len(inside) :]
        return value

    port = free_port()
    environ = {e["name"]: local(e["value"]) for e in container["env"] if "value" in e}
    environ |= {"PATH": os.environ["PATH"], "PEACH_HTTP_HOST": "127.0.0.1", "PEACH_HTTP_PORT": str(port)}
    command, *args = container["args"]
    assert command == "peach-scheduler"
    args = [str(config) if a == "/etc/peach/config.yaml" else a for a in args]
    with (tmp_path / "service.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli.main", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environ,
            start_new_session=True,
        )
    try:
        yield {
            "process": process,
            "base": f"http://127.0.0.1:{port}",
            "container": container,
            "objects": objects,
        }
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_the_pod_serves_probes_and_every_metric_the_dashboards_and_alerts_use(pod: dict[str, Any]) -> None:
    base, container = pod["base"], pod["container"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        path = container[probe]["httpGet"]["path"]
        wait_for(lambda path=path: get(base + path)[0] == 200, 60, f"{probe} {path} to answer 200")

    def statuses() -> set[str]:
        catalogue, values = exposition_catalogue(get(base + "/metrics")[1])
        return (
            values.get("status", set()) if "peach_loop_pass_duration_seconds_bucket" in catalogue else set()
        )

    wait_for(lambda: {"SUCCEEDED", "FAILED", "TIMED_OUT"} <= statuses(), 90, "runs of every kind to finish")
    text = get(base + "/metrics")[1]
    announced = families(text)
    assert set(EXPORTED) <= announced, f"not exported: {sorted(set(EXPORTED) - announced)}"
    with_samples, _ = exposition_catalogue(text)
    for name in ("peach_runs_total", "peach_run_duration_seconds_bucket", "peach_repository_syncs_total"):
        assert with_samples[name] == EXPORTED[name], name
    # Labels as the live service shows them where it has samples; names from its # TYPE lines otherwise.
    catalogue = {
        name: with_samples.get(name, EXPORTED[name]) for name in announced if name.startswith("peach_")
    }
    assert all_problems(catalogue, LABEL_VALUES) == []

    grace = one(pod["objects"], "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    process = pod["process"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(grace) == 0
    assert yaml.safe_load(one(pod["objects"], "ConfigMap")["data"]["config.yaml"])["loops"]["drain"] == "20s"
