# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""Freeze and thaw filesystems (FIFREEZE/FITHAW) under a guardian process.

Who does what, and why:

* The guardian, a child made with ``os.fork()`` before any thread starts, issues every FIFREEZE
  and FITHAW while it lives. One process then knows exactly what it froze (a mount that answered
  EBUSY, frozen by another tool, is never thawed), measures the frozen window on one clock, and
  serialises the module's thaw request with its own deadline: two processes never race to thaw.
* It waits in ``poll()`` on a pipe from the module, with the time left as the timeout. EOF (the
  module died, even by SIGKILL) or the deadline thaws at once. It runs in its own session and
  ignores SIGINT, SIGTERM, SIGHUP and SIGPIPE, so Ctrl-C, a signal to the module's process group
  or a dropped ssh session cannot take it down. It imports nothing and writes only to its pipe.
* The module holds its own fds of the same mount points, and a thread waits on the guardian's
  pipe while frozen: if the guardian dies, the module reaps it and thaws what it had frozen (and
  a freeze that was in flight), at once. The report then says ``forced_reason="guardian died"``.
* Each of the two thaws when the other dies, but not when both die at once (``kill -9`` of both,
  milliseconds apart). So the guardian forks a deputy first, in its session, that follows its
  events on a pipe and a pipe from the module: when both end without saying everything was
  thawed (``Q`` from the guardian, ``D`` from the module), the deputy thaws what is still
  frozen. Killing all three at once (a whole cgroup) still leaves a freeze behind: the kernel
  never thaws by itself.

The kernel refuses a second FIFREEZE of a frozen filesystem (EBUSY), so our freezes never nest
and one FITHAW undoes each. Between freeze and thaw nothing here imports or writes to disk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878

# How long the module waits for an answer from the guardian (beyond the freeze deadline while
# freezing) before it kills the guardian and thaws by itself.
GUARDIAN_REPLY_SECONDS = 5.0

_GUARDIAN_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE)
_NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class ThawReport:
    """What happened between the first FIFREEZE and the last FITHAW (times in milliseconds)."""

    frozen_mounts: list[str]
    thaw_forced: bool
    forced_reason: Optional[str]  # "deadline", "parent died", "guardian died" or None
    freeze_ms: float
    thaw_ms: float
    frozen_window_ms: float
    errors: list[str]
    mount_freeze_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _ms(start_ns: int, end_ns: int) -> float:
    return round((end_ns - start_ns) / _NS_PER_MS, 3)


def _errno_text(number: int) -> str:
    return f"{os.strerror(number)} ({errno.errorcode.get(number, number)})"


# ---------------------------------------------------------------------------------------------
# The guardian process. Protocol on its reply pipe, one ASCII line per event:
#   "f i"               about to FIFREEZE mount i      "F i t0 t1"       froze mount i
#   "E i errno"         FIFREEZE of mount i failed     "L"               deadline hit while freezing
#   "D"                 everything is frozen           "T i t0 t1 errno" thawed mount i
#   "Q reason"          every freeze undone ("-", "deadline" or "parent died")
# The module sends b"F" (freeze) and b"T" (thaw); EOF means the module is gone. The deputy reads
# the same lines, and b"D" from the module once it knows everything is thawed.
# ---------------------------------------------------------------------------------------------


def _become_guardian(keep: set[int]) -> None:
    """Detach from the module's session, ignore its signals, keep only our pipes and mount fds."""
    os.setsid()
    for signum in _GUARDIAN_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _GUARDIAN_SIGNALS)
    null = os.open("/dev/null", os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):  # the fd listdir() used is already closed
                os.close(fd)


def _deputy_main(fds: list[int], events_r: int, module_r: int) -> None:
    """Thaw what the guardian froze if the guardian and the module both end without thawing."""
    frozen: set[int] = set()
    buffer = b""
    poller = select.poll()
    for fd in (events_r, module_r):
        poller.register(fd, select.POLLIN)
    open_fds = 2
    while open_fds:
        for fd, _events in poller.poll():
            chunk = os.read(fd, 4096)
            if not chunk:
                poller.unregister(fd)
                open_fds -= 1
                continue
            if fd == module_r:
                return  # "D": the module saw every filesystem thawed
            *lines, buffer = (buffer + chunk).split(b"\n")
            for kind, *values in (line.split() for line in lines):
                if kind == b"Q":
                    return
                if kind == b"f":  # counted from the attempt: its outcome may never be told
                    frozen.add(int(values[0]))
                elif kind in (b"E", b"T"):
                    frozen.discard(int(values[0]))
    for index in sorted(frozen, reverse=True):
        with contextlib.suppress(OSError):
            fcntl.ioctl(fds[index], FITHAW, 0)


