"""A real single-node Hadoop YARN for the ``-m yarn`` suite, from the binary tree named by PEACH_HADOOP_HOME.

``yarn_cluster`` (session fixture, in tests/conftest.py) writes its own configuration into a temporary
directory (nothing is copied from the distribution): a ResourceManager, a NodeManager and the v1 timeline
server (which serves aggregated container logs on Hadoop 3.1) on 127.0.0.1, Capacity Scheduler queues
``default``, ``alpha`` and ``beta``, log aggregation to a local directory, RM recovery off (a restarted RM
forgets its applications). It starts the daemons, waits for a RUNNING node and the timeline server, and
stops them after the session, killing whatever container process is left. Without PEACH_HADOOP_HOME the
tests that use it are skipped, saying so. Settings that make Hadoop 3.1.1 run on Java 17 as root:
shared/yarn-dev.md.
"""

import getpass
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
import yaml

from executors.spark import spark_home
from tests.helpers.orgs import commit, git, tasks_files

QUEUES = ("default", "alpha", "beta")
RM, NM, TIMELINE = "http://127.0.0.1:8088", "http://127.0.0.1:8042", "http://127.0.0.1:8188"
OPENS = (
    "java.lang",
    "java.util",
    "java.lang.reflect",
    "java.io",
    "java.net",
    "java.nio",
    "sun.nio.ch",
    "java.util.concurrent",
    "java.util.concurrent.atomic",
    "sun.security.action",
    "java.security",
)
DAEMONS = ("resourcemanager", "nodemanager", "timelineserver")


@dataclass(frozen=True)
class YarnCluster:
    home: Path
    root: Path  # the temporary directory: conf/, logs/, app-logs/, ...
    rm: str = RM
    nm: str = NM
    timeline: str = TIMELINE
    queues: tuple[str, ...] = QUEUES
    env: dict[str, str] = field(default_factory=dict)  # HADOOP_CONF_DIR and friends, for clients

    @property
    def conf_dir(self) -> Path:
        return self.root / "conf"

    @property
    def yarn_site(self) -> Path:
        return self.conf_dir / "yarn-site.xml"


def hadoop_home() -> Path:
    """The Hadoop binary tree, or the test is skipped with the reason."""
    home = os.environ.get("PEACH_HADOOP_HOME")
    if not home:
        pytest.skip("PEACH_HADOOP_HOME is not set: the real-YARN suite needs a Hadoop 3.x binary tree")
    path = Path(home)
    if not (path / "bin" / "yarn").is_file():
        pytest.skip(f"PEACH_HADOOP_HOME={home} has no bin/yarn")
    if shutil.which("java") is None:
        pytest.skip("no java on PATH for Hadoop")
    return path


def _site(properties: dict[str, object]) -> str:
    rows = "".join(
        f"  <property><name>{escape(k)}</name><value>{escape(str(v))}</value></property>\n"
        for k, v in properties.items()
    )
    return f'<?xml version="1.0"?>\n<configuration>\n{rows}</configuration>\n'


def yarn_site(root: Path, **overrides: object) -> dict[str, object]:
    """The single-node cluster's yarn-site.xml properties (``overrides`` replace or add keys; None drops)."""
    properties: dict[str, object] = {
        "yarn.resourcemanager.hostname": "127.0.0.1",
        "yarn.resourcemanager.bind-host": "127.0.0.1",
        "yarn.resourcemanager.webapp.address": "127.0.0.1:8088",
        "yarn.resourcemanager.recovery.enabled": "false",
        "yarn.resourcemanager.scheduler.class": (
            "org.apache.hadoop.yarn.server.resourcemanager.scheduler.capacity.CapacityScheduler"
        ),
        "yarn.scheduler.minimum-allocation-mb": 256,
        "yarn.scheduler.maximum-allocation-mb": 4096,
        "yarn.scheduler.minimum-allocation-vcores": 1,
        "yarn.scheduler.maximum-allocation-vcores": 8,
        "yarn.nodemanager.hostname": "127.0.0.1",
        "yarn.nodemanager.bind-host": "127.0.0.1",
        "yarn.nodemanager.address": "127.0.0.1:45454",
        "yarn.nodemanager.webapp.address": "127.0.0.1:8042",
        "yarn.nodemanager.localizer.address": "127.0.0.1:8040",
        "yarn.nodemanager.resource.memory-mb": 8192,
        "yarn.nodemanager.resource.cpu-vcores": 8,
        "yarn.nodemanager.vmem-check-enabled": "false",
        "yarn.nodemanager.pmem-check-enabled": "false",
        "yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage": 99.5,
        "yarn.nodemanager.local-dirs": root / "nm-local",
        "yarn.nodemanager.log-dirs": root / "nm-logs",
        "yarn.log-aggregation-enable": "true",
        "yarn.nodemanager.remote-app-log-dir": f"file://{root / 'app-logs'}",
        "yarn.log.server.url": f"{TIMELINE}/applicationhistory/logs",
        "yarn.log.server.web-service.url": f"{TIMELINE}/ws/v1/applicationhistory",
        "yarn.timeline-service.enabled": "true",
        "yarn.timeline-service.version": "1.0",
        "yarn.timeline-service.hostname": "127.0.0.1",
        "yarn.timeline-service.bind-host": "127.0.0.1",
        "yarn.timeline-service.address": "127.0.0.1:10200",
        "yarn.timeline-service.webapp.address": "127.0.0.1:8188",
        "yarn.timeline-service.store-class": "org.apache.hadoop.yarn.server.timeline.LeveldbTimelineStore",
        "yarn.timeline-service.leveldb-timeline-store.path": root / "timeline",
        "yarn.timeline-service.leveldb-state-store.path": root / "timeline",
        "yarn.timeline-service.generic-application-history.enabled": "true",
        "yarn.timeline-service.generic-application-history.store-class": (
            "org.apache.hadoop.yarn.server.applicationhistoryservice.NullApplicationHistoryStore"
        ),
        "yarn.system-metrics-publisher.enabled": "true",
    }
    properties.update(overrides)
    return {k: v for k, v in properties.items() if v is not None}


