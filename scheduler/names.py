"""What a codops and a task may be called: safe as a YARN queue name, a YARN tag (lowercase, no commas), a
file name and a metric label value. Shared by the operator configuration and the task definitions."""

import re

METADATA_LOOP = "metadata"
CODOPS_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,31}")
TASK_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,63}")
RESERVED_CODOPS = frozenset({METADATA_LOOP})


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
