"""Build task repositories on disk for tests: a dict of relative path -> text or bytes."""

import json
from pathlib import Path

GOOD_CONF = """\
codops: chrts
tasks:
  good:
    notebook: code/good.py
    method: main
    executor: python
"""

GOOD_PY = 'def main(who="world"):\n    print(f"hello {who}")\n'


def notebook(*cells: str, markdown_first: bool = False) -> str:
    """An nbformat-4 notebook whose code cells have the given sources."""
    items = [{"cell_type": "markdown", "metadata": {}, "source": "# title"}] if markdown_first else []
    for source in cells:
        items.append(
            {
                "cell_type": "code",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": source.splitlines(keepends=True),
            }
        )
    return json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": items}, indent=1)


def write_repo(root: Path, files: dict[str, str | bytes], good: bool = True) -> Path:
    """Write ``files`` under ``root``; with ``good``, add a valid task ``chrts/good`` in its own file."""
    everything: dict[str, str | bytes] = {"code/good.py": GOOD_PY}
    if good:
        everything["peach.conf/good.yaml"] = GOOD_CONF
    everything.update(files)
    for relative, content in everything.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root