def capacity_scheduler(queues: tuple[str, ...] = QUEUES) -> dict[str, object]:
    share = 100 // len(queues)
    properties: dict[str, object] = {
        "yarn.scheduler.capacity.maximum-applications": 10000,
        "yarn.scheduler.capacity.maximum-am-resource-percent": 0.5,
        "yarn.scheduler.capacity.resource-calculator": (
            "org.apache.hadoop.yarn.util.resource.DefaultResourceCalculator"
        ),
        "yarn.scheduler.capacity.root.queues": ",".join(queues),
    }
    for queue in queues:
        base = f"yarn.scheduler.capacity.root.{queue}"
        first = queue == queues[0]
        properties |= {
            f"{base}.capacity": 100 - share * (len(queues) - 1) if first else share,
            f"{base}.maximum-capacity": 100,
            f"{base}.user-limit-factor": 4,
            f"{base}.maximum-am-resource-percent": 0.8,
            f"{base}.state": "RUNNING",
            f"{base}.acl_submit_applications": "*",
            f"{base}.acl_administer_queue": "*",
        }
    return properties


def environment(home: Path, root: Path) -> dict[str, str]:
    java = Path(os.path.realpath(shutil.which("java") or "java"))
    return {
        "JAVA_HOME": str(java.parent.parent),
        "HADOOP_HOME": str(home),
        "HADOOP_CONF_DIR": str(root / "conf"),
        "YARN_CONF_DIR": str(root / "conf"),
        "HADOOP_LOG_DIR": str(root / "logs"),
        "HADOOP_PID_DIR": str(root / "pids"),
        "HADOOP_OPTS": " ".join(f"--add-opens=java.base/{p}=ALL-UNNAMED" for p in OPENS)
        + " -Djava.net.preferIPv4Stack=true",
        **{f"YARN_{daemon.upper()}_USER": "root" for daemon in DAEMONS},
        **{f"YARN_{daemon.upper()}_HEAPSIZE": "512" for daemon in DAEMONS},
    }


def write_configuration(root: Path, **site: object) -> None:
    conf = root / "conf"
    for name in ("conf", "logs", "pids", "hadoop-tmp", "nm-local", "nm-logs", "app-logs", "timeline"):
        (root / name).mkdir(parents=True, exist_ok=True)
    core: dict[str, object] = {"fs.defaultFS": "file:///", "hadoop.tmp.dir": root / "hadoop-tmp"}
    # the scheduler's user may impersonate organisations' users (spark-submit --proxy-user)
    me = getpass.getuser()
    core.update({f"hadoop.proxyuser.{me}.hosts": "*", f"hadoop.proxyuser.{me}.groups": "*"})
    (conf / "core-site.xml").write_text(_site(core))
    (conf / "yarn-site.xml").write_text(_site(yarn_site(root, **site)))
    (conf / "capacity-scheduler.xml").write_text(_site(capacity_scheduler()))
    (conf / "log4j.properties").write_text(
        "log4j.rootLogger=INFO,RFA\nhadoop.log.dir=.\nhadoop.log.file=hadoop.log\n"
        "log4j.appender.RFA=org.apache.log4j.RollingFileAppender\n"
        "log4j.appender.RFA.File=${hadoop.log.dir}/${hadoop.log.file}\n"
        "log4j.appender.RFA.MaxFileSize=64MB\nlog4j.appender.RFA.MaxBackupIndex=2\n"
        "log4j.appender.RFA.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.RFA.layout.ConversionPattern=%d{ISO8601} %p %c: %m%n\n"
        "log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR\n"
    )


