"""The executor registry: one factory per executor kind, built from the configuration and shared services."""

from pathlib import Path

import pytest
import yaml

from executors import registry
from executors.environments import EnvironmentStore
from executors.python import PythonExecutor
from executors.spark import SparkExecutor
from executors.yarn.client import ResourceManager
from scheduler.config import load_config
from scheduler.spec.taskspec import ExecutorKind


def services(tmp_path: Path, rm: ResourceManager | None = None) -> registry.Services:
    return registry.Services(EnvironmentStore(tmp_path / "envs"), tmp_path / "runs", tmp_path / "art", rm)


def test_every_kind_has_a_factory_and_gets_its_executor(tmp_path: Path) -> None:
    settings = {
        "workspace": str(tmp_path / "ws"),
        "spark": {"master": "yarn", "deploy_mode": "cluster"},
        "yarn": {
            "resourcemanagers": ["http://rm1:8088"],
            "poll": "7s",
            "log_wait": "3s",
            "lifetime_grace": "1m",
        },
    }
    (tmp_path / "peach.yaml").write_text(yaml.safe_dump(settings))
    config = load_config(tmp_path / "peach.yaml", environ={})
    rm = ResourceManager(["http://rm1:8088"])
    built = registry.build(config, services(tmp_path, rm))
    assert set(registry.FACTORIES) == set(ExecutorKind) == set(built)
    python, spark = built[ExecutorKind.PYTHON], built[ExecutorKind.SPARK]
    assert isinstance(python, PythonExecutor) and isinstance(spark, SparkExecutor)
    assert all(executor.kind is kind and executor.name == kind.value for kind, executor in built.items())
    assert python.runs_root == spark.runs_root == tmp_path / "runs"
    assert python.runs.artifacts_root == spark.runs.artifacts_root == tmp_path / "art"
    assert spark.resourcemanager is rm and spark.yarn and spark.settings.deploy_mode == "cluster"
    options = spark.yarn_options
    assert (options.poll, options.log_wait, options.lifetime_grace) == (7.0, 3.0, 60.0)


def test_a_kind_without_a_factory_or_a_factory_of_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    config = load_config(environ={})
    only_python = {ExecutorKind.PYTHON: registry.python_executor}
    with pytest.raises(LookupError, match="no executor factory for spark"):
        registry.build(config, services(tmp_path), only_python)
    crossed = {ExecutorKind.PYTHON: registry.spark_executor, ExecutorKind.SPARK: registry.spark_executor}
    with pytest.raises(TypeError, match="the python factory made a spark executor"):
        registry.build(config, services(tmp_path), crossed)
