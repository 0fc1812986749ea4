"""Per-organisation YARN queues and resource profiles: checked against a live ResourceManager, rendered as
Capacity Scheduler properties.

A profile needs, on YARN, one driver (the AM container in cluster mode) and ``executors`` executors, each
container with Spark's default memory overhead (10 %, at least 384 MiB), rounded up by the scheduler to a
multiple of its minimum allocation (``yarn.scheduler.minimum-allocation-mb``, Hadoop's default 1024: a
1408 MiB driver takes 2048). ``check`` compares that with the queue's maximum effective capacity
(``maxEffectiveCapacity`` in ``/ws/v1/cluster/scheduler``, Hadoop 3.1+), and the driver with the queue's
application-master limit (``AMResourceLimit``, from ``maximum-am-resource-percent``): an AM over it never
starts, and the run waits in ACCEPTED until its timeout.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from executors.yarn.client import ResourceManager
from executors.yarn.site import ClusterSite
from scheduler.config import Config, Resources
from scheduler.errors import ResourceManagerError

OVERHEAD_MIN_MB, OVERHEAD_FACTOR = 384, 0.10
UNITS = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def memory_mb(size: str) -> int:
    """A Spark memory size (``512m``, ``4g``) in MiB; a bare number is bytes, as in Spark."""
    unit = size[-1].lower()
    if unit in UNITS:
        return int(float(size[:-1]) * UNITS[unit])
    return int(size) // (1024 * 1024)


DEFAULT_MINIMUM_MB = 1024  # yarn.scheduler.minimum-allocation-mb when the cluster does not say


def container_mb(size: str, minimum_mb: int = 1) -> int:
    """What one container of ``size`` (plus Spark's overhead) is allocated: a multiple of ``minimum_mb``."""
    mb = memory_mb(size)
    asked = mb + max(OVERHEAD_MIN_MB, int(mb * OVERHEAD_FACTOR))
    return -(-asked // minimum_mb) * minimum_mb


def minimum_allocation(rm: ResourceManager, site: ClusterSite) -> int:
    """The scheduler's minimum allocation: the RM's own effective configuration, else the cluster's
    yarn-site.xml, else Hadoop's default (``ClusterSite.minimum_allocation_mb``)."""
    try:
        value = rm.configuration().get("yarn.scheduler.minimum-allocation-mb")
    except ResourceManagerError:
        value = None
    if value and value.isdigit() and int(value) > 0:
        return int(value)
    return site.minimum_allocation_mb()


def needs(resources: Resources, minimum_mb: int = DEFAULT_MINIMUM_MB) -> tuple[int, int]:
    """(MiB, vcores) one run of the profile is allocated on YARN."""
    driver = container_mb(resources.driver_memory, minimum_mb)
    memory = driver + resources.executors * container_mb(resources.executor_memory, minimum_mb)
    return memory, 1 + resources.executors * resources.executor_cores


def queue_path(queue: str) -> str:
    return queue if queue == "root" or queue.startswith("root.") else f"root.{queue}"


def _walk(queue: dict[str, Any], parent: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for child in ((queue.get("queues") or {}).get("queue")) or []:
        path = str(child.get("queuePath") or f"{parent}.{child.get('queueName')}")
        yield path, child
        yield from _walk(child, path)


@dataclass(frozen=True)
class QueueCheck:
    codops: str
    queue: str
    ok: bool
    message: str


def check(
    config: Config, scheduler: dict[str, Any], minimum_mb: int = DEFAULT_MINIMUM_MB
) -> list[QueueCheck]:
    """Each organisation's queue against the live scheduler: missing, stopped, too small for one run, or
    with an application-master limit below the driver's container."""
    queues = dict(_walk(scheduler, "root"))
    results = []
    for codops, organisation in sorted(config.organisations.items()):
        path = queue_path(organisation.queue)
        memory, vcores = needs(organisation.resources, minimum_mb)
        driver = container_mb(organisation.resources.driver_memory, minimum_mb)
        wanted = f"needs {memory} MiB and {vcores} vcores per run, containers rounded up to {minimum_mb} MiB"
        queue = queues.get(path)
        if queue is None:
            results.append(QueueCheck(codops, path, False, f"queue {path} does not exist ({wanted})"))
            continue
        state = str(queue.get("state") or "RUNNING")
        if state != "RUNNING":
            results.append(
                QueueCheck(codops, path, False, f"queue {path} is {state}: submissions are refused")
            )
            continue
        limit = queue.get("maxEffectiveCapacity") or {}
        have_mb, have_cores = limit.get("memory"), limit.get("vCores")
        if have_mb is not None and have_cores is not None and (have_mb < memory or have_cores < vcores):
            message = (
                f"queue {path} is too small: {wanted}, it holds at most {have_mb} MiB, {have_cores} vcores"
            )
            results.append(QueueCheck(codops, path, False, message))
            continue
        am_limit = (queue.get("AMResourceLimit") or {}).get("memory")
        if am_limit is not None and am_limit < driver:
            message = (
                f"queue {path}'s application-master limit is {am_limit} MiB "
                f"(maximum-am-resource-percent), below the driver's {driver} MiB container: "
                "runs would wait in ACCEPTED"
            )
            results.append(QueueCheck(codops, path, False, message))
            continue
        results.append(QueueCheck(codops, path, True, f"queue {path} is RUNNING ({wanted})"))
    return results


def render(config: Config) -> str:
    """Capacity Scheduler properties (capacity-scheduler.xml) for the configured organisations' queues.

    Capacities are an equal split to start from; ``maximum-application-lifetime`` (seconds) is the loop
    timeout plus the YARN grace: the cluster-side backstop of the 1 h limit, even if the scheduler is down.
    """
    paths = sorted({queue_path(org.queue) for org in config.organisations.values()})
    lifetime = int(config.loops.timeout + config.yarn.lifetime_grace)
    children: dict[str, list[str]] = {}
    for path in paths:
        parent, _, name = path.rpartition(".")
        children.setdefault(parent, []).append(name)
    properties: list[tuple[str, str, str]] = []
    for parent, names in sorted(children.items()):
        properties.append(
            (f"yarn.scheduler.capacity.{parent}.queues", ",".join(names), "add to the existing")
        )
    share = f"{100 / len(paths):.2f}".rstrip("0").rstrip(".") if paths else "0"
    for path in paths:
        users = sorted(c for c, o in config.organisations.items() if queue_path(o.queue) == path)
        memory, vcores = needs(config.organisations[users[0]].resources)
        note = f"{', '.join(users)}: a run needs {memory} MiB, {vcores} vcores"
        prefix = f"yarn.scheduler.capacity.{path}"
        properties += [
            (f"{prefix}.capacity", share, note),
            (f"{prefix}.state", "RUNNING", ""),
            (f"{prefix}.maximum-application-lifetime", str(lifetime), "seconds: loop timeout + grace"),
            (f"{prefix}.default-application-lifetime", str(lifetime), ""),
        ]
    lines = ["<configuration>"]
    for name, value, description in properties:
        lines.append("  <property>")
        lines.append(f"    <name>{escape(name)}</name>")
        lines.append(f"    <value>{escape(value)}</value>")
        if description:
            lines.append(f"    <description>{escape(description)}</description>")
        lines.append("  </property>")
    lines.append("</configuration>")
    return "\n".join(lines) + "\n"
