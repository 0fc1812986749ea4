"""What teams commit: the typed, immutable form of one task in ``peach.yaml`` / ``peach.conf/*.yaml``."""

import json
import keyword
import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictBool, StrictStr, field_validator

from scheduler.durations import parse_duration

METADATA_LOOP = "metadata"
# Safe as a YARN queue name, a YARN tag (lowercase, no commas), a file name and a metric label value.
CODOPS_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,31}")
TASK_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,63}")
SPARK_KEY_PATTERN = re.compile(r"spark\.[A-Za-z0-9_.-]+")
RESERVED_CODOPS = frozenset({METADATA_LOOP})


class Executor(StrEnum):
    SPARK = "spark"
    PYTHON = "python"


Seconds = Annotated[float, BeforeValidator(parse_duration)]


def codops_problem(codops: object) -> str | None:
    """Why ``codops`` is not acceptable, or None."""
    if not isinstance(codops, str) or not CODOPS_PATTERN.fullmatch(codops):
        return (
            f"codops {codops!r} is not valid: lowercase letters, digits, '_' or '-', "
            "starting with a letter, at most 32 characters"
        )
    if codops in RESERVED_CODOPS:
        return f"codops {codops!r} is reserved for the shared metadata loop"
    return None


def task_name_problem(name: object) -> str | None:
    """Why ``name`` is not an acceptable task name, or None."""
    if not isinstance(name, str) or not TASK_PATTERN.fullmatch(name):
        return (
            f"task name {name!r} is not valid: lowercase letters, digits, '_' or '-', "
            "starting with a letter, at most 64 characters"
        )
    return None


class TaskDefinition(BaseModel):
    """One task's YAML keys. Unknown keys are rejected by name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    notebook: StrictStr
    method: StrictStr
    executor: Executor = Executor.SPARK
    loop: StrictStr | None = None
    full_notebook: StrictBool = False
    dependencies: tuple[StrictStr, ...] = ()
    timeout: Seconds | None = None
    args: dict[StrictStr, Any] = {}
    enabled: StrictBool = True
    every: Seconds | None = None
    spark: dict[StrictStr, StrictStr | StrictBool | int | float] = {}

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
