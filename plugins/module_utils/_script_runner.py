# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""Run one checked pre- or post-script: argv, shebang, clean environment, deadline, retries.

* The script runs from the sealed in-memory copy of its checked bytes (``/proc/self/fd/<n>``,
  see ``_permissions.CheckedScript``), never from its path; the file's descriptor is looked at
  again right before each run and a change is reported in the result's ``warning`` (the checked
  bytes run regardless; without a sealed copy a change is a refusal). An
  executable file is executed directly, so the kernel honours its ``#!`` line (and runs ELF
  binaries); a file without the execute bit but with a ``#!`` line runs under that interpreter;
  anything else runs under ``/bin/sh`` as in the reference. ``$0`` is therefore
  ``/proc/self/fd/<n>``, not the configured path: scripts that need their own location (for
  ``dirname "$0"``) find it in ``VMSNAPSHOT_SCRIPT_PATH``.
* Parameters are argv (no shell), the environment is only PATH, LANG, HOME and
  VMSNAPSHOT_SCRIPT_PATH, cwd is ``/``,
  stdin is ``/dev/null``, and each attempt leads its own session and process group.
* Completion is waited on, not polled: one selector over both output pipes and a wake-up pipe
  written when the child exits. Output is drained continuously; the last 8 KiB per stream is kept.
* One deadline covers all attempts. On expiry the attempt's processes get SIGTERM, then SIGKILL
  after a 0.5 s grace. "The attempt's processes" are those in its process group or session and
  its descendants by parent pid. A process that left the session (setsid) *and* lost its parent
  (a daemon's double fork) before the deadline is linked to the script by nothing the kernel
  keeps without cgroups, and is not found.
* A script that exits 0 may leave processes behind on purpose (a lock holder the post-script
  stops): they are not killed, and their output is drained and dropped in the background so that
  they never block on a full pipe or get SIGPIPE while the module runs.
* Scripts die with the module: each attempt's leader gets ``PR_SET_PDEATHSIG`` (SIGKILL) and
  exits at once if the module was already gone when it was set. Its processes in other groups
  are found by the next run: `on_start` hands each attempt's (pid, start time) to the caller,
  which records it with the interrupted run, and ``end_group`` ends what is left of that group
  and session - never a reused pid, since the start time must match while the leader lives,
  and the kernel does not reuse a pid still naming a live group or session.
* Each attempt starts with every signal at its default and none blocked: what the module
  ignores while it finishes an interrupted run is not inherited by the post-script.
* Success is exit code 0 only; a negative exit code means the script died of that signal.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Callable

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._permissions import (
    CheckedScript,
)

SCRIPT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
TAIL_BYTES = 8192
KILL_GRACE_SECONDS = 0.5
_KILL_ROUNDS = 5
_REAP_SECONDS = 5.0
_READ_SIZE = 65536
_DRAIN_LIMIT = 16
_SHEBANG_BYTES = 256
_PR_SET_PDEATHSIG = 1
# Loaded now, not in the forked child (which must not import or load anything).
try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not glibc/musl: scripts then rely on end_group only
    _PRCTL = None

OnStart = Callable[[int, int], None]


@dataclass(frozen=True)
class ScriptResult:
    path: str
    exit_code: int | None
    attempts: int
    duration_ms: int
    timed_out: bool
    stdout_tail: str
    stderr_tail: str
    error: str | None = None
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def as_dict(self) -> dict:
        result = {**asdict(self), "ok": self.ok}
        if self.warning is None:  # present only when the file changed after the check
            del result["warning"]
        return result


class _Tail:
    """The last `limit` bytes written to one stream."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        extra = len(self.data) - self.limit
        if extra > 0:
            del self.data[:extra]
            self.dropped += extra

    def text(self) -> str:
        text = self.data.decode("utf-8", "replace")
        return f"[{self.dropped} earlier bytes dropped]\n{text}" if self.dropped else text


def command_for(script: CheckedScript) -> list[str]:
    """The argv prefix that runs the script's sealed copy (see the module docstring)."""
    fd_path = f"/proc/self/fd/{script.run_fd}"
    head = os.pread(script.run_fd, _SHEBANG_BYTES, 0)
    if script.executable and (head.startswith(b"#!") or head.startswith(b"\x7fELF")):
        return [fd_path]
    if head.startswith(b"#!"):
        # The kernel's rule: interpreter up to the first blank, the rest is one argument.
        line = head[2:].split(b"\n", 1)[0].strip(b" \t")
        interpreter, _blank, argument = line.replace(b"\t", b" ").partition(b" ")
        if interpreter:
            extra = [os.fsdecode(argument.strip())] if argument.strip() else []
            return [os.fsdecode(interpreter), *extra, fd_path]
    return ["/bin/sh", fd_path]


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (stat field 22), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2 :].split()[19])


