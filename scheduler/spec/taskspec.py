"""What teams commit: the typed, immutable form of one task in ``peach.yaml`` / ``peach.conf/*.yaml``."""

import json
import keyword
import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr, field_validator

from scheduler.capacity import memory_mib
from scheduler.durations import Seconds
from scheduler.spec.notifyspec import NotifySpec

SPARK_KEY_PATTERN = re.compile(r"spark\.[A-Za-z0-9_.-]+")
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ExecutorKind(StrEnum):
    SPARK = "spark"
    PYTHON = "python"


class TaskResources(BaseModel):
    """What a local run of the task needs on the scheduler host: ``memory`` (``4g``, ``512m``; a bare
    number is MiB) is both its share of ``capacity.memory`` and its cap where cgroups allow one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory: StrictStr | StrictInt | None = None

    @field_validator("memory")
    @classmethod
    def _memory_size(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            memory_mib(value)
        return value

    @property
    def memory_mib(self) -> int | None:
        return None if self.memory is None else memory_mib(self.memory)


class TaskDefinition(BaseModel):
    """One task's YAML keys. Unknown keys are rejected by name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    notebook: StrictStr
    method: StrictStr
    executor: ExecutorKind = ExecutorKind.SPARK
    loop: StrictStr | None = None
    full_notebook: StrictBool = False
    dependencies: tuple[StrictStr, ...] = ()
    timeout: Seconds | None = None
    args: dict[StrictStr, Any] = {}
    enabled: StrictBool = True
    every: Seconds | None = None
    spark: dict[StrictStr, StrictStr | StrictBool | int | float] = {}
    resources: TaskResources = TaskResources()
    # the organisation's secrets this task receives; None: all of them
    secrets: tuple[StrictStr, ...] | None = None
    notify: NotifySpec | None = None  # who is told of a first failure and of the recovery

    @field_validator("method")
    @classmethod
    def _method_is_identifier(cls, value: str) -> str:
        if not value.isidentifier() or keyword.iskeyword(value):
            raise ValueError(f"{value!r} is not a Python function name")
        return value

    @field_validator("args")
    @classmethod
    def _args_are_keywords_and_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if not key.isidentifier() or keyword.iskeyword(key):
                raise ValueError(f"{key!r} cannot be a keyword argument name")
            try:
                json.dumps(item, allow_nan=False)
            except (TypeError, ValueError):
                raise ValueError(
                    f"value of {key!r} ({type(item).__name__}) is not plain JSON data; quote it"
                ) from None
        return value

    @field_validator("spark")
    @classmethod
    def _spark_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not SPARK_KEY_PATTERN.fullmatch(key):
                raise ValueError(f"{key!r} is not a Spark setting (expected spark.*)")
        return value

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for name in value or ():
            if not ENV_NAME_PATTERN.fullmatch(name):
                raise ValueError(f"{name!r} is not a secret name (an environment variable name)")
        return value


TASK_KEYS = tuple(TaskDefinition.model_fields)
FILE_KEYS = ("codops", "dependencies", "tasks")
