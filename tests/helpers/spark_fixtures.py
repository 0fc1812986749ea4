"""Helpers for the spark executor tests: spark tasks from a notebook in a real repository."""

import json
from pathlib import Path

import yaml

from scheduler.spec.definitions import Task, load_definitions

# Fast, loopback-only Spark for tests (a JVM start is the cost of every run).
TEST_CONF = {
    "spark.ui.enabled": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.sql.shuffle.partitions": "2",
}


def make_spark_task(
    root: Path,
    code: str,
    *,
    method: str = "main",
    codops: str = "default",
    name: str = "job",
    args: dict[str, object] | None = None,
    spark: dict[str, object] | None = None,
) -> Task:
    """A spark-executor task ``<codops>/<name>`` whose code is one cell of ``notebooks/job.ipynb``."""
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": "code",
                "id": "explore",
                "metadata": {},
                "outputs": [],
                "execution_count": None,
                "source": ["raise RuntimeError('exploration cell: must not run')\n"],
            },
            {
                "cell_type": "code",
                "id": "task",
                "metadata": {},
                "outputs": [],
                "execution_count": None,
                "source": code.splitlines(keepends=True),
            },
        ],
    }
    (root / "notebooks" / "job.ipynb").write_text(json.dumps(notebook))
    spec: dict[str, object] = {"notebook": "notebooks/job.ipynb", "method": method, "executor": "spark"}
    if args:
        spec["args"] = args
    if spark:
        spec["spark"] = spark
    document = {"codops": codops, "dependencies": [], "tasks": {name: spec}}
    (root / "peach.yaml").write_text(yaml.safe_dump(document))
    definitions = load_definitions(root)
    assert not definitions.errors, definitions.errors
    (task,) = definitions.tasks
    return task
