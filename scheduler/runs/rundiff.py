"""What changed between two runs of one task, from their manifests: the code that ran (the runner script,
its task code shown as plain lines), the YAML definition, the dependency set, the commit, the Spark
settings and the arguments.

The runner script carries the task's code as one JSON string (``CHUNKS = json.loads(...)``); a diff of that
line would be one unreadable change, so the script is compared in a readable form: each code chunk as
its own lines under a ``# ---- <file>`` header, then the rest of the runner. Run ids and run directories
inside the Spark settings are replaced by placeholders, so that only real differences show.
"""

import ast
import difflib
import json
from dataclasses import dataclass
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from scheduler.errors import DiffError
from scheduler.store.records import Manifest, Run


@dataclass(frozen=True)
class RunDiff:
    a: Run
    b: Run
    commit: dict[str, Any]
    code: str  # unified diff of the readable runner scripts ("" when the same)
    definition: str  # unified diff of the YAML definitions
    dependencies: dict[str, Any]  # added / removed / changed packages, and their unified diff
    spark: dict[str, dict[str, Any]]  # setting -> {"a": value, "b": value}, for settings that differ
    args: dict[str, dict[str, Any]]

    @property
    def same(self) -> bool:
        return not (
            self.commit["changed"]
            or self.code
            or self.definition
            or self.dependencies["diff"]
            or self.spark
            or self.args
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": self.a.id,
            "b": self.b.id,
            "codops": self.a.codops,
            "task": self.a.task,
            "same": self.same,
            "commit": self.commit,
            "code": self.code,
            "definition": self.definition,
            "dependencies": self.dependencies,
            "spark": self.spark,
            "args": self.args,
        }

    def text(self) -> str:
        """The whole comparison as text for people."""
        a, b = self.a.id, self.b.id
        commits = self.commit
        lines = [f"diff of {self.a.codops}/{self.a.task}: {a} -> {b}"]
        if commits["changed"]:
            lines.append(f"commit: {commits['a']} -> {commits['b']}")
        else:
            lines.append(f"commit: {commits['a']} (same)")
        sections = [("code (runner script)", self.code), ("definition (YAML)", self.definition)]
        sections.append(("dependency set", self.dependencies["diff"]))
        for title, body in sections:
            lines.append(f"== {title}: {'changed' if body else 'same'}")
            if body:
                lines.append(body.rstrip("\n"))
        deps = self.dependencies
        lines += [f"  added    {item}" for item in deps["added"]]
        lines += [f"  removed  {item}" for item in deps["removed"]]
        lines += [f"  changed  {c['name']}: {c['a']} -> {c['b']}" for c in deps["changed"]]
        for title, changes in (("spark settings", self.spark), ("arguments", self.args)):
            lines.append(f"== {title}: {'changed' if changes else 'same'}")
            lines += [f"  {key}: {_show(c['a'])} -> {_show(c['b'])}" for key, c in changes.items()]
        return "\n".join(lines) + "\n"


def diff_runs(a: Run, manifest_a: Manifest, b: Run, manifest_b: Manifest) -> RunDiff:
    """Compare two runs of the same task (``DiffError`` for runs of different tasks)."""
    if (a.codops, a.task) != (b.codops, b.task):
        raise DiffError(
            f"run {a.id} is of {a.codops}/{a.task} and run {b.id} of {b.codops}/{b.task}: "
            "diff compares two runs of one task"
        )
    return RunDiff(
        a=a,
        b=b,
        commit={
            "a": manifest_a.commit,
            "b": manifest_b.commit,
            "changed": manifest_a.commit != manifest_b.commit,
        },
        code=unified(
            readable_runner(manifest_a.runner), readable_runner(manifest_b.runner), a.id, b.id, "runner.py"
        ),
        definition=unified(
            manifest_a.definition,
            manifest_b.definition,
            a.id,
            b.id,
            manifest_a.definition_file,
            manifest_b.definition_file,
        ),
        dependencies=dependency_changes(_dependencies(manifest_a), _dependencies(manifest_b), a.id, b.id),
        spark=changed(_settings(manifest_a, a), _settings(manifest_b, b)),
        args=changed(manifest_a.args, manifest_b.args),
    )


