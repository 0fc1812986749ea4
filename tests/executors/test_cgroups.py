"""Memory caps for local runs, for real: the python executor's runs in kernel memory cgroups.

On cgroup v1 (a ``memory`` hierarchy of its own) and on cgroup v2 (a writable delegated subtree), each
where this machine has it: a test that cannot make its cgroup is skipped, saying why. A task allocating
past its cap is killed by the kernel and says so; one under it succeeds with its peak memory recorded;
the cgroup is gone afterwards."""

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from executors import cgroups
from executors.base import RunRequest
from executors.environments import EnvironmentStore
from executors.python import PythonExecutor
from scheduler.status import RunStatus
from tests.helpers.executor_fixtures import finish, make_task, no_survivors

GREEDY = "def main(mib):\n    block = bytearray(mib * 1024 * 1024)\n    print('allocated', len(block))\n"


def hierarchy(version: int) -> cgroups.MemoryCgroups:
    """This process's memory cgroups of ``version``, or the test is skipped with the reason."""
    own = cgroups.own_cgroups()
    reasons = []
    for kind, mount, root, options in cgroups.mounts():
        try:
            if version == 2 and kind == "cgroup2" and "" in own:
                return cgroups.v2(mount, root, own[""])
            if version == 1 and kind == "cgroup" and "memory" in options.split(",") and "memory" in own:
                return cgroups.v1(mount, root, own["memory"])
        except OSError as exc:
            reasons.append(str(exc))
    pytest.skip(
        f"no writable cgroup v{version} memory hierarchy here: {'; '.join(reasons) or 'none mounted'}"
    )


@pytest.fixture(scope="module")
def environments(tmp_path_factory: pytest.TempPathFactory) -> EnvironmentStore:
    return EnvironmentStore(tmp_path_factory.mktemp("environments"))


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[list[str]]:
    yield from no_survivors()


@pytest.mark.parametrize("version", [1, 2])
def test_a_run_past_its_cap_is_killed_and_says_so(
    version: int, environments: EnvironmentStore, tmp_path: Path, no_leftovers: list[str]
) -> None:
    memory = hierarchy(version)
    executor = PythonExecutor(environments, tmp_path / "runs", grace=1.0, cgroups=memory)
    outcomes = {}
    for name, mib in (("greedy", 400), ("modest", 20)):
        task = make_task(tmp_path / name, GREEDY, args={"mib": mib})
        request = RunRequest(f"test-{secrets.token_hex(6)}", task, timeout=60, memory_mib=128)
        no_leftovers.append(request.run_id)
        execution = executor.prepare(request)
        execution.start()
        outcomes[name] = finish(execution)
        assert not (memory.root / request.run_id).exists()  # the run's cgroup is removed with it
        log = execution.read_log()
        assert f"memory cap 128 MiB (cgroup v{version} at {memory.root})".encode() in log
    greedy, modest = outcomes["greedy"], outcomes["modest"]
    assert (greedy.status, greedy.summary) == (RunStatus.FAILED, "killed: out of memory (limit 128 MiB)")
    assert greedy.peak_memory_bytes is None or greedy.peak_memory_bytes <= 128 * 2**20
    assert modest.status is RunStatus.SUCCEEDED, modest.summary
    if version == 1 or (memory.root / "memory.peak").exists() or modest.peak_memory_bytes is not None:
        assert modest.peak_memory_bytes is not None and 20 * 2**20 < modest.peak_memory_bytes < 128 * 2**20


def test_without_a_memory_controller_the_reason_is_said(tmp_path: Path) -> None:
    """A host with no cgroup memory controller mounted (a fake /proc/self): off, and why."""
    (tmp_path / "cgroup").write_text("0::/\n")
    (tmp_path / "mountinfo").write_text("31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n")
    assert cgroups.detect(tmp_path) == (
        None,
        "memory caps for local runs are off (no cgroup hierarchy with a memory controller is mounted); "
        "local runs go on without caps",
    )