def _guardian_main(fds: list[int], cmd_r: int, reply_w: int, module_r: int, max_ns: int) -> None:
    frozen: list[int] = []
    events_r, events_w = os.pipe()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the deputy
    try:
        deputy = os.fork()
    except OSError:
        deputy = -1
    if deputy == 0:
        for fd in (cmd_r, reply_w, events_w):  # the module must see EOF when the guardian dies
            os.close(fd)
        _deputy_main(fds, events_r, module_r)
        os._exit(0)
    os.close(events_r)
    os.close(module_r)
    os.set_blocking(events_w, False)

    def send(text: str) -> None:
        for fd in (reply_w, events_w):
            with contextlib.suppress(OSError):  # a reader is gone: thawing matters, telling not
                os.write(fd, f"{text}\n".encode())

    def thaw_all(reason: str) -> None:
        while frozen:
            index = frozen.pop()
            start = time.monotonic_ns()
            try:
                fcntl.ioctl(fds[index], FITHAW, 0)
                result = 0
            except OSError as exc:
                result = exc.errno
            send(f"T {index} {start} {time.monotonic_ns()} {result}")
        send(f"Q {reason}")

    os.set_blocking(reply_w, False)  # a module that stops reading must never stall a thaw
    poller = select.poll()
    poller.register(cmd_r, select.POLLIN)
    try:
        if deputy < 0 or os.read(cmd_r, 1) != b"F":  # no deputy: no freeze
            send("Q -")
            return
        deadline = 0
        for index, fd in enumerate(fds):
            send(f"f {index}")
            start = time.monotonic_ns()
            deadline = deadline or start + max_ns  # counted from the first FIFREEZE
            try:
                fcntl.ioctl(fd, FIFREEZE, 0)
            except OSError as exc:
                send(f"E {index} {exc.errno}")
                thaw_all("-")
                return
            frozen.append(index)
            now = time.monotonic_ns()
            send(f"F {index} {start} {now}")
            if now >= deadline:
                send("L")
                thaw_all("-")
                return
            if poller.poll(0):  # the module waits for "D": input now means it is gone
                thaw_all("-" if os.read(cmd_r, 1) == b"T" else "parent died")
                return
        send("D")
        while True:
            remaining = deadline - time.monotonic_ns()
            if remaining <= 0:
                thaw_all("deadline")
                break
            if poller.poll(-(-remaining // _NS_PER_MS)):
                thaw_all("-" if os.read(cmd_r, 1) == b"T" else "parent died")
                return
        poller.poll()  # thawed at the deadline: wait for the module's thaw request or its end
    finally:
        if frozen:
            thaw_all("-")


# ---------------------------------------------------------------------------------------------
# The module's side.
# ---------------------------------------------------------------------------------------------


class Guardian:
    """Freeze ``mount_points`` (in this order; thaw in reverse) for at most ``max_freeze_seconds``.

    ``start()`` before any thread starts, then ``freeze()``, ``thaw()`` and ``close()``; or use it
    as a context manager, which starts it and always thaws and closes.
    """

    def __init__(self, mount_points: Sequence[str], max_freeze_seconds: float) -> None:
        if not mount_points or max_freeze_seconds <= 0:
            raise ValueError("Guardian needs mount points and a positive max_freeze_seconds")
        self.mount_points = list(mount_points)
        self.max_freeze_seconds = max_freeze_seconds
        self.pid: Optional[int] = None
        self._fds: list[int] = []
        self._cmd_w = -1
        self._reply_r = -1
        self._deputy_w = -1
        self._poller = select.poll()
        self._buffer = b""
        self._frozen: list[int] = []
        self._in_flight: Optional[int] = None
        self._freeze_times: dict[int, tuple[int, int]] = {}
        self._thaw_times: list[tuple[int, int]] = []
        self._errors: list[str] = []
        self._failure: Optional[VmSnapshotError] = None
        self._forced_reason: Optional[str] = None
        self._finished = False
        self._thaw_requested = False
        self._watcher: Optional[threading.Thread] = None
        self._report: Optional[ThawReport] = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Open every mount point and fork the guardian (which keeps its own copies)."""
        if self._cmd_w >= 0 or self._report is not None:
            raise RuntimeError("Guardian.start() runs once")
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC
        for path in self.mount_points:
            try:
                self._fds.append(os.open(path, flags))
            except OSError as exc:
                self._close_fds()
                raise VmSnapshotError(
                    Status.FailedRetryableUnableToOpenMount,
                    f"Cannot open the mount point {path} to freeze it: {_errno_text(exc.errno)}.",
                ) from None
        cmd_r, self._cmd_w = os.pipe()
        self._reply_r, reply_w = os.pipe()
        deputy_r, self._deputy_w = os.pipe()
        # Blocked across fork() so the child never runs a signal handler inherited from us.
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _GUARDIAN_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
            for fd in (cmd_r, reply_w, deputy_r):
                os.close(fd)
            self.close()
            raise VmSnapshotError(
                Status.FailedRetryableFsFreezeFailed,
                f"Cannot start the freeze guardian process: {_errno_text(exc.errno)}.",
            ) from None
        if pid == 0:
            try:
                _become_guardian({cmd_r, reply_w, deputy_r, *self._fds})
                _guardian_main(
                    self._fds, cmd_r, reply_w, deputy_r, int(self.max_freeze_seconds * 1e9)
                )
            finally:
                os._exit(0)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        self.pid = pid
        for fd in (cmd_r, reply_w, deputy_r):
            os.close(fd)
        self._poller.register(self._reply_r, select.POLLIN)

    def freeze(self) -> None:
        """Freeze every mount point in order; on failure everything is thawed and 121/122 raised."""
        if self.pid is None or self._watcher is not None or self._finished:
            raise RuntimeError("Guardian.freeze() runs once, after start()")
        self._send(b"F")
        limit = time.monotonic_ns() + int((self.max_freeze_seconds + GUARDIAN_REPLY_SECONDS) * 1e9)
        while True:
            try:
                line = self._read_line(limit)
            except TimeoutError:
                self._take_over()
                raise VmSnapshotError(
                    Status.FailedRetryableFsFreezeTimeout,
                    f"Freezing did not finish within {self.max_freeze_seconds} s "
                    "(max_freeze_seconds); every filesystem was thawed.",
                ) from None
            if line is None:
                self._take_over()
                raise VmSnapshotError(
                    Status.FailedRetryableFsFreezeFailed,
                    "The freeze guardian process died while freezing; every filesystem was thawed.",
                )
            if line == "D":
                break
            self._handle(line)
            if self._finished:
                self._reap()
                raise self._failure or VmSnapshotError(
                    Status.FailedRetryableFsFreezeFailed, "The freeze was abandoned."
                )
        self._watcher = threading.Thread(target=self._drain, name="freeze-guardian-watch")
        self._watcher.daemon = True
        self._watcher.start()

    def thaw(self) -> ThawReport:
        """Thaw (in reverse order) unless already thawed; report what happened. Never raises."""
        if self._report is not None:
            return self._report
        if self.pid is not None:
            self._thaw_requested = True
            self._send(b"T")
            if self._watcher is not None:
                self._watcher.join(GUARDIAN_REPLY_SECONDS)
                if self._watcher.is_alive():  # the guardian does not answer: stop it, take over
                    self._kill()
                    self._watcher.join()
            else:
                with contextlib.suppress(TimeoutError):
                    self._drain(time.monotonic_ns() + int(GUARDIAN_REPLY_SECONDS * 1e9))
            if not self._finished:
                self._take_over()
            self._reap()
        self._report = self._build_report()
        self._tell_deputy()
        return self._report

    def close(self) -> None:
        """Thaw if needed, reap the guardian and close every fd."""
        self.thaw()
        for fd in (self._cmd_w, self._reply_r, self._deputy_w):
            if fd >= 0:
                os.close(fd)
        self._cmd_w = self._reply_r = self._deputy_w = -1
        self._close_fds()

    def __enter__(self) -> Guardian:
        if self.pid is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the pipe -----------------------------------------------------------------------------

    def _send(self, command: bytes) -> None:
        with contextlib.suppress(OSError):  # the guardian is gone: its pipe shows EOF, we take over
            os.write(self._cmd_w, command)

    def _tell_deputy(self) -> None:
        """Everything this run froze is thawed: the deputy may go."""
        with contextlib.suppress(OSError):  # gone already (the guardian said "Q" first)
            os.write(self._deputy_w, b"D")

    def _read_line(self, limit_ns: Optional[int]) -> Optional[str]:
        """The next line from the guardian; None at EOF; TimeoutError after ``limit_ns``."""
        while b"\n" not in self._buffer:
            if limit_ns is not None:
                remaining = limit_ns - time.monotonic_ns()
                if remaining <= 0 or not self._poller.poll(-(-remaining // _NS_PER_MS)):
                    raise TimeoutError
            chunk = os.read(self._reply_r, 4096)
            if not chunk:
                return None
            self._buffer += chunk
        line, _newline, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def _drain(self, limit_ns: Optional[int] = None) -> None:
        """Handle the guardian's lines until it is done; if it dies first, take over."""
        while not self._finished:
            line = self._read_line(limit_ns)
            if line is None:
                self._take_over()
                return
            self._handle(line)

    def _handle(self, line: str) -> None:
        kind, *values = line.split()
        numbers = [int(value) for value in values] if kind != "Q" else []
        if kind == "f":
            self._in_flight = numbers[0]
        elif kind == "F":
            index, start, end = numbers
            self._in_flight = None
            self._frozen.append(index)
            self._freeze_times[index] = (start, end)
        elif kind == "E":
            index, number = numbers
            self._in_flight = None
            self._failure = self._freeze_error(self.mount_points[index], number)
            self._errors.append(self._failure.message)
        elif kind == "L":
            self._failure = VmSnapshotError(
                Status.FailedRetryableFsFreezeTimeout,
                f"Freezing took longer than {self.max_freeze_seconds} s (max_freeze_seconds); "
                "every filesystem was thawed.",
            )
            self._errors.append(self._failure.message)
        elif kind == "T":
            index, start, end, number = numbers
            self._frozen.remove(index)
            self._thaw_times.append((start, end))
            if number:
                self._errors.append(self._thaw_error(self.mount_points[index], number))
        elif kind == "Q":
            if values[0] != "-":
                self._forced_reason = " ".join(values)
            self._finished = True

    # -- when the guardian is gone ------------------------------------------------------------

    def _kill(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def _reap(self) -> None:
        if self.pid is not None:
            os.waitpid(self.pid, 0)
            self.pid = None

    def _take_over(self) -> None:
        """Stop and reap the guardian (so no ioctl of its is in flight), then thaw what it froze."""
        self._kill()
        self._reap()
        pending = list(self._frozen)
        if self._in_flight is not None:
            pending.append(self._in_flight)  # unknown outcome: frozen forever is the worse error
        if pending and not self._thaw_requested:
            self._forced_reason = "guardian died"
            self._errors.append(
                "The freeze guardian process died while filesystems were frozen; "
                "the module thawed them itself."
            )
        for index in reversed(pending):
            start = time.monotonic_ns()
            try:
                fcntl.ioctl(self._fds[index], FITHAW, 0)
            except OSError as exc:
                if index in self._frozen or exc.errno != errno.EINVAL:
                    self._errors.append(self._thaw_error(self.mount_points[index], exc.errno))
                continue
            self._thaw_times.append((start, time.monotonic_ns()))
        self._frozen.clear()
        self._in_flight = None
        self._finished = True
        self._tell_deputy()

    # -- results ------------------------------------------------------------------------------

    def _freeze_error(self, path: str, number: int) -> VmSnapshotError:
        if number == errno.EBUSY:
            reason = "it is already frozen by another process (EBUSY), which we leave frozen"
        elif number == errno.EOPNOTSUPP:
            reason = "the filesystem does not support freezing (EOPNOTSUPP)"
        else:
            reason = _errno_text(number)
        return VmSnapshotError(
            Status.FailedRetryableFsFreezeFailed,
            f"Cannot freeze {path}: {reason}; every filesystem this run froze was thawed.",
        )

    @staticmethod
    def _thaw_error(path: str, number: int) -> str:
        if number == errno.EINVAL:
            return f"{path} was no longer frozen at thaw time: another process thawed it."
        return f"Cannot thaw {path}: {_errno_text(number)}."

    def _build_report(self) -> ThawReport:
        freezes = list(self._freeze_times.values())
        first_freeze = min((start for start, _end in freezes), default=0)
        last_thaw = max((end for _start, end in self._thaw_times), default=first_freeze)
        return ThawReport(
            frozen_mounts=[self.mount_points[index] for index in self._freeze_times],
            thaw_forced=self._forced_reason is not None,
            forced_reason=self._forced_reason,
            freeze_ms=_ms(
                first_freeze, max((end for _start, end in freezes), default=first_freeze)
            ),
            thaw_ms=_ms(min(start for start, _end in self._thaw_times), last_thaw)
            if self._thaw_times
            else 0.0,
            frozen_window_ms=_ms(first_freeze, last_thaw) if freezes else 0.0,
            errors=list(self._errors),
            mount_freeze_ms={
                self.mount_points[index]: _ms(start, end)
                for index, (start, end) in self._freeze_times.items()
            },
        )

    def _close_fds(self) -> None:
        while self._fds:
            os.close(self._fds.pop())
