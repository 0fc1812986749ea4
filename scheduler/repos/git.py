"""Running git for repository sync: every command supervised, credentials only in the child's environment.

Commands are built and started through GitPython (``Git.execute``), in their own session, and supervised
here: on timeout the whole process group (``git fetch`` and its ``git-remote-http`` helper alike) gets
SIGTERM, then SIGKILL, and is reaped.

How credentials reach git without landing in ``.git/config``, a process listing or a log: the URL never
carries them (the configuration refuses that); the child git gets ``GIT_ASKPASS`` pointing at a small
shell script that holds no secret and answers git's prompts from ``PEACH_GIT_USERNAME`` /
``PEACH_GIT_PASSWORD``, two variables set only in that child's environment. ``printf`` is a shell
builtin, so the answer is never an argument of any process. ``credential.helper`` is reset (through
``GIT_CONFIG_*`` variables) so no helper configured on the machine can store the secret or answer
instead, and ``GIT_TERMINAL_PROMPT=0`` makes a wrong or missing password fail at once instead of
waiting for a terminal.
"""

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import git

from scheduler.durations import format_duration
from scheduler.errors import SyncError, SyncTimeoutError

logger = logging.getLogger(__name__)

GRACE_SECONDS = 2.0
ASKPASS_NAME = "git-askpass"
ASKPASS = """#!/bin/sh
# peach-scheduler's GIT_ASKPASS helper. It holds no secret: it answers git's prompts from variables
# set only in the environment of the git process that runs it. printf is a builtin: no process list.
case "$1" in
    Username*) printf '%s\\n' "$PEACH_GIT_USERNAME" ;;
    *) printf '%s\\n' "$PEACH_GIT_PASSWORD" ;;
esac
"""
_AUTH_FAILED = ("Authentication failed", "could not read Username", "could not read Password", "error: 403")


def install_askpass(directory: Path) -> Path:
    """Write the askpass helper into ``directory`` (once; atomically) and return its path. Safe from many
    threads at once: each writes its own temporary file (a per-process name was shared by every thread of
    the service, so two organisations' first syncs at the same moment lost one another's file)."""
    path = directory / ASKPASS_NAME
    if path.is_file() and os.access(path, os.X_OK) and path.read_text(encoding="utf-8") == ASKPASS:
        return path
    directory.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=directory, prefix=f".{ASKPASS_NAME}.")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(ASKPASS)
    os.chmod(partial, 0o700)
    os.replace(partial, path)
    return path


def child_environment(askpass: Path, credentials: tuple[str, str] | None) -> dict[str, str]:
    """Variables added to the environment of one git child (never to the scheduler's own)."""
    count = int(os.environ.get("GIT_CONFIG_COUNT", "0") or 0)
    username, password = credentials or ("", "")
    return {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": str(askpass),
        "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"),
        "GIT_CONFIG_COUNT": str(count + 1),
        f"GIT_CONFIG_KEY_{count}": "credential.helper",
        f"GIT_CONFIG_VALUE_{count}": "",
        "PEACH_GIT_USERNAME": username,
        "PEACH_GIT_PASSWORD": password,
    }


def run(
    repo: git.Repo,
    args: list[str],
    timeout: float,
    env: Mapping[str, str] | None = None,
    secret: str | None = None,
) -> str:
    """Run ``git ARGS`` in ``repo`` and return its stdout; raise SyncError (SyncTimeoutError on expiry).

    ``secret``, when given, is masked in any message built from git's output.
    """
    try:
        handle = repo.git.execute(["git", *args], as_process=True, env=env, start_new_session=True)
    except git.GitCommandNotFound as exc:
        raise SyncError(f"cannot run git: {exc}") from None
    proc = cast("subprocess.Popen[bytes]", handle.proc)  # GitPython hands over the running process
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise SyncTimeoutError(
            f"git {args[0]} did not finish within {format_duration(timeout)} and was killed"
        ) from None
    if proc.returncode != 0:
        raise SyncError(explain(err.decode("utf-8", "replace"), secret))
    return out.decode("utf-8", "replace").strip()


def explain(stderr: str, secret: str | None = None) -> str:
    """Turn git's error output into one sentence an operator can act on."""
    if secret:
        stderr = stderr.replace(secret, "**********")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    detail = lines[-1].removeprefix("fatal: ").removeprefix("error: ") if lines else "no message"
    if any(marker in stderr for marker in _AUTH_FAILED):
        return f"authentication failed: check the repository's credentials (git: {detail})"
    if "couldn't find remote ref" in stderr:
        return f"the branch does not exist on the remote (git: {detail})"
    return detail


def _kill_group(proc: "subprocess.Popen[bytes]") -> None:
    """SIGTERM the child's process group, SIGKILL it after a grace period, and reap the child."""
    for sig, wait in ((signal.SIGTERM, GRACE_SECONDS), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.communicate(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            logger.debug("git process group %d ignored SIGTERM; sending SIGKILL", proc.pid)
