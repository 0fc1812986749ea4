"""Child processes of a run: their own session, every descendant found, all of them killed, always reaped.

Finding descendants. The child starts in a new session (so a group kill reaches everything that stays in
its process group), and its environment carries ``PEACH_RUN_ID=<run id>``. Environments are inherited,
so every descendant carries the marker too, including ones that ``setsid`` or ``setpgid`` out of the
group, or are orphaned to init: ``find_run_processes`` scans ``/proc/*/environ`` for the marker and adds
the descendants (by parent pid) of what it found and of the still-unreaped child. Only a process that
both leaves the session and execs with a scrubbed environment after its parent died escapes this. The
same scan finds a run's processes again after a scheduler restart.

Ending a run: SIGTERM to the group and to every marked process, a grace period, then SIGKILL, repeated
until a scan finds nobody, then the child is reaped. The child is left unreaped (``waitid(WNOWAIT)``)
until its group is swept, so its pid cannot be reused as a group id meanwhile. When the child exits
by itself, leftovers it spawned are swept the same way: no process outlives its run.
"""

import contextlib
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from executors.base import Execution, Outcome, RunRequest
from executors.logs import CappedLog, LogLimits, LogPump
from executors.progress import Progress, ProgressScanner
from scheduler.errors import ExecutionError
from scheduler.status import RunStatus

log = logging.getLogger(__name__)

RUN_MARKER = "PEACH_RUN_ID"
PROC = Path("/proc")

Popen = Callable[..., "subprocess.Popen[bytes]"]