def _answers(url: str, needle: str = "") -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
            return response.status == 200 and needle in response.read().decode()
    except OSError:
        return False


def _daemon(cluster: YarnCluster, action: str, daemon: str) -> None:
    subprocess.run(
        [str(cluster.home / "bin" / "yarn"), "--daemon", action, daemon],
        env={**os.environ, **cluster.env},
        check=action == "start",
        capture_output=True,
        timeout=120,
    )


@contextmanager
def running_cluster(home: Path, root: Path, timeout: float = 180.0) -> Iterator[YarnCluster]:
    """Start the daemons, wait until they serve, yield; always stop them and their containers."""
    write_configuration(root)
    cluster = YarnCluster(home, root, env=environment(home, root))
    try:
        for daemon in DAEMONS:
            _daemon(cluster, "start", daemon)
        deadline = time.monotonic() + timeout
        while not (
            _answers(f"{RM}/ws/v1/cluster/nodes", '"state":"RUNNING"')
            and _answers(f"{TIMELINE}/ws/v1/applicationhistory/about")
        ):
            if time.monotonic() > deadline:
                logs = "\n".join(p.read_text()[-2000:] for p in sorted((root / "logs").glob("*.log")))
                raise TimeoutError(f"YARN did not come up within {timeout:.0f} s:\n{logs}")
            time.sleep(0.5)  # polling daemons that take ~10-30 s to start
        yield cluster
    finally:
        stop_cluster(cluster)


def stop_cluster(cluster: YarnCluster, timeout: float = 60.0) -> None:
    for daemon in reversed(DAEMONS):
        _daemon(cluster, "stop", daemon)
    deadline = time.monotonic() + timeout
    for pidfile in (cluster.root / "pids").glob("*.pid"):
        pid = int(pidfile.read_text().strip() or 0)
        while pid and _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.2)
    for pid in container_processes(cluster):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def container_processes(cluster: YarnCluster) -> list[int]:
    """Processes whose command line names the NodeManager's directories (containers left behind)."""
    marker = str(cluster.root / "nm-local").encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


# -- the scheduler's side: an organisation whose spark tasks run on the cluster ----------------------


def spark_task(tasks: dict[str, tuple[str, dict[str, object]]]) -> dict[str, str]:
    files = tasks_files("alpha", tasks)
    data = yaml.safe_load(files["peach.yaml"])
    for definition in data["tasks"].values():
        definition["executor"] = "spark"
    files["peach.yaml"] = yaml.safe_dump(data)
    return files


def spark_repo(root: Path, tasks: dict[str, tuple[str, dict[str, object]]]) -> Path:
    repo = root / "alpha-repo"
    repo.mkdir()
    git(repo, "init", "-q")
    commit(repo, spark_task(tasks), "tasks")
    return repo


def peach_config(root: Path, cluster: YarnCluster, repo: Path, **yarn: object) -> Path:
    home = spark_home()
    assert home is not None, "pyspark is a dependency of the scheduler"
    config = {
        "workspace": str(root / "workspace"),
        "http": {"host": "127.0.0.1", "port": 0, "api_token_env": "PEACH_TEST_TOKEN"},
        "loops": {"pause": "0.5s"},
        "spark": {
            "master": "yarn",
            "deploy_mode": "cluster",
            "python": os.path.realpath("/usr/bin/python3"),
            "conf": {
                "spark.yarn.jars": f"local:{home}/jars/*",
                "spark.yarn.appMasterEnv.SPARK_LOCAL_IP": "127.0.0.1",
                "spark.executorEnv.SPARK_LOCAL_IP": "127.0.0.1",
                "spark.yarn.stagingDir": f"file://{root / 'staging'}",
            },
        },
        "yarn": {"resourcemanagers": [cluster.rm], "poll": "1s", **yarn},
        "organisations": {
            "alpha": {
                "repositories": [{"url": str(repo)}],
                "queue": "alpha",
                "resources": {
                    "executors": 1,
                    "executor_cores": 1,
                    "executor_memory": "512m",
                    "driver_memory": "512m",
                },
            }
        },
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