def unified(old: str, new: str, a: str, b: str, name: str, new_name: str | None = None) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        f"{a}/{name}",
        f"{b}/{new_name or name}",
    )
    return "".join(line if line.endswith("\n") else f"{line}\n" for line in lines)


def readable_runner(runner: str) -> str:
    """The runner with its task code as lines: each chunk under ``# ---- <file>``, then the runner itself
    with the ``CHUNKS`` line shortened and the progress helper's source left out (it is the scheduler's,
    not the task's). A runner not in the expected form is returned as it is."""
    try:
        module = ast.parse(runner)
    except SyntaxError:
        return runner
    for node in module.body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["PROGRESS_HELPER"]
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)  # not the shortened ``...`` line
        ):
            lines = runner.splitlines(keepends=True)
            start, end = node.lineno - 1, (node.end_lineno or node.lineno)
            shortened = "PROGRESS_HELPER = ...  # the source of executors/peach_progress.py\n"
            return readable_runner("".join([*lines[:start], shortened, *lines[end:]]))
    for node in module.body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["CHUNKS"]
            and isinstance(node.value, ast.Call)
            and node.value.args
            and isinstance(node.value.args[0], ast.Constant)
            and isinstance(node.value.args[0].value, str)
        ):
            try:
                chunks = json.loads(node.value.args[0].value)
            except ValueError:
                return runner
            code = "".join(
                f"# ---- {name}\n{text}{'' if text.endswith(chr(10)) else chr(10)}" for name, text in chunks
            )
            lines = runner.splitlines(keepends=True)
            start, end = node.lineno - 1, (node.end_lineno or node.lineno)
            files = ", ".join(name for name, _ in chunks)
            rest = [*lines[:start], f"CHUNKS = ...  # the code above ({files})\n", *lines[end:]]
            return f"{code}# ---- runner (generated by peach-scheduler)\n{''.join(rest)}"
    return runner


def _dependencies(manifest: Manifest) -> tuple[str, ...]:
    """The installed set when known, else the declared one."""
    return manifest.frozen if manifest.frozen is not None else manifest.requirements


def dependency_changes(old: tuple[str, ...], new: tuple[str, ...], a: str, b: str) -> dict[str, Any]:
    """Packages added, removed and changed (by name) between two dependency sets, plus a unified diff."""
    before, after = _by_name(old), _by_name(new)
    changes = [
        {"name": name, "a": _version(before[name]), "b": _version(after[name])}
        for name in sorted(before.keys() & after.keys())
        if before[name] != after[name]
    ]
    return {
        "added": [after[name] for name in sorted(after.keys() - before.keys())],
        "removed": [before[name] for name in sorted(before.keys() - after.keys())],
        "changed": changes,
        "diff": unified(
            "".join(f"{r}\n" for r in old), "".join(f"{r}\n" for r in new), a, b, "requirements.txt"
        ),
    }


def _by_name(requirements: tuple[str, ...]) -> dict[str, str]:
    named: dict[str, str] = {}
    for line in requirements:
        try:
            named[canonicalize_name(Requirement(line).name)] = line
        except InvalidRequirement:
            named[line] = line  # e.g. "-e file:///..." from pip freeze: compared as a whole
    return named


def _version(line: str) -> str:
    try:
        requirement = Requirement(line)
    except InvalidRequirement:
        return line
    return str(requirement.specifier or requirement.url or line)


def _settings(manifest: Manifest, run: Run) -> dict[str, Any]:
    """The Spark settings flattened (``conf.<key>``), this run's id and version replaced by placeholders."""
    if manifest.spark is None:
        return {}
    flat = {key: value for key, value in manifest.spark.items() if key != "conf"}
    flat.update({f"conf.{key}": value for key, value in manifest.spark.get("conf", {}).items()})
    swaps = [(run.id, "<run id>"), (run.id.lower(), "<run id>")]
    swaps += [(manifest.commit, "<commit>")] if manifest.commit else []
    for key, value in flat.items():
        if isinstance(value, str):
            for old, new in swaps:
                value = value.replace(old, new)
            flat[key] = value
    return flat


def changed(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        key: {"a": a.get(key), "b": b.get(key)}
        for key in sorted(a.keys() | b.keys())
        if a.get(key) != b.get(key)
    }


def _show(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value) if not isinstance(value, str) else value
