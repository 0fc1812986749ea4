"""The container image, checked without a Docker engine: hadolint, the instructions issue 8 asks for, the
build context, and a dependency lock that still satisfies pyproject.toml."""

import fnmatch
import json
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers.deploytools import CHART, DOCKERFILE, LOCK, ROOT, one, render_chart, run, tool

PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip().removesuffix("\\") + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            logical.append(pending)
            pending = ""
    result = []
    for text in logical:
        keyword, _, rest = text.strip().partition(" ")
        result.append((keyword.upper(), " ".join(rest.split())))
    return result


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match["name"])] = match["version"]
    return pins


def test_hadolint_passes() -> None:
    proc = run(tool("hadolint"), "--failure-threshold", "info", DOCKERFILE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_would_catch_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text(
        "FROM python:latest\nRUN apt-get update && apt-get install -y git\nCMD peach-scheduler run\n"
    )
    proc = run(tool("hadolint"), careless)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # "latest" tag


def test_slim_python_311_base_with_java_git_and_tini() -> None:
    steps = final_stage()
    assert re.fullmatch(r"\$\{PYTHON_IMAGE\}", steps[0][1])
    args = dict(arg.split("=", 1) for keyword, arg in instructions() if keyword == "ARG" and "=" in arg)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", args["PYTHON_IMAGE"])
    apt = " ".join(arg for keyword, arg in steps if keyword == "RUN" and "apt-get install" in arg)
    for package in ("openjdk-17-jre-headless", "tini", "git"):
        assert re.search(rf"\b{re.escape(package)}\b", apt), package
    assert "--no-install-recommends" in apt and "rm -rf /var/lib/apt/lists/*" in apt


def test_locked_hash_checked_install() -> None:
    runs = [arg for keyword, arg in final_stage() if keyword == "RUN"]
    assert any("--require-hashes -r /tmp/requirements.lock" in arg for arg in runs)
    assert any("--no-deps /wheels/*.whl && pip check" in arg for arg in runs)
    copies = [arg for keyword, arg in final_stage() if keyword == "COPY"]
    assert "deploy/requirements.lock /tmp/requirements.lock" in copies


def test_runs_as_the_charts_non_root_user_under_tini() -> None:
    steps = final_stage()
    users = [arg for keyword, arg in steps if keyword == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    last_run = max(i for i, (keyword, _) in enumerate(steps) if keyword == "RUN")
    assert steps.index(("USER", users[0])) > last_run, "USER must come after every RUN"
    pod = one(render_chart(), "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert (int(uid), int(gid)) == (pod["runAsUser"], pod["runAsGroup"]) and int(uid) != 0
    assert json.loads(dict(steps)["ENTRYPOINT"]) == ["/usr/bin/tini", "--"]
    assert json.loads(dict(steps)["CMD"]) == ["peach-scheduler", "run", "--config", "/etc/peach/config.yaml"]
    assert dict(steps)["EXPOSE"] == "8080"


def test_hadoop_conf_dir_is_the_charts_mount_point() -> None:
    env = " ".join(arg for keyword, arg in final_stage() if keyword == "ENV")
    assert "HADOOP_CONF_DIR=/etc/hadoop/conf" in env
    chart_values = (CHART / "values.yaml").read_text(encoding="utf-8")
    assert "mountPath: /etc/hadoop/conf" in chart_values
    assert any("/etc/hadoop/conf" in arg for keyword, arg in final_stage() if keyword == "RUN")  # created


def test_build_context_keeps_what_copy_needs() -> None:
    """Every COPY source survives .dockerignore (a whitelist: '*' then '!path' exceptions)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            bare = pattern.removeprefix("!").rstrip("/")
            if fnmatch.fnmatch(path, bare) or path.startswith(bare + "/"):
                keep = negate
        return keep

    sources = []
    for keyword, arg in instructions():
        if keyword == "COPY" and not arg.startswith("--from"):
            sources += arg.split()[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert included(source.rstrip("/")), f"{source} is excluded by .dockerignore"
    assert not included(".venv") and not included("tests")


def test_lock_satisfies_pyproject_and_image_requirements() -> None:
    """Fails while deploy/requirements.lock is stale: run deploy/lock."""
    pins = locked()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extra_lines = (ROOT / "deploy" / "image-requirements.in").read_text(encoding="utf-8").splitlines()
    wanted = [*project["dependencies"], *(line for line in extra_lines if line and not line.startswith("#"))]
    stale = []
    for text in wanted:
        requirement = Requirement(text)
        version = pins.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            stale.append(f"{text} (locked: {version})")
    assert stale == [], "deploy/requirements.lock is stale, run deploy/lock: " + ", ".join(stale)


def test_every_locked_package_is_pinned_with_hashes() -> None:
    text = LOCK.read_text(encoding="utf-8")
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])  # after the generated header
    assert len(blocks) == len(locked()) > 5
    for block in blocks:
        assert PIN.match(block), block.splitlines()[0]
        assert "--hash=sha256:" in block, block.splitlines()[0]
