"""Repository sync against real git servers on loopback: git daemon, smart HTTP with Basic auth, and a
server that never answers."""

import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from scheduler.config import Repository, load_config
from scheduler.repos import git as gitrun
from scheduler.repos.heads import RemoteHeads
from scheduler.repos.sync import LAST_GOOD, RepositorySync, SyncResult, repository_syncs, sync_organisation
from tests.helpers.gitserver import Upstream, git, git_daemon, git_http, silent_server, tasks_yaml, wait_for

SECRET = "pA55-w0rd-that-must-never-leak"


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path / "upstream")


@pytest.fixture
def daemon(upstream: Upstream) -> Iterator[str]:
    with git_daemon(upstream.base) as url:
        yield url


def make_sync(
    tmp_path: Path,
    url: str,
    codops: str = "chrts",
    timeout: float = 20.0,
    environ: dict[str, str] | None = None,
    **repository: str,
) -> RepositorySync:
    return RepositorySync(
        codops, Repository(url=url, **repository), tmp_path / "ws", timeout, environ=environ or {}
    )


def names(result: SyncResult) -> list[str]:
    return sorted(task.name for task in result.tasks)


def checkout_head(path: Path) -> str:
    return git("rev-parse", "HEAD", cwd=path)


def checkout_dirt(path: Path) -> str:
    return git("status", "--porcelain", "--ignored", cwd=path)


def cmdlines() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"))
    return found


def test_clone_new_commit_and_force_push_are_picked_up(
    upstream: Upstream, daemon: str, tmp_path: Path
) -> None:
    first = upstream.commit({**tasks_yaml("chrts", "alpha"), "old.txt": "from the first commit\n"})
    sync = make_sync(tmp_path, f"{daemon}/tasks.git")

    cloned = sync.sync()
    assert (cloned.commit, cloned.head, cloned.error, cloned.fresh) == (first, first, None, True)
    assert names(cloned) == ["alpha"]
    assert checkout_head(cloned.path) == first
    assert cloned.path.is_relative_to(tmp_path / "ws" / "checkouts" / "chrts")

    second = upstream.commit({**tasks_yaml("chrts", "alpha", "beta"), ".gitignore": "*.log\n"})
    moved = sync.sync()
    assert (moved.commit, moved.error, names(moved)) == (second, None, ["alpha", "beta"])

    (moved.path / "stray.txt").write_text("left by a task\n")
    (moved.path / "output.log").write_text("ignored, still removed\n")
    (moved.path / "tasks" / "hello.py").write_text("edited in place\n")
    rewritten = upstream.commit({**tasks_yaml("chrts", "gamma"), "old.txt": None}, amend=True)
    assert subprocess.run(
        ["git", "merge-base", "--is-ancestor", second, rewritten], cwd=upstream.work
    ).returncode
    forced = sync.sync()
    assert (forced.commit, forced.error, names(forced)) == (rewritten, None, ["gamma"])
    assert checkout_head(forced.path) == rewritten
    assert checkout_dirt(forced.path) == ""
    assert not (forced.path / "old.txt").exists()
    assert (forced.path / "tasks" / "hello.py").read_text() == "def main():\n    print('hello')\n"
    assert git("rev-parse", LAST_GOOD, cwd=forced.path) == rewritten


def test_branch_deleted_keeps_last_good(upstream: Upstream, daemon: str, tmp_path: Path) -> None:
    good = upstream.commit(tasks_yaml("chrts", "alpha"))
    sync = make_sync(tmp_path, f"{daemon}/tasks.git")
    assert sync.sync().commit == good
    upstream.delete_branch()
    result = sync.sync()
    assert (result.commit, result.head, result.fresh, names(result)) == (good, None, False, ["alpha"])
    assert result.error is not None
    assert "branch does not exist on the remote" in result.error
    assert f"serving last good commit {good[:12]}" in result.error


def test_server_down_keeps_last_good(upstream: Upstream, tmp_path: Path) -> None:
    good = upstream.commit(tasks_yaml("chrts", "alpha"))
    with git_daemon(upstream.base) as url:
        sync = make_sync(tmp_path, f"{url}/tasks.git")
        assert sync.sync().commit == good
    result = sync.sync()
    assert (result.commit, result.head, names(result)) == (good, None, ["alpha"])
    assert result.error is not None and result.error.startswith("fetch failed")
    assert checkout_head(result.path) == good

    never = make_sync(tmp_path, f"{url}/tasks.git", codops="sesr").sync()
    assert (never.commit, never.definitions, never.tasks) == (None, None, ())
    assert never.error is not None and "no commit to serve yet" in never.error


