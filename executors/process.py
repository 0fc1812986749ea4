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

The parts: ``LocalProcess`` is one child with the run's log (what every executor that runs something on
this host shares: the python executor's interpreter, spark-submit for a local driver or as the YARN
client); a ``Launcher`` holds how children are run and makes them; ``ProcessExecution`` is a run that is
one child. ``Launcher.recover`` closes local runs after a restart (survivors killed, closed LOST).
"""

import contextlib
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from executors.base import (
    Deadline,
    Execution,
    ExecutionManifest,
    Outcome,
    Recovery,
    RunningRun,
    RunRequest,
    pid_handle,
)
from executors.cgroups import MemoryCgroups, RunCgroup
from executors.logs import CappedLog, LogLimits, LogPump
from executors.masking import Masker
from executors.progress import Progress, ProgressScanner
from scheduler.capacity import describe_mib
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


@dataclass(frozen=True)
class Launcher:
    """How local child processes are run, shared by every executor that starts one (python, spark-submit):
    the log's limits, the grace between SIGTERM and SIGKILL, and the injected OS (``/proc``, clocks,
    ``Popen``)."""

    limits: LogLimits = field(default_factory=LogLimits)
    grace: float = 10.0
    proc_root: Path = PROC
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    popen: Popen = subprocess.Popen
    cgroups: MemoryCgroups | None = None  # where a run with a memory cap gets its cgroup (None: no caps)

    def process(
        self,
        request: RunRequest,
        command: list[str],
        env: dict[str, str],
        cwd: Path,
        log_path: Path,
        on_output: Callable[[bytes], None] | None = None,
        masker: Masker | None = None,
    ) -> "LocalProcess":
        return LocalProcess(request, command, env, cwd, log_path, self, on_output, masker)

    def recover(self, running: Sequence[RunningRun]) -> Recovery:
        """Local runs after a restart: their output went through the scheduler, which is gone, so a
        survivor is killed rather than followed (its log could no longer be captured); all close LOST.
        Processes are found by the run's marker in their environment, not by a pid that may be reused."""
        recovery = Recovery()
        for run in running:
            pids = find_run_processes(run.run_id, self.proc_root)
            if pids:
                stop_run(run.run_id, grace=2.0, proc_root=self.proc_root)
                summary = (
                    "the scheduler restarted while this run was going; its output could no longer be "
                    f"captured, so its processes ({', '.join(map(str, sorted(pids)))}) were killed"
                )
            else:
                summary = "the scheduler stopped while this run was going; its process was gone at restart"
            recovery.close(run.run_id, RunStatus.LOST, summary)
        return recovery


