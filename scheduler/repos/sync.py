"""Organisation repositories: sync each checkout to its remote branch head, keep the last good one.

One checkout per configured repository, at ``<workspace>/checkouts/<codops>/<name>-<hash>``. A sync,
under that repository's own lock (a thread lock and an ``flock`` on ``<checkout>.lock``, so two
processes sharing a workspace take turns), does:

1. ``git ls-remote`` for the branch head (one answer shared for ``git.freshness`` seconds:
   ``scheduler.repos.heads``), and only when it is not the commit already fetched, ``git fetch`` of the
   branch into ``refs/remotes/origin/<branch>`` (forced: a force-push or rewritten history simply
   replaces the ref). When nothing changed, a sync within the freshness window runs no git process at
   all (the checkout's refs and loaded definitions are kept in memory: only this process moves them);
2. ``git checkout --force --detach <head>`` and ``git clean -ffdx``: the working tree equals the commit,
   with no merge state and no stray files, whatever happened before;
3. load the task definitions with this organisation as the only allowed codops.

**Last good commit.** ``refs/peach/last-good`` names the newest commit whose definitions were good (a
ref, so ``git gc`` keeps its objects after a force-push). A head is *broken* when it has no definition
file, or when one of its definition files yields no valid task (a YAML syntax error, a codops this
repository may not schedule into, every task invalid...): task-level errors alone do not make it broken,
they are reported per task as usual. When the fetch fails (remote unreachable, branch gone, wrong
password, timeout) or the new head is broken, the checkout is moved (back) to the last good commit and
its tasks are served; the result says what went wrong and which commit is served. With no good commit
yet, the current head is served as it is, errors and all. The checkout only moves under the lock, so
the moment it holds a broken head is bounded by one local checkout; code that runs tasks should not
rely on the checkout staying still between two syncs.
"""

import fcntl
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import git

from scheduler.config import Config, Repository
from scheduler.errors import ConfigError, SyncError
from scheduler.limits import LoopLimits
from scheduler.notifysettings import OrganisationNotifications
from scheduler.repos import git as gitrun
from scheduler.repos.heads import RemoteHeads
from scheduler.spec.definitions import Definitions, InvalidTask, Problem, Task, load_definitions

logger = logging.getLogger(__name__)

LAST_GOOD = "refs/peach/last-good"


@dataclass(frozen=True)
class SyncResult:
    """What one sync of one repository gives the loop: the commit served, its tasks, any problem."""

    codops: str
    url: str
    branch: str
    path: Path
    commit: str | None  # the commit the checkout holds and the tasks come from; None: nothing to serve
    head: str | None  # the remote branch head this sync saw; None when the fetch failed
    error: str | None  # why the head is not served, or why the sync failed
    definitions: Definitions | None
    rejected: Definitions | None = None  # the head's own definitions when it is broken and not served

    @property
    def fresh(self) -> bool:
        """True when the served commit is the remote head."""
        return self.commit is not None and self.commit == self.head

    @property
    def version(self) -> str | None:
        """The short commit hash shown as a run's version."""
        return self.commit[:12] if self.commit else None

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self.definitions.tasks if self.definitions else ()