def _stat(proc_root: Path, pid: str) -> tuple[int, str] | None:
    """(parent pid, state letter) of one process, None if it is gone."""
    try:
        text = (proc_root / pid / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def find_run_processes(run_id: str, proc_root: Path = PROC, roots: Iterable[int] = ()) -> set[int]:
    """Live (non-zombie) processes of a run: marked ones, and every descendant of them and of ``roots``."""
    marker = f"{RUN_MARKER}={run_id}".encode()
    children: dict[int, list[int]] = {}
    alive: set[int] = set()
    found: set[int] = set()
    try:
        entries = [entry.name for entry in os.scandir(proc_root) if entry.name.isdigit()]
    except OSError:
        return set()
    for name in entries:
        stat = _stat(proc_root, name)
        if stat is None or stat[1] in "ZXx":
            continue
        pid = int(name)
        alive.add(pid)
        children.setdefault(stat[0], []).append(pid)
        try:
            environ = (proc_root / name / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.add(pid)
    stack = [*found, *roots]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return (found & alive) - {os.getpid()}


def signal_run(run_id: str, sig: int, proc_root: Path = PROC, group: int | None = None) -> set[int]:
    """Send ``sig`` to a run's process group (if given) and to every process of the run; the pids hit."""
    if group is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
    hit = set()
    for pid in find_run_processes(run_id, proc_root, () if group is None else (group,)):
        try:
            os.kill(pid, sig)
            hit.add(pid)
        except ProcessLookupError:
            pass
    return hit


def stop_run(run_id: str, grace: float = 10.0, proc_root: Path = PROC) -> int:
    """Stop every process of a run that is not our child (one found again after a scheduler restart):
    SIGTERM, up to ``grace`` seconds, then SIGKILL until none is left. Returns how many were found."""
    found = signal_run(run_id, signal.SIGTERM, proc_root)
    end = time.monotonic() + grace
    while found and time.monotonic() < end and find_run_processes(run_id, proc_root):
        time.sleep(0.05)
    end = time.monotonic() + 10
    while signal_run(run_id, signal.SIGKILL, proc_root) and time.monotonic() < end:
        time.sleep(0.01)
    return len(found)


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``killed by SIGKILL``."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


class ProcessExecution(Execution):
    """A run that is one local child process (and whatever it spawns). ``kill`` may come from any thread.

    ``cleanup`` runs once when the run is over (release the environment, remove the work directory);
    ``on_output`` sees every chunk of raw output on the reader thread (spark: find the application id);
    progress lines in the output (``executors.progress``) update ``progress``;
    ``stopping`` is the hook for a remote side to stop on a timeout or kill.
    """

    def __init__(
        self,
        request: RunRequest,
        command: list[str],
        env: dict[str, str],
        cwd: Path,
        log_path: Path,
        *,
        limits: LogLimits | None = None,
        grace: float = 10.0,
        proc_root: Path = PROC,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        popen: Popen = subprocess.Popen,
        cleanup: Callable[[], None] | None = None,
        on_output: Callable[[bytes], None] | None = None,
    ) -> None:
        super().__init__(request, log_path)
        self._on_output = on_output
        self.command, self.env, self.cwd = command, {**env, RUN_MARKER: request.run_id}, cwd
        self.limits, self.grace, self.proc_root = limits or LogLimits(), grace, proc_root
        self._clock, self._wall, self._popen, self._cleanup = clock, wall, popen, cleanup
        self._proc: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self._log: CappedLog | None = None
        self._pump: LogPump | None = None
        self._deadline: float | None = None
        self._started_at: float | None = None
        self._ending = threading.Lock()
        self._progress = ProgressScanner(self._reported, self._note, wall)

    def start(self) -> None:
        if self._proc is not None:
            raise ExecutionError(f"run {self.run_id} was already started")
        task = self.request.task
        try:
            self._log = CappedLog(self.log_path, self.limits, self._clock, self._wall)
            self._log.note(f"run {self.run_id}: task {task.key} version {self.request.version or '-'}")
        except OSError as exc:
            self._release()
            raise ExecutionError(f"run {self.run_id}: cannot write its log {self.log_path}: {exc}") from exc
        try:
            self._proc = self._popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            self._log.note(f"could not start {self.command[0]}: {exc}")
            self._log.close()
            self._release()
            raise ExecutionError(f"run {self.run_id}: could not start {self.command[0]}: {exc}") from exc
        self.pid = self._proc.pid
        self._started_at = self._wall()
        if self.request.timeout is not None:
            self._deadline = self._clock() + self.request.timeout
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._pidfd = None  # polled instead
        assert self._proc.stdout is not None
        label = f"{self.run_id} ({task.key})"
        self._pump = LogPump(self._proc.stdout.fileno(), self._log, label, self._output)
        self._pump.start()
        log.info("run %s (%s): started as pid %d", self.run_id, task.key, self.pid)

    def wait(self, until: float | None = None) -> Outcome | None:
        if self._proc is None:
            raise ExecutionError(f"run {self.run_id} was not started")
        while self.outcome is None:
            now = self._clock()
            if self._deadline is not None and now >= self._deadline:
                return self._end(RunStatus.TIMED_OUT, f"timeout {self.request.timeout:g} s")
            limits = [t for t in (until, self._deadline) if t is not None]
            if self._exited(None if not limits else max(0.0, min(limits) - now)):
                return self._end(None, "")
            if until is not None and self._clock() >= until and not self._timed_out():
                return None
        return self.outcome

    def kill(self, reason: str) -> Outcome:
        if self._proc is None:
            raise ExecutionError(f"run {self.run_id} was not started")
        return self._end(RunStatus.KILLED, reason)

    def _output(self, chunk: bytes) -> None:
        try:
            self._progress.feed(chunk)
        except Exception:  # progress is a nicety: it must never stop the log
            log.exception("run %s (%s): reading progress from its output failed", self.run_id, self.key)
        if self._on_output is not None:
            self._on_output(chunk)

    def _reported(self, progress: Progress) -> None:
        self.progress = progress

    def stopping(self, status: RunStatus, why: str) -> None:
        """Called once before a timeout or kill stops the local processes. A subclass with a remote side
        (spark on YARN: kill the application through the ResourceManager) does that here."""

    def _timed_out(self) -> bool:
        return self._deadline is not None and self._clock() >= self._deadline

    def _exited(self, timeout: float | None) -> bool:
        """Whether the child has exited, waiting up to ``timeout``; it stays unreaped (a zombie)."""
        assert self._proc is not None
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._proc.returncode is not None:
                return True
            try:
                if os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    return True
            except ChildProcessError:
                return True
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return False
            step = 1.0 if left is None else min(left, 1.0)
            if self._pidfd is not None:
                with contextlib.suppress(OSError, ValueError):  # closed by a concurrent kill: re-check
                    select.select([self._pidfd], [], [], step)
            else:
                time.sleep(min(step, 0.05))

    def _note(self, text: str) -> None:
        assert self._log is not None and self._pump is not None
        with self._pump.lock:
            self._log.note(text)

    def _sweep(self, sig: int) -> set[int]:
        group = self.pid if self._proc is not None and self._proc.returncode is None else None
        return signal_run(self.run_id, sig, self.proc_root, group)

    def _stop_everything(self) -> None:
        """SIGTERM to everyone, up to ``grace`` for them to go, then SIGKILL until nobody is left."""
        if not self._sweep(signal.SIGTERM) and self._exited(0):
            return
        end = time.monotonic() + self.grace
        while time.monotonic() < end:
            if not self._exited(0.05):
                continue
            if not find_run_processes(self.run_id, self.proc_root):
                return
            time.sleep(0.05)  # polling leftovers that are not our children, up to the grace deadline
        end = time.monotonic() + 10
        while self._sweep(signal.SIGKILL) or not self._exited(0.05):
            if time.monotonic() > end:
                log.error("run %s (%s): processes survive SIGKILL: %s", self.run_id, self.key, self._sweep(0))
                return

    def _end(self, status: RunStatus | None, why: str) -> Outcome:
        with self._ending:
            if self.outcome is not None:
                return self.outcome
            assert self._proc is not None and self._pump is not None and self._log is not None
            if status is not None and self._exited(0):
                status = None  # it ended by itself before the timeout or kill could act
            if status is not None:
                self._note(f"{why}: stopping the run (SIGTERM, {self.grace:g} s grace, then SIGKILL)")
                log.warning("run %s (%s): stopping it: %s", self.run_id, self.key, why)
                self.stopping(status, why)
            elif find_run_processes(self.run_id, self.proc_root):
                self._note("the task exited but left processes behind: stopping them")
            self._stop_everything()
            returncode = self._proc.wait()
            pidfd, self._pidfd = self._pidfd, None
            if pidfd is not None:
                os.close(pidfd)
            if not self._pump.stop(timeout=5):
                self._note("output still held open by an untracked process: stopped reading it")
            self._progress.close()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            outcome = self._outcome(status, why, returncode)
            self._note(f"run ended: {outcome.status.value}: {outcome.summary}")
            self._log.close()
            self._release()
            if self._log.failure is not None:
                outcome = replace(outcome, summary=f"{outcome.summary}; log incomplete: {self._log.failure}")
            self.outcome = replace(outcome, log_bytes=self._log.stored, log_dropped=self._log.dropped)
            log.info("run %s (%s): %s: %s", self.run_id, self.key, outcome.status.value, outcome.summary)
            return self.outcome

    def _outcome(self, status: RunStatus | None, why: str, returncode: int) -> Outcome:
        assert self._log is not None
        words = describe_exit(returncode)
        if status is None:
            status = RunStatus.SUCCEEDED if returncode == 0 else RunStatus.FAILED
            summary = words
        elif status is RunStatus.TIMED_OUT:
            summary = f"{words} after {why}" if returncode < 0 else f"{why} reached; {words} after SIGTERM"
        else:
            summary = f"{words}: {why}" if returncode < 0 else f"{why}; {words} after SIGTERM"
        return Outcome(
            status=status,
            summary=summary,
            exit_code=returncode if returncode >= 0 else None,
            signal=-returncode if returncode < 0 else None,
            error=self._log.last_line() if status is RunStatus.FAILED else None,
            application_id=self.application_id,
            started_at=self._started_at,
            finished_at=self._wall(),
        )

    def _release(self) -> None:
        if self._cleanup is not None:
            try:
                self._cleanup()
            except Exception:
                log.exception("run %s (%s): cleaning up after it failed", self.run_id, self.key)
