"""``peach-scheduler queues check|render`` against the fake ResourceManager's capacity scheduler."""

import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from queues.profiles import needs
from scheduler.config import Resources
from tests.helpers.fake_rm import FakeResourceManager


@pytest.fixture
def rm() -> Iterator[FakeResourceManager]:
    fake = FakeResourceManager()
    yield fake
    fake.close()


def queue(name: str, state: str = "RUNNING", memory: int = 65536, cores: int = 32) -> dict[str, object]:
    return {
        "queueName": name,
        "queuePath": f"root.{name}",
        "state": state,
        "capacity": 25.0,
        "maxEffectiveCapacity": {"memory": memory, "vCores": cores},
    }


def config(tmp_path: Path, rm_url: str) -> Path:
    path = tmp_path / "peach.yaml"
    path.write_text(
        f"workspace: {tmp_path}\n"
        f"yarn:\n  resourcemanagers: [{rm_url}]\n  retries: 1\n  timeout: 2s\n"
        "organisations:\n"
        "  chrts: {resources: {executors: 4, executor_memory: 4g, executor_cores: 2, driver_memory: 2g}}\n"
        "  zzebra: {}\n"
        "  rts: {queue: root.rts}\n"
        "  srgssr: {}\n"
    )
    return path


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "scheduler.cli.main", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_profile_needs_include_spark_memory_overhead_rounded_to_the_minimum_allocation() -> None:
    profile = Resources(executors=4, executor_cores=2, executor_memory="4g", driver_memory="2g")
    # driver 2g + 384 overhead, 4 executors of 4g + 409 overhead; 1 + 4 * 2 vcores
    assert needs(profile, minimum_mb=1) == (2048 + 384 + 4 * (4096 + 409), 9)
    assert needs(profile) == (3072 + 4 * 5120, 9)  # each container rounded up to Hadoop's 1024 MiB
    assert needs(Resources()) == (8192, 3)  # the default profile: 1408 -> 2048, 2 x 2432 -> 3072
    assert needs(Resources(), minimum_mb=256) == (1536 + 2 * 2560, 3)


def test_check_reports_missing_stopped_and_too_small_queues(tmp_path: Path, rm: FakeResourceManager) -> None:
    rm.queues = [
        queue("chrts", memory=8192),
        queue("rts", state="STOPPED"),
        queue("srgssr"),
        queue("default"),
    ]
    proc = cli("queues", "check", "--config", config(tmp_path, rm.url))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("chrts: PROBLEM: queue root.chrts is too small: needs 23552 MiB and 9 vcores")
    assert lines[1] == "rts: PROBLEM: queue root.rts is STOPPED: submissions are refused"
    assert lines[2].startswith("srgssr: ok: queue root.srgssr is RUNNING")
    assert lines[3].startswith("zzebra: PROBLEM: queue root.zzebra does not exist")
    rm.queues = [queue(name) for name in ("chrts", "rts", "srgssr", "zzebra")]
    assert cli("queues", "check", "--config", config(tmp_path, rm.url)).returncode == 0
    rm.standby = True  # no active ResourceManager
    failed = cli("queues", "check", "--config", config(tmp_path, rm.url))
    assert failed.returncode == 1 and "no ResourceManager answered" in failed.stderr


def test_check_rounds_to_the_resourcemanagers_minimum_and_counts_the_am_limit(
    tmp_path: Path, rm: FakeResourceManager
) -> None:
    rm.configuration["yarn.scheduler.minimum-allocation-mb"] = "2048"  # the RM's own, not yarn-site's
    rm.queues = [queue(name) for name in ("chrts", "rts", "srgssr", "zzebra")]
    rm.queues[0]["maxEffectiveCapacity"] = {"memory": 24576, "vCores": 32}  # 23552 at 1024, 28672 at 2048
    rm.queues[2]["AMResourceLimit"] = {"memory": 1024, "vCores": 1}  # below the 2048 MiB driver
    proc = cli("queues", "check", "--config", config(tmp_path, rm.url))
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1
    assert lines[0].startswith("chrts: PROBLEM: queue root.chrts is too small: needs 28672 MiB"), lines[0]
    assert "containers rounded up to 2048 MiB" in lines[0]
    assert lines[2] == (
        "srgssr: PROBLEM: queue root.srgssr's application-master limit is 1024 MiB "
        "(maximum-am-resource-percent), below the driver's 2048 MiB container: runs would wait in ACCEPTED"
    )
    assert lines[1].startswith("rts: ok") and lines[3].startswith("zzebra: ok")


def test_render_prints_capacity_scheduler_properties_with_lifetimes(tmp_path: Path) -> None:
    proc = cli("queues", "render", "--config", config(tmp_path, "http://rm:8088"))
    assert proc.returncode == 0, proc.stderr
    properties = {
        p.findtext("name"): p.findtext("value")
        for p in ET.fromstring(proc.stdout).iter("property")  # noqa: S314 (our own output)
    }
    assert properties["yarn.scheduler.capacity.root.queues"] == "chrts,rts,srgssr,zzebra"
    assert properties["yarn.scheduler.capacity.root.chrts.capacity"] == "25"
    assert properties["yarn.scheduler.capacity.root.rts.state"] == "RUNNING"
    assert (
        properties["yarn.scheduler.capacity.root.zzebra.maximum-application-lifetime"] == "4200"
    )  # 1 h + 600 s