def end_group(leader: int, started: int) -> str | None:
    """End what is left of an attempt of an earlier run (its group, session, descendants).

    Returns a sentence saying what was ended, or None when nothing of it is left.
    """
    if leader <= 1 or leader == os.getpid():
        return None  # never a signal to every process (kill(-1)) or to ourselves
    now = start_time(leader)
    if now is not None and now != started:
        return None  # the pid names another process now; the old group is gone
    members = _members(leader)
    if not members:
        return None
    leftover = _kill_tree(leader)
    ended = f"ended processes {sorted(members)} left by an earlier run's script"
    return f"{ended}; {leftover}" if leftover else ended


def _default_signals() -> None:
    """Every signal back to its default and none blocked, as in a fresh process.

    The module ignores a second SIGINT/SIGTERM while it finishes an interrupted run, and an
    ignored signal stays ignored across exec: a post-script run then, and every helper it
    starts, would ignore the SIGTERM that is meant to stop them.
    """
    for signum in signal.valid_signals():
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            with contextlib.suppress(OSError, ValueError):  # signals the C library keeps
                signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec function: default signals, and SIGKILL this child when the module dies (see
    the docstring)."""

    def preexec() -> None:
        _default_signals()
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the module died before the death signal was set
            os._exit(127)

    return preexec


def _process_table() -> dict[int, tuple[str, int, int, int]]:
    """pid -> (state, ppid, process group, session) for every process in /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        table[int(name)] = (fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]))
    return table


def _members(leader: int) -> set[int]:
    """Live processes of the attempt led by `leader`: its group, its session, its descendants."""
    table = _process_table()
    found = {pid for pid, (*_state, group, session) in table.items() if leader in (group, session)}
    children: dict[int, list[int]] = {}
    for pid, (_state, parent, *_ids) in table.items():
        children.setdefault(parent, []).append(pid)
    stack = [leader]
    while stack:
        pid = stack.pop()
        found.add(pid)
        stack.extend(children.get(pid, ()))
    alive = {pid for pid in found if pid in table and table[pid][0] not in "ZX"}
    return alive - {0, 1, os.getpid()}


def _signal(leader: int, pids: Iterable[int], signum: int) -> None:
    for target in (-leader, *pids):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signum)


def _wait_gone(pids: Iterable[int], timeout: float) -> None:
    """Block until every pid has exited or `timeout` passed (on pidfds; without them, sleep)."""
    selector = selectors.DefaultSelector()
    try:
        for pid in pids:
            try:
                selector.register(os.pidfd_open(pid), selectors.EVENT_READ)
            except ProcessLookupError:
                continue
            except (AttributeError, OSError):
                time.sleep(timeout)  # no pidfd (kernel < 5.3): wait out the whole grace
                return
        deadline = time.monotonic() + timeout
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _events in selector.select(remaining):
                selector.unregister(key.fd)
                os.close(key.fd)
    finally:
        for key in list(selector.get_map().values()):
            os.close(key.fd)
        selector.close()


def _kill_tree(leader: int) -> str | None:
    """SIGTERM the attempt's processes, SIGKILL what is left after the grace; report leftovers."""
    members = _members(leader)
    _signal(leader, members, signal.SIGTERM)
    _wait_gone(members, KILL_GRACE_SECONDS)
    for _round in range(_KILL_ROUNDS):
        members = _members(leader)
        if not members:
            return None
        _signal(leader, members, signal.SIGKILL)
        _wait_gone(members, 1.0)
    members = _members(leader)
    return f"processes {sorted(members)} did not exit after SIGKILL" if members else None


def _discard(fd: int) -> None:
    """Keep reading a pipe that a left-behind process still holds, dropping the data."""

    def run() -> None:
        os.set_blocking(fd, True)
        try:
            while os.read(fd, _READ_SIZE):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)

    threading.Thread(target=run, name=f"discard-fd{fd}", daemon=True).start()


