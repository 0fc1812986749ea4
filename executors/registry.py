"""Executors by kind: the one table the service builds its executors from.

Each ``ExecutorKind`` (``scheduler.spec.taskspec``) has a factory here that takes the operator
configuration and the services executors share (``Services``: the environment store, the YARN
ResourceManager when one is configured, where run directories and artifacts go) and returns the executor
of that kind. The service builds every executor with ``build`` and never names a kind itself; restart
recovery asks each built executor about the runs of its kind. Adding an executor is its module, an enum
value, a configuration section and one entry in ``FACTORIES`` (README, "Adding an executor").
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from executors.base import Executor
from executors.cgroups import MemoryCgroups
from executors.environments import EnvironmentStore
from executors.python import PythonExecutor
from executors.spark import SparkExecutor
from executors.yarn.client import ResourceManager
from executors.yarn.kerberos import TicketCache
from scheduler.config import Config
from scheduler.spec.taskspec import ExecutorKind


@dataclass(frozen=True)
class Services:
    """What executors share, built once by the service."""

    environments: EnvironmentStore
    runs_root: Path
    artifacts_root: Path | None = None
    resourcemanager: ResourceManager | None = None
    log_server: str | None = None  # the operator's yarn.log_server, else the cluster's yarn-site.xml
    cgroups: MemoryCgroups | None = None  # memory caps for local runs, where the host allows them
    tickets: TicketCache | None = None  # the scheduler's own Kerberos ticket cache, when configured


Factory = Callable[[Config, Services], Executor]


def python_executor(config: Config, services: Services) -> Executor:
    return PythonExecutor(
        services.environments,
        services.runs_root,
        artifacts_root=services.artifacts_root,
        cgroups=services.cgroups,
        organisations=config.organisations,
    )


def spark_executor(config: Config, services: Services) -> Executor:
    yarn = config.yarn
    return SparkExecutor(
        services.environments,
        services.runs_root,
        config.spark,
        config.organisations,
        resourcemanager=services.resourcemanager,
        tickets=services.tickets,
        log_server=services.log_server,
        lifetime_grace=yarn.lifetime_grace,
        poll=yarn.poll,
        log_wait=yarn.log_wait,
        artifacts_root=services.artifacts_root,
        cgroups=services.cgroups,
    )


FACTORIES: Mapping[ExecutorKind, Factory] = {
    ExecutorKind.PYTHON: python_executor,
    ExecutorKind.SPARK: spark_executor,
}


def build(
    config: Config, services: Services, factories: Mapping[ExecutorKind, Factory] = FACTORIES
) -> dict[ExecutorKind, Executor]:
    """One executor per kind; a kind without a factory is a programming error, said by name."""
    missing = [kind.value for kind in ExecutorKind if kind not in factories]
    if missing:
        raise LookupError(f"no executor factory for {', '.join(missing)} (executors.registry.FACTORIES)")
    executors = {kind: factory(config, services) for kind, factory in factories.items()}
    for kind, executor in executors.items():
        if executor.kind is not kind:
            raise TypeError(f"the {kind.value} factory made a {executor.kind.value} executor")
    return executors
