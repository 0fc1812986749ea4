"""The architecture as a rule: which layer may import which, and no import cycle anywhere.

Layers, lowest first. A module may import its own layer and the layers listed under it in ``MAY_IMPORT``;
nothing imports ``cli``. The rule is read from the source with ``ast`` (every import, function-local ones
included), so a lazy import inside a function cannot hide an upward dependency.
"""

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("scheduler", "executors", "queues")

# layer -> the module prefixes it is made of
LAYERS = {
    "ground": (
        "scheduler.errors",
        "scheduler.durations",
        "scheduler.names",
        "scheduler.limits",
        "scheduler.status",
        "scheduler.yamlfile",
        "scheduler.config",
        "scheduler.notifysettings",
        "scheduler.metrics",
        "scheduler.capacity",
        "scheduler.exposition",
        "scheduler.workers",
    ),
    "spec": ("scheduler.spec",),
    "executors": ("executors",),
    "queues": ("queues",),
    "repos": ("scheduler.repos",),
    "store": ("scheduler.store",),
    "notify": ("scheduler.notify",),
    "runs": ("scheduler.runs",),
    "http": ("scheduler.http",),
    "service": ("scheduler.service",),
    "cli": ("scheduler.cli",),
}
MAY_IMPORT = {
    "ground": {"ground"},
    "spec": {"ground", "spec"},
    "executors": {"ground", "spec", "executors"},
    "queues": {"ground", "executors", "queues"},
    "repos": {"ground", "spec", "repos"},
    "store": {"ground", "spec", "store"},
    "notify": {"ground", "spec", "store", "notify"},
    "runs": {"ground", "spec", "executors", "repos", "store", "notify", "runs"},
    "http": {"ground", "spec", "store", "runs", "http"},
    "service": {"ground", "spec", "executors", "repos", "store", "notify", "runs", "http", "service"},
    "cli": set(LAYERS),
}


def layer_of(module: str) -> str | None:
    for layer, prefixes in LAYERS.items():
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return layer
    return None


def product_modules(root: Path = ROOT) -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root).with_suffix("")
            if "sample" in relative.parts or "migrations" in relative.parts:
                continue
            parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
            if len(parts) > 1:  # the top-level packages' own __init__ files are empty
                modules[".".join(parts)] = path
    return modules


def imports_of(module: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """The product modules ``module`` imports, with the line (``from a import b`` counts ``a.b`` when it
    is a module, else ``a``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: ``from . import x`` in package a.b is a.b.x
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).strip(".")
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in known else base), node.lineno


def edges(root: Path = ROOT) -> dict[str, dict[str, int]]:
    modules = product_modules(root)
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        targets = graph.setdefault(module, {})
        for target, line in imports_of(module, path, set(modules)):
            if target in modules and target != module:
                targets.setdefault(target, line)
    return graph


def forbidden(graph: dict[str, dict[str, int]]) -> list[str]:
    problems = []
    for module, targets in graph.items():
        source = layer_of(module)
        for target, line in targets.items():
            wanted = layer_of(target)
            if source is None or wanted is None:
                problems.append(f"{module}:{line}: {target}: a module outside every layer")
            elif (wanted == "cli" and source != "cli") or wanted not in MAY_IMPORT[source]:
                problems.append(f"{module}:{line}: {source} imports {wanted} ({target})")
    return problems


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_every_module_is_in_a_layer() -> None:
    assert [module for module in product_modules() if layer_of(module) is None] == []


def test_imports_go_down_the_layers() -> None:
    assert forbidden(edges()) == []


def test_no_import_cycle() -> None:
    assert cycles(edges()) == []


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        (
            {"scheduler/spec/a.py": "from scheduler.store import b\n", "scheduler/store/b.py": ""},
            "spec imports store",
        ),
        (
            {"executors/a.py": "def f():\n    import scheduler.runs.b\n", "scheduler/runs/b.py": ""},
            "executors imports runs",
        ),
        (
            {"scheduler/runs/a.py": "from scheduler.cli import b\n", "scheduler/cli/b.py": ""},
            "runs imports cli",
        ),
    ],
)
def test_the_rule_finds_forbidden_imports(tmp_path: Path, files: dict[str, str], problem: str) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert any(problem in line for line in forbidden(edges(tmp_path)))


def test_the_rule_finds_cycles(tmp_path: Path) -> None:
    (tmp_path / "scheduler" / "store").mkdir(parents=True)
    (tmp_path / "scheduler" / "store" / "a.py").write_text("from scheduler.store import b\n")
    (tmp_path / "scheduler" / "store" / "b.py").write_text("from scheduler.store.a import x\n")
    assert cycles(edges(tmp_path)) == [["scheduler.store.a", "scheduler.store.b"]]


# peach_client is installed into notebook kernels on its own: the service's packages are never its imports.
CLIENT_MAY_IMPORT = {"peach_client", "httpx", "ipywidgets", "IPython"}


def client_imports(root: Path = ROOT) -> list[str]:
    """The imports of ``peach_client`` that are neither the standard library nor its own dependencies."""
    problems = []
    for path in sorted((root / "peach_client").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for name in names:
                top = name.partition(".")[0]
                if top not in CLIENT_MAY_IMPORT and top not in sys.stdlib_module_names:
                    problems.append(f"{path.relative_to(root)}:{node.lineno}: imports {name}")
    return problems


def test_the_client_imports_nothing_of_the_service() -> None:
    assert client_imports() == []


def test_the_client_rule_finds_a_service_import(tmp_path: Path) -> None:
    (tmp_path / "peach_client").mkdir()
    (tmp_path / "peach_client" / "a.py").write_text("def f():\n    from scheduler.status import RunStatus\n")
    assert client_imports(tmp_path) == ["peach_client/a.py:2: imports scheduler.status"]