class LocalProcess:
    """One local child of a run, with the run's log: started in its own session carrying the run marker,
    its output pumped into the capped log (progress lines scanned and told to ``on_progress``, every chunk
    also shown to ``on_output``: spark on YARN finds its application id there), every process of the run
    stopped, the child always reaped.

    ``note`` and ``output`` may be called from any thread (they take the pump's lock).
    """

    def __init__(
        self,
        request: RunRequest,
        command: list[str],
        env: dict[str, str],
        cwd: Path,
        log_path: Path,
        launcher: Launcher,
        on_output: Callable[[bytes], None] | None = None,
        masker: Masker | None = None,
    ) -> None:
        self.request, self.run_id, self.key = request, request.run_id, request.task.key
        self.masker = masker or Masker(())  # the run's secret values, masked in its log
        self.command, self.env, self.cwd = command, {**env, RUN_MARKER: request.run_id}, cwd
        self.log_path, self.launcher, self.on_output = log_path, launcher, on_output
        self.on_progress: Callable[[Progress], None] | None = None  # told each progress line (pump thread)
        self.pid: int | None = None
        self.started_at: float | None = None
        self.log: CappedLog | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self._pump: LogPump | None = None
        self._scanner = ProgressScanner(self._reported, self.note, launcher.wall)
        self.cgroup: RunCgroup | None = None  # the run's memory cgroup, while it goes
        self.peak_memory_bytes: int | None = None  # read from the cgroup when the run is reaped
        self.out_of_memory: str | None = None  # "killed: out of memory (limit 4 GiB)" when the cap killed it

    def start(self) -> None:
        """Open the log and start the child; raises ``ExecutionError`` (log closed) if either fails."""
        task, launcher = self.request.task, self.launcher
        try:
            self.log = CappedLog(
                self.log_path, launcher.limits, launcher.clock, launcher.wall, masker=self.masker
            )
            self.log.note(f"run {self.run_id}: task {task.key} version {self.request.version or '-'}")
        except OSError as exc:
            raise ExecutionError(f"run {self.run_id}: cannot write its log {self.log_path}: {exc}") from exc
        command = self.command
        if self.request.memory_mib and launcher.cgroups is not None:
            try:
                self.cgroup = launcher.cgroups.create(self.run_id, self.request.memory_mib)
            except OSError as exc:
                self.log.note(f"could not create its memory cgroup: {exc}")
                self.log.close()
                raise ExecutionError(f"run {self.run_id}: could not create its memory cgroup: {exc}") from exc
            command = self.cgroup.wrap(command)
            self.log.note(
                f"memory cap {describe_mib(self.request.memory_mib)} ({launcher.cgroups.describe()})"
            )
        try:
            self._proc = launcher.popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            self.log.note(f"could not start {self.command[0]}: {exc}")
            self.log.close()
            self._leave_cgroup()
            raise ExecutionError(f"run {self.run_id}: could not start {self.command[0]}: {exc}") from exc
        self.pid = self._proc.pid
        self.started_at = launcher.wall()
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._pidfd = None  # polled instead
        assert self._proc.stdout is not None
        self._pump = LogPump(
            self._proc.stdout.fileno(), self.log, f"{self.run_id} ({task.key})", self._output
        )
        self._pump.start()
        log.debug("run %s (%s): started as pid %d", self.run_id, task.key, self.pid)

    def _output(self, chunk: bytes) -> None:
        try:
            self._scanner.feed(chunk)
        except Exception:  # progress is a nicety: it must never stop the log
            log.exception("run %s (%s): reading progress from its output failed", self.run_id, self.key)
        if self.on_output is not None:
            self.on_output(chunk)

    def _reported(self, progress: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)

    def note(self, text: str) -> None:
        """A ``[peach]`` line in the run's log."""
        assert self.log is not None and self._pump is not None
        with self._pump.lock:
            self.log.note(text)

    def output(self, data: bytes) -> None:
        """Output from elsewhere (the driver's logs fetched from YARN) into the run's log."""
        assert self.log is not None and self._pump is not None
        with self._pump.lock:
            self.log.output(data)

    def poll(self) -> int | None:
        assert self._proc is not None
        return self._proc.poll()

    def exited(self, timeout: float | None) -> bool:
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
                with contextlib.suppress(OSError, ValueError):  # closed by a concurrent stop: re-check
                    select.select([self._pidfd], [], [], step)
            else:
                time.sleep(min(step, 0.05))

    def leftovers(self) -> bool:
        """Whether any process of the run is alive (the child, or what it spawned)."""
        return bool(find_run_processes(self.run_id, self.launcher.proc_root))

    def _sweep(self, sig: int) -> set[int]:
        group = self.pid if self._proc is not None and self._proc.returncode is None else None
        return signal_run(self.run_id, sig, self.launcher.proc_root, group)

    def stop(self) -> None:
        """SIGTERM to everyone, up to ``grace`` for them to go, then SIGKILL until nobody is left."""
        if not self._sweep(signal.SIGTERM) and self.exited(0):
            return
        end = time.monotonic() + self.launcher.grace
        while time.monotonic() < end:
            if not self.exited(0.05):
                continue
            if not self.leftovers():
                return
            time.sleep(0.05)  # polling leftovers that are not our children, up to the grace deadline
        end = time.monotonic() + 10
        while self._sweep(signal.SIGKILL) or not self.exited(0.05):
            if time.monotonic() > end:
                log.error("run %s (%s): processes survive SIGKILL: %s", self.run_id, self.key, self._sweep(0))
                return

    def reap(self) -> int:
        """After ``stop``: reap the child, read the rest of its output; its return code."""
        assert self._proc is not None and self._pump is not None
        returncode = self._proc.wait()
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            os.close(pidfd)
        if not self._pump.stop(timeout=5):
            self.note("output still held open by an untracked process: stopped reading it")
        self._scanner.close()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._leave_cgroup()
        return returncode

    def _leave_cgroup(self) -> None:
        """Its peak memory and whether its cap killed it, read from the cgroup; then the cgroup removed."""
        group, self.cgroup = self.cgroup, None
        if group is None:
            return
        self.peak_memory_bytes = group.peak_bytes()
        if group.oom_killed():
            self.out_of_memory = f"killed: out of memory (limit {describe_mib(group.limit_bytes // 2**20)})"
        group.remove()