def test_broken_head_keeps_last_good_until_fixed(upstream: Upstream, daemon: str, tmp_path: Path) -> None:
    good = upstream.commit(tasks_yaml("chrts", "alpha"))
    sync = make_sync(tmp_path, f"{daemon}/tasks.git")
    assert sync.sync().error is None
    broken = upstream.commit({"peach.yaml": "codops: chrts\ntasks: [unclosed\n"})
    result = sync.sync()
    assert (result.commit, result.head, names(result)) == (good, broken, ["alpha"])
    assert result.error is not None
    assert f"head {broken[:12]} is not used: peach.yaml define no valid task: peach.yaml:" in result.error
    assert checkout_head(result.path) == good
    assert "tasks:\n  alpha:" in (result.path / "peach.yaml").read_text()
    again = sync.sync()
    assert (again.commit, again.error, names(again)) == (good, result.error, ["alpha"])
    visits = git("reflog", "--format=%H", "HEAD", cwd=result.path).split()
    assert visits.count(broken) == 1, "a head known to be broken is not checked out again"

    fixed = upstream.commit(tasks_yaml("chrts", "alpha", "beta"))
    assert (sync.sync().commit, names(sync.sync())) == (fixed, ["alpha", "beta"])


def test_task_errors_alone_do_not_hold_back_the_head(upstream: Upstream, daemon: str, tmp_path: Path) -> None:
    upstream.commit(tasks_yaml("chrts", "alpha"))
    sync = make_sync(tmp_path, f"{daemon}/tasks.git")
    sync.sync()
    files = tasks_yaml("chrts", "alpha")
    files["peach.yaml"] += "  beta:\n    notebook: tasks/missing.py\n    method: main\n"
    head = upstream.commit(files)
    result = sync.sync()
    assert (result.commit, result.error, names(result)) == (head, None, ["alpha"])
    assert result.definitions is not None
    assert [p.task for p in result.definitions.errors] == ["beta"]


def test_first_head_broken_is_served_with_its_errors(upstream: Upstream, daemon: str, tmp_path: Path) -> None:
    head = upstream.commit({"README.md": "no tasks here\n"})
    result = make_sync(tmp_path, f"{daemon}/tasks.git").sync()
    assert (result.commit, result.tasks) == (head, ())
    assert (
        result.error
        == "no task definitions (peach.yaml or peach.conf/*.yaml) (no earlier good commit to fall back to)"
    )


def test_repository_may_only_schedule_its_own_codops(tmp_path: Path) -> None:
    own, foreign, twin = (Upstream(tmp_path / name) for name in ("own", "foreign", "twin"))
    own.commit(tasks_yaml("sesr", "alpha"))
    foreign.commit(tasks_yaml("chrts", "stolen"))
    twin.commit(tasks_yaml("sesr", "alpha", "beta"))
    syncs = [make_sync(tmp_path, str(u.bare), codops="sesr") for u in (own, foreign, twin)]

    organisation = sync_organisation("sesr", syncs)

    assert [t.key for t in organisation.tasks] == ["sesr/alpha", "sesr/beta"]
    assert organisation.sources["sesr/alpha"].url == str(own.bare)
    assert organisation.sources["sesr/beta"].url == str(twin.bare)
    assert organisation.results[1].tasks == ()
    messages = [p.message for p in organisation.problems]
    assert any("may not schedule tasks for codops 'chrts' (allowed: sesr)" in m for m in messages)
    assert f"{twin.bare}: task sesr/alpha is already defined in {own.bare}; ignored" in messages