def _drain_now(fd: int, tail: _Tail) -> bool:
    """Read what the pipe holds right now; True at end of file."""
    os.set_blocking(fd, False)
    for _chunk in range(_DRAIN_LIMIT):
        try:
            chunk = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return False
        if not chunk:
            return True
        tail.add(chunk)
    return False


def _attempt(
    argv: Sequence[str],
    fd: int,
    deadline: float,
    env: dict[str, str],
    on_start: OnStart | None = None,
) -> tuple[int | None, bool, str, str, str | None]:
    """Run once until exit or deadline: (exit code, timed out, stdout, stderr, error)."""
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out_write,
            stderr=err_write,
            cwd="/",
            env=env,
            start_new_session=True,
            pass_fds=(fd,),
            preexec_fn=_die_with_parent(os.getpid()),
        )
    except OSError as exc:
        os.close(out_read)
        os.close(err_read)
        return None, False, "", "", f"it cannot be started: {exc.strerror}"
    finally:
        os.close(out_write)
        os.close(err_write)

    if on_start is not None:
        started = start_time(proc.pid)
        if started is not None:
            on_start(proc.pid, started)
    wake_read, wake_write = os.pipe()

    def wait_for_exit() -> None:
        proc.wait()
        os.write(wake_write, b"x")

    waiter = threading.Thread(target=wait_for_exit, name=f"wait-{proc.pid}", daemon=True)
    waiter.start()
    tails = {out_read: _Tail(), err_read: _Tail()}
    open_pipes = dict(tails)
    selector = selectors.DefaultSelector()
    for pipe, tail in tails.items():
        selector.register(pipe, selectors.EVENT_READ, tail)
    selector.register(wake_read, selectors.EVENT_READ, None)
    exited = False
    error = None
    try:
        while not exited:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _events in selector.select(remaining):
                if key.data is None:
                    exited = True
                    continue
                chunk = os.read(key.fd, _READ_SIZE)
                if chunk:
                    key.data.add(chunk)
                else:
                    selector.unregister(key.fd)
                    del open_pipes[key.fd]
                    os.close(key.fd)
        if not exited:
            error = _kill_tree(proc.pid)
        waiter.join(_REAP_SECONDS)  # bounded: a process stuck in D state cannot be reaped
    finally:
        selector.close()
        if not waiter.is_alive():  # else it still owns the wake-up pipe
            os.close(wake_read)
            os.close(wake_write)
    for pipe, tail in open_pipes.items():
        if _drain_now(pipe, tail):
            os.close(pipe)
        else:
            _discard(pipe)
    stdout, stderr = tails[out_read].text(), tails[err_read].text()
    if not exited:
        return None, True, stdout, stderr, error
    return proc.returncode, False, stdout, stderr, None


def run_script(
    script: CheckedScript,
    params: Sequence[str],
    timeout_seconds: float,
    retries: int,
    on_start: OnStart | None = None,
) -> ScriptResult:
    """Run the script until it exits 0, at most 1 + `retries` times, all within the timeout.

    `on_start(pid, start_time)` is called as each attempt starts.
    """
    if script.closed:
        raise ValueError(f"the descriptor of {script.path} is already closed")
    start = time.monotonic()
    warning = script.recheck()
    if warning and script.sealed_fd < 0:
        return ScriptResult(
            script.path, None, 0, 0, False, "", "", f"it was not run: {warning}", warning
        )
    if warning:
        warning += "; the bytes that passed the check ran, not the file as it is now."
    deadline = start + timeout_seconds
    argv = [*command_for(script), *params]
    attempts = 0
    while True:
        attempts += 1
        exit_code, timed_out, stdout, stderr, error = _attempt(
            argv,
            script.run_fd,
            deadline,
            dict(SCRIPT_ENV, VMSNAPSHOT_SCRIPT_PATH=script.path),
            on_start,
        )
        if exit_code == 0 or timed_out or attempts > retries or time.monotonic() >= deadline:
            break
    return ScriptResult(
        path=script.path,
        exit_code=exit_code,
        attempts=attempts,
        duration_ms=int((time.monotonic() - start) * 1000),
        timed_out=timed_out,
        stdout_tail=stdout,
        stderr_tail=stderr,
        error=error,
        warning=warning,
    )