class ProcessExecution(Execution):
    """A run that is one local child process (and whatever it spawns): the python executor's, and spark's
    with a local driver. ``cleanup`` runs once when the run is over (release the environment, remove the
    work directory), and also when it cannot start."""

    def __init__(
        self,
        process: LocalProcess,
        *,
        cleanup: Callable[[], None] | None = None,
        manifest: ExecutionManifest | None = None,
    ) -> None:
        super().__init__(process.run_id, process.key, process.log_path, manifest=manifest)
        self.request, self.process, self._cleanup = process.request, process, cleanup
        self.masker = process.masker
        process.on_progress = self.reported
        self.pid: int | None = None
        self._ending = threading.Lock()

    def start(self) -> None:
        if self.started:
            raise ExecutionError(f"run {self.run_id} was already started")
        try:
            self.process.start()
        except ExecutionError:
            release(self, self._cleanup)
            raise
        self.pid = self.process.pid
        self.handle = pid_handle(self.pid) if self.pid is not None else None
        self.deadline = Deadline.after(self.request.timeout, self.process.launcher.clock)
        self.started = True

    def _poll(self, timeout: float | None) -> bool:
        return self.process.exited(timeout)

    def _end(self, status: RunStatus | None, why: str) -> Outcome:
        with self._ending:
            if self.outcome is not None:
                return self.outcome
            process = self.process
            if status is not None and process.exited(0):
                status = None  # it ended by itself before the timeout or kill could act
            if status is not None:
                process.note(
                    f"{why}: stopping the run (SIGTERM, {process.launcher.grace:g} s grace, then SIGKILL)"
                )
                log.warning("run %s (%s): stopping it: %s", self.run_id, self.key, why)
            elif process.leftovers():
                process.note("the task exited but left processes behind: stopping them")
            process.stop()
            returncode = process.reap()
            self.outcome = close_process(self, process, exit_outcome(process, status, why, returncode))
            release(self, self._cleanup)
            return self.outcome


def exit_outcome(process: LocalProcess, status: RunStatus | None, why: str, returncode: int) -> Outcome:
    """How a local process run ended, from its return code and why it was stopped (None: by itself)."""
    assert process.log is not None
    words = describe_exit(returncode)
    if status is None and process.out_of_memory and returncode != 0:
        status, summary = RunStatus.FAILED, process.out_of_memory
    elif status is None:
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
        error=process.log.last_line() if status is RunStatus.FAILED else None,
        started_at=process.started_at,
        finished_at=process.launcher.wall(),
        peak_memory_bytes=process.peak_memory_bytes,
    )


def close_process(execution: Execution, process: LocalProcess, outcome: Outcome) -> Outcome:
    """The run's last log line, the log closed, and the outcome completed with the handle and log sizes."""
    assert process.log is not None
    process.note(f"run ended: {outcome.status.value}: {outcome.summary}")
    process.log.close()
    if process.log.failure is not None:
        outcome = replace(outcome, summary=f"{outcome.summary}; log incomplete: {process.log.failure}")
    outcome = replace(
        outcome, handle=execution.handle, log_bytes=process.log.stored, log_dropped=process.log.dropped
    )
    log.debug("run %s (%s): %s: %s", execution.run_id, execution.key, outcome.status.value, outcome.summary)
    return outcome


def release(execution: Execution, cleanup: Callable[[], None] | None) -> None:
    """Run an execution's cleanup; a failure is logged, never raised."""
    if cleanup is not None:
        try:
            cleanup()
        except Exception:
            log.exception("run %s (%s): cleaning up after it failed", execution.run_id, execution.key)