class RepositorySync:
    """One configured repository of one organisation; ``sync()`` is safe to call from any thread."""

    def __init__(
        self,
        codops: str,
        repository: Repository,
        workspace: Path,
        timeout: float,
        limits: LoopLimits | None = None,
        environ: Mapping[str, str] | None = None,
        heads: RemoteHeads | None = None,
        notifications: OrganisationNotifications | None = None,
        *,
        secret_names: Collection[str] | None = None,
    ) -> None:
        self.codops, self.repository, self.timeout = codops, repository, timeout
        self.notifications = notifications
        self.secret_names = secret_names  # the organisation's secrets a task may ask for; None: unchecked
        self.workspace = workspace
        self.limits = limits or LoopLimits()
        self.environ = environ
        self.heads = heads or RemoteHeads()
        self.path = workspace / "checkouts" / codops / checkout_name(repository)
        self.askpass_dir = workspace / "bin"
        self._lock = threading.Lock()
        # The last commit loaded with its definitions; a head found broken and why (not checked out again).
        self._loaded: tuple[str, Definitions] | None = None
        self._known_broken: tuple[str, str, Definitions] | None = None
        self._known_refs: dict[str, str] | None = None  # the checkout's refs as this process last saw them

    def sync(self) -> SyncResult:
        started = time.monotonic()
        with self._lock, _file_lock(self.path.with_name(self.path.name + ".lock")):
            result = self._sync()
        where = f"{self.codops}: {self.repository.url} ({self.repository.branch})"
        if result.error:
            logger.warning("%s: %s", where, result.error)
        logger.debug("%s: serving %s after %.2fs", where, result.version, time.monotonic() - started)
        return result

    def _sync(self) -> SyncResult:
        try:
            repo = self._open()
        except (git.GitError, OSError) as exc:
            return self._result(None, None, f"cannot prepare the checkout: {exc}", None)
        try:
            head, good = self._fetch(repo)
        except (SyncError, ConfigError, OSError) as exc:
            try:
                good = self._refs(repo).get(LAST_GOOD)
            except SyncError:
                good = None
            return self._fall_back(repo, good, None, f"fetch failed: {exc}")
        if self._known_broken and self._known_broken[0] == head and good:
            _, why, rejected = self._known_broken
            return self._fall_back(repo, good, head, f"head {head[:12]} is not used: {why}", rejected)
        try:
            definitions = self._checkout(repo, head)
        except SyncError as exc:
            return self._fall_back(repo, good, head, f"cannot check out {head[:12]}: {exc}")
        broken = None if head == good else _broken(definitions)
        self._known_broken = (head, broken, definitions) if broken else None
        if broken is None:
            if head != good:
                self._remember_good(repo, head)
                logger.info("%s: %s is now at %s", self.codops, self.repository.url, head[:12])
            return self._result(head, head, None, definitions)
        if good is None:
            return self._result(head, head, f"{broken} (no earlier good commit to fall back to)", definitions)
        return self._fall_back(repo, good, head, f"head {head[:12]} is not used: {broken}", definitions)

    def _open(self) -> git.Repo:
        if (self.path / ".git").is_dir():
            try:
                return git.Repo(self.path)
            except git.InvalidGitRepositoryError:
                logger.warning("%s: %s is not a usable repository; cloning again", self.codops, self.path)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return git.Repo.init(self.path)

    def _fetch(self, repo: git.Repo) -> tuple[str, str | None]:
        """The branch head, fetched (the clone, on first use) unless already here; and the last good
        commit."""
        credentials = self.repository.credentials(self.environ)
        env = gitrun.child_environment(gitrun.install_askpass(self.askpass_dir), credentials)
        secret = credentials[1] if credentials else None
        url, branch = self.repository.url, self.repository.branch
        remote = f"refs/remotes/origin/{branch}"
        head = self.heads.head(url, branch, lambda: self._ls_remote(repo, env, secret))
        refs = self._known_refs if self._known_refs is not None else self._refs(repo)
        if refs.get(remote) == head:
            return head, refs.get(LAST_GOOD)
        refspec = f"+refs/heads/{branch}:{remote}"
        args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--", url, refspec]
        with self.heads.slots:
            self._git(repo, args, env, secret)
        refs = self._refs(repo)
        fetched = refs.get(remote)
        if fetched is None:
            raise SyncError(f"fetched branch {branch!r} but found no commit for it")
        self.heads.learned(url, branch, fetched)
        return fetched, refs.get(LAST_GOOD)

    def _ls_remote(self, repo: git.Repo, env: Mapping[str, str], secret: str | None) -> str:
        ref = f"refs/heads/{self.repository.branch}"
        listing = self._git(repo, ["ls-remote", "--", self.repository.url, ref], env, secret)
        for line in listing.splitlines():
            commit, _, name = line.partition("\t")
            if name == ref:
                return commit
        raise SyncError(f"branch {self.repository.branch!r}: the branch does not exist on the remote")

    def _checkout(self, repo: git.Repo, commit: str) -> Definitions:
        """Make the working tree exactly ``commit`` and return its definitions (cached per commit)."""
        if self._loaded is not None and self._loaded[0] == commit:
            return self._loaded[1]  # this process put the checkout at ``commit`` and nothing has moved it
        stale = Path(repo.git_dir) / "index.lock"  # left by a git killed on timeout; we hold the lock
        stale.unlink(missing_ok=True)
        self._loaded = None
        self._git(repo, ["checkout", "--quiet", "--force", "--detach", commit])
        self._git(repo, ["clean", "-ffdxq"])
        if self._loaded is None:
            secrets = None if self.secret_names is None else {self.codops: self.secret_names}
            definitions = load_definitions(
                self.path,
                allowed_codops=[self.codops],
                limits=self.limits,
                secrets=secrets,
                notifications={self.codops: self.notifications} if self.notifications else None,
            )
            self._loaded = (commit, definitions)
        return self._loaded[1]

    def _fall_back(
        self,
        repo: git.Repo,
        good: str | None,
        head: str | None,
        error: str,
        rejected: Definitions | None = None,
    ) -> SyncResult:
        """Serve the last good commit (else whatever the checkout holds) and say why (``rejected``: the
        broken head's definitions, whose problems are reported with their files and lines)."""
        target = good
        if target is None:
            try:
                target = self._git(repo, ["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]) or None
            except SyncError:
                target = None
        if target is None:
            return self._result(None, head, f"{error}; no commit to serve yet", None)
        try:
            definitions = self._checkout(repo, target)
        except SyncError as exc:
            return self._result(None, head, f"{error}; cannot check out {target[:12]}: {exc}", None)
        which = "last good" if good else "current"
        message = f"{error}; serving {which} commit {target[:12]}"
        return self._result(target, head, message, definitions, rejected)

    def _remember_good(self, repo: git.Repo, commit: str) -> None:
        try:
            self._git(repo, ["update-ref", LAST_GOOD, commit])
            if self._known_refs is not None:
                self._known_refs[LAST_GOOD] = commit
        except SyncError as exc:  # served all the same; the next sync tries again
            logger.warning("%s: cannot record %s as last good: %s", self.codops, commit[:12], exc)

    def _refs(self, repo: git.Repo) -> dict[str, str]:
        branch = f"refs/remotes/origin/{self.repository.branch}"
        listing = self._git(repo, ["for-each-ref", "--format=%(refname) %(objectname)", branch, LAST_GOOD])
        self._known_refs = dict(line.split(" ", 1) for line in listing.splitlines())
        return dict(self._known_refs)

    def _git(
        self, repo: git.Repo, args: list[str], env: Mapping[str, str] | None = None, secret: str | None = None
    ) -> str:
        return gitrun.run(repo, args, self.timeout, env, secret)

    def _result(
        self,
        commit: str | None,
        head: str | None,
        error: str | None,
        definitions: Definitions | None,
        rejected: Definitions | None = None,
    ) -> SyncResult:
        repo = self.repository
        return SyncResult(
            self.codops, repo.url, repo.branch, self.path, commit, head, error, definitions, rejected
        )


@dataclass(frozen=True)
class OrganisationTasks:
    """An organisation's runnable tasks across its repositories, and where each one comes from."""

    codops: str
    results: tuple[SyncResult, ...]
    tasks: tuple[Task, ...]
    sources: Mapping[str, SyncResult]  # task key -> the checkout (path, commit) it runs from
    problems: tuple[Problem, ...]  # validation problems, sync errors, tasks defined in two repositories
    invalid: tuple[tuple[InvalidTask, str | None], ...] = ()  # with the version it is invalid at


def sync_organisation(codops: str, syncs: Sequence[RepositorySync]) -> OrganisationTasks:
    """Sync every repository of ``codops`` (in order) and gather their tasks; the first definition of a
    task wins. Tasks can only be of ``codops``: each repository loads with it as the only allowed one."""
    results = tuple(sync.sync() for sync in syncs)
    tasks: dict[str, Task] = {}
    sources: dict[str, SyncResult] = {}
    invalid: dict[str, tuple[InvalidTask, str | None]] = {}
    problems = [problem for result in results for problem in _problems(result)]
    for result in results:
        for task in result.tasks:
            if task.key in sources:
                message = f"task {task.key} is already defined in {sources[task.key].url}; ignored"
                problems.append(Problem(task.file, task.line, f"{result.url}: {message}", task=task.name))
                continue
            tasks[task.key], sources[task.key] = task, result
        for bad in result.definitions.invalid if result.definitions else ():
            invalid.setdefault(bad.key, (bad, result.version))
    kept = tuple(pair for key, pair in invalid.items() if key not in tasks)
    return OrganisationTasks(codops, results, tuple(tasks.values()), sources, tuple(problems), kept)


def _problems(result: SyncResult) -> list[Problem]:
    """What one repository's sync has to report: its served commit's problems, and why the head is not
    served: a broken head's own errors at their files and lines, or the sync error (at the URL)."""
    problems = list(result.definitions.problems) if result.definitions else []
    if result.rejected is not None and result.head:
        note = f" (head {result.head[:12]}, not used; serving {result.version})"
        problems += [
            Problem(p.file, p.line, p.message + note, p.task, p.severity, p.cell)
            for p in result.rejected.errors
        ]
    elif result.error:
        problems.append(Problem(result.url, None, result.error))
    return problems


def repository_syncs(
    config: Config, environ: Mapping[str, str] | None = None, heads: RemoteHeads | None = None
) -> dict[str, tuple[RepositorySync, ...]]:
    """One ``RepositorySync`` per configured repository, by codops, all sharing ``heads`` (by default
    new ones with the configured freshness and parallelism)."""
    heads = heads or RemoteHeads(config.git.freshness, config.git.parallel)
    return {
        codops: tuple(
            RepositorySync(
                codops,
                repo,
                config.workspace,
                config.git.timeout,
                config.loops.limits,
                environ,
                heads,
                organisation.notifications,
                secret_names=tuple(organisation.secrets),
            )
            for repo in organisation.repositories
        )
        for codops, organisation in config.organisations.items()
    }


def checkout_name(repository: Repository) -> str:
    """A directory name that is readable and unique per (URL, branch)."""
    last = re.split(r"[/:]", repository.url.rstrip("/"))[-1].removesuffix(".git")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", last).strip(".-")[:40] or "repo"
    digest = hashlib.sha256(f"{repository.url}#{repository.branch}".encode()).hexdigest()[:10]
    return f"{stem}-{digest}"


def _broken(definitions: Definitions) -> str | None:
    """Why a head's definitions are not good enough to replace the last good ones, or None."""
    if not definitions.files:
        return "no task definitions (peach.yaml or peach.conf/*.yaml)"
    empty = [f for f in definitions.files if not any(t.file == f for t in definitions.tasks)]
    if not empty:
        return None
    errors = [str(p) for p in definitions.errors if p.file in empty] or [str(p) for p in definitions.errors]
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"{', '.join(empty)} define no valid task: {'; '.join(errors[:3])}{more}"


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