def test_concurrent_syncs_of_one_repository_take_turns(
    upstream: Upstream, daemon: str, tmp_path: Path
) -> None:
    head = upstream.commit(tasks_yaml("chrts", "alpha"))
    sync = make_sync(tmp_path, f"{daemon}/tasks.git")
    results: list[SyncResult] = []
    threads = [threading.Thread(target=lambda: results.append(sync.sync())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [(r.commit, r.error) for r in results] == [(head, None)] * 4


@pytest.mark.parametrize("scheme", ["git", "http"])
def test_hanging_server_times_out_and_blocks_no_one(
    scheme: str, upstream: Upstream, daemon: str, tmp_path: Path
) -> None:
    head = upstream.commit(tasks_yaml("sesr", "alpha"))
    healthy = make_sync(tmp_path, f"{daemon}/tasks.git", codops="sesr")
    finished: dict[str, float] = {}
    results: dict[str, SyncResult] = {}

    def run(name: str, sync: RepositorySync) -> None:
        results[name] = sync.sync()
        finished[name] = time.monotonic()

    with silent_server() as port:
        hanging = make_sync(tmp_path, f"{scheme}://127.0.0.1:{port}/tasks.git", timeout=3)
        started = time.monotonic()
        slow = threading.Thread(target=run, args=("hanging", hanging))
        slow.start()
        wait_for(lambda: any(f"127.0.0.1:{port}" in line for line in cmdlines()), what="git talking to it")
        run("healthy", healthy)
        slow.join(timeout=30)
        assert not any(f"127.0.0.1:{port}" in line for line in cmdlines()), "git children left behind"

    assert (results["healthy"].commit, results["healthy"].error) == (head, None)
    assert finished["healthy"] < finished["hanging"]
    assert results["hanging"].commit is None
    assert results["hanging"].error is not None
    assert "did not finish within 3s and was killed" in results["hanging"].error
    assert 3 <= finished["hanging"] - started < 12


def test_http_basic_auth_and_the_secret_leaks_nowhere(
    upstream: Upstream, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[credential]\n\thelper = store\n")  # would write ~/.git-credentials
    monkeypatch.setenv("HOME", str(home))
    caplog.set_level(logging.DEBUG)
    head = upstream.commit(tasks_yaml("chrts", "alpha"))
    seen: list[str] = []
    results: list[SyncResult] = []

    with git_http(upstream.base, "peach", SECRET, delay=0.3) as server:
        sync = make_sync(
            tmp_path, f"{server.url}/tasks.git", environ={"CHRTS_TOKEN": SECRET}, username="peach",
            token_env="CHRTS_TOKEN",
        )  # fmt: skip
        thread = threading.Thread(target=lambda: results.append(sync.sync()))
        thread.start()
        while thread.is_alive():
            seen.extend(cmdlines())
        thread.join()

    assert (results[0].commit, results[0].error) == (head, None)
    assert any("remote-http" in line or "git fetch" in line for line in seen), "the scan saw no git at work"
    assert not [line for line in seen if SECRET in line]
    assert "Popen(" in caplog.text and SECRET not in caplog.text
    for path in (results[0].path / ".git").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert not (home / ".git-credentials").exists()


def test_wrong_or_missing_password_fails_fast_and_keeps_last_good(upstream: Upstream, tmp_path: Path) -> None:
    good = upstream.commit(tasks_yaml("chrts", "alpha"))
    environ = {"CHRTS_TOKEN": SECRET}
    with git_http(upstream.base, "peach", SECRET) as server:
        url = f"{server.url}/tasks.git"
        sync = make_sync(
            tmp_path, url, timeout=30, environ=environ, username="peach", token_env="CHRTS_TOKEN"
        )
        assert sync.sync().commit == good

        environ["CHRTS_TOKEN"] = "wrong"
        started = time.monotonic()
        refused = sync.sync()
        assert time.monotonic() - started < 10
        assert (refused.commit, refused.head, names(refused)) == (good, None, ["alpha"])
        assert refused.error is not None and "authentication failed" in refused.error

        anonymous = make_sync(tmp_path, url, codops="sesr", timeout=30).sync()
        assert anonymous.commit is None
        assert anonymous.error is not None and "authentication failed" in anonymous.error

        del environ["CHRTS_TOKEN"]
        unset = sync.sync()
        assert unset.commit == good
        assert unset.error is not None and "environment variable CHRTS_TOKEN" in unset.error


def test_configured_organisations_sync_into_the_workspace(
    upstream: Upstream, daemon: str, tmp_path: Path
) -> None:
    head = upstream.commit(tasks_yaml("chrts", "alpha"))
    config_file = tmp_path / "peach.yaml"
    config_file.write_text(
        "workspace: ws\ngit: {timeout: 7s}\norganisations:\n"
        f"  chrts:\n    repositories: [{{url: '{daemon}/tasks.git'}}]\n"
        "  sesr:\n    repositories: [{url: upstream/srv/tasks.git}]\n"
    )
    syncs = repository_syncs(load_config(config_file, environ={}))
    assert sorted(syncs) == ["chrts", "sesr"]
    [chrts], [sesr] = syncs["chrts"], syncs["sesr"]
    assert chrts.timeout == 7
    assert chrts.path.parent == tmp_path / "ws" / "checkouts" / "chrts"
    assert chrts.path.name.startswith("tasks-") and chrts.path.name != sesr.path.name
    organisation = sync_organisation("chrts", syncs["chrts"])
    assert ([t.key for t in organisation.tasks], organisation.problems) == (["chrts/alpha"], ())
    assert organisation.sources["chrts/alpha"].commit == head
    refused = sync_organisation("sesr", syncs["sesr"])
    assert refused.tasks == ()
    assert "may not schedule tasks for codops 'chrts' (allowed: sesr)" in refused.problems[0].message


def test_first_syncs_of_many_organisations_at_once_install_the_askpass_helper_once(tmp_path: Path) -> None:
    codops = [f"org{i:02d}" for i in range(12)]
    heads = {c: Upstream(tmp_path / c, c).commit(tasks_yaml(c, "job")) for c in codops}
    syncs = [make_sync(tmp_path, str(tmp_path / c / "srv" / f"{c}.git"), codops=c) for c in codops]
    start = threading.Barrier(len(syncs))
    results: dict[str, SyncResult] = {}

    def first_sync(sync: RepositorySync) -> None:
        start.wait()
        results[sync.codops] = sync.sync()

    threads = [threading.Thread(target=first_sync, args=(sync,)) for sync in syncs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert {c: (r.commit, r.error) for c, r in results.items()} == {c: (heads[c], None) for c in codops}
    assert sorted(p.name for p in (tmp_path / "ws" / "bin").iterdir()) == ["git-askpass"]  # no leftovers


def git_commands(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The git commands every sync runs from now on (each one a git process)."""
    started: list[str] = []
    real = gitrun.run

    def counted(repo: object, args: list[str], *rest: object, **kw: object) -> str:
        started.append(args[0])
        return real(repo, args, *rest, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(gitrun, "run", counted)
    return started


def test_no_git_process_while_the_head_is_fresh_and_one_ls_remote_after(
    upstream: Upstream, daemon: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    heads = RemoteHeads(freshness=5.0, clock=lambda: now[0])
    first = upstream.commit(tasks_yaml("chrts", "alpha"))
    url = f"{daemon}/tasks.git"
    alpha = RepositorySync("chrts", Repository(url=url), tmp_path / "ws", 20.0, environ={}, heads=heads)
    assert alpha.sync().commit == first
    commands = git_commands(monkeypatch)
    assert alpha.sync().commit == first
    assert commands == []  # nothing changed, within the window: no git process at all

    second = upstream.commit(tasks_yaml("chrts", "alpha", "beta"))
    assert alpha.sync().commit == first  # the shared answer is still fresh: at most 5 s old
    now[0] += 5.0
    result = alpha.sync()
    assert (result.commit, names(result)) == (second, ["alpha", "beta"])
    assert commands[:2] == ["ls-remote", "fetch"]

    commands.clear()
    now[0] += 5.0
    assert alpha.sync().commit == second
    assert commands == ["ls-remote"]  # asked, unchanged: nothing fetched, nothing checked out


def test_one_answer_serves_every_organisation_and_a_push_ends_it(
    upstream: Upstream, daemon: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    heads = RemoteHeads(freshness=3600.0)
    first = upstream.commit(tasks_yaml("chrts", "alpha"))
    url = f"{daemon}/tasks.git"
    syncs = [
        RepositorySync("chrts", Repository(url=url), tmp_path / f"ws{i}", 20.0, environ={}, heads=heads)
        for i in range(3)
    ]
    commands = git_commands(monkeypatch)
    assert [s.sync().commit for s in syncs] == [first] * 3
    assert commands.count("ls-remote") == 1  # the first asked; the others used its answer

    second = upstream.commit(tasks_yaml("chrts", "alpha", "beta"))
    assert syncs[0].sync().commit == first
    heads.changed(url, "master")  # what a push webhook does
    assert [s.sync().commit for s in syncs] == [second] * 3
