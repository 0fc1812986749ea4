"""What teams commit: the typed, immutable form of one task in ``peach.yaml`` / ``peach.conf/*.yaml``."""

import json
import keyword
import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, field_validator

from scheduler.durations import Seconds
from scheduler.spec.notifyspec import NotifySpec

SPARK_KEY_PATTERN = re.compile(r"spark\.[A-Za-z0-9_.-]+")


class ExecutorKind(StrEnum):
    SPARK = "spark"
    PYTHON = "python"


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


TASK_KEYS = tuple(TaskDefinition.model_fields)
FILE_KEYS = ("codops", "dependencies", "tasks")
