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
  or a dropped ssh session cannot take it down. It imports nothing and writes only to its pipe
  (and, when asked, to ``/sys/kernel/rcu_expedited``, which is no disk).
* The deadline counts from the first FIFREEZE call (the ioctl's own time is inside it), or ends
  earlier at ``release_by_ns``: the moment the application, quiesced by its pre-script, must be
  released (its end plus max_freeze_seconds). Every process enforces it on its own, whatever
  the others do (killed or stopped with SIGSTOP): the guardian thaws at the deadline; the
  module's watcher thread, if the guardian has not said it thawed ``MODULE_GRACE_SECONDS`` later
  (or ``THAW_REPLY_SECONDS`` after a thaw request), kills and reaps the guardian and thaws
  through its own fds; the deputy (below) does the same
  ``DEPUTY_GRACE_SECONDS`` after the deadline. Killing the guardian before thawing matters: a
  FIFREEZE still running in the kernel finishes before the guardian is gone, so the one FITHAW
  that follows cannot be lost to a freeze that had not completed yet (a FITHAW during a freeze's
  first phase answers EINVAL and would leave the freeze in place).
* Each thaw that is not the guardian's answer to the module's request is reported as forced
  (``forced_reason``), and so is a window longer than the deadline, however it ended, and a
  filesystem that another process had thawed before the planned thaw (EINVAL).
* The deadline cannot cut a FIFREEZE short: its flush of dirty data holds every writer of the
  filesystem, the kernel cannot be interrupted there, and a FITHAW waits for it (freeze_super
  holds s_umount). So ``start()`` flushes first, outside the window, in rounds of syncfs() until
  a round is short (``FLUSH_*``), and refuses to freeze when the flush has not ended within
  ``FLUSH_REFUSE_SHARE`` of the deadline (writers dirty data faster than the disks write it
  back, or there is that much to write): the application waits quiesced during the flush, and
  a syncfs() cannot be interrupted, so it runs on a thread of its own that is left to finish in
  the background. The margin is honest, not absolute: the first FIFREEZE still writes what was
  dirtied during the last round plus the filesystem's own commit (a few disk writes); a window
  that passes the deadline all the same is reported as forced.
* The deputy, forked by the guardian in its session, follows the guardian's events on a pipe and
  a pipe from the module: when both end without saying everything was thawed (``Q`` from the
  guardian, ``D`` from the module), or at its own deadline, it thaws what is still frozen.
  Killing all three at once (a whole cgroup) leaves only what lives outside the run's processes:
  the systemd timer of ``_thaw_timer`` where the host runs systemd.
* With ``expedite`` the guardian writes 1 to ``/sys/kernel/rcu_expedited`` right before the first
  FIFREEZE and restores the earlier value as soon as the last FIFREEZE returns (the module, the
  deputy and the timer restore it if the guardian dies in between). It restores only while the
  value is still the 1 it wrote: any other value means another program changed it meanwhile,
  and that program's value is left alone.

The kernel refuses a second FIFREEZE of a frozen filesystem (EBUSY), so our freezes never nest
and one FITHAW undoes each. A FITHAW of a filesystem that is not frozen is a harmless EINVAL.
Between freeze and thaw nothing here imports or writes to disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import select
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878

# After the deadline, how long the module waits for the guardian's thaw before it takes over,
# and the deputy after it (later, so that the module, which reports, thaws first).
MODULE_GRACE_SECONDS = 0.1
DEPUTY_GRACE_SECONDS = 0.3
# How long the module waits for the guardian to answer a thaw request (at most until the
# deadline's grace ends) before it stops the guardian and thaws by itself.
THAW_REPLY_SECONDS = 0.5
# The watcher thread's tick: how often it looks at the time while no line arrives.
_TICK_MS = 20
# The flush before the freeze (``Guardian.start``), in rounds of one syncfs() per mount. A round
# writes what was dirty when it began; what writers dirty meanwhile is left for the next round,
# and what is dirty at the first FIFREEZE is written by the freeze itself while every writer
# waits: the kernel cannot be interrupted there, and a FITHAW waits until it is done
# (freeze_super holds s_umount across its flush). So the flush goes on until a round is short,
# or no shorter than the one before (writers dirty data as fast as the disks write it), and the
# last round predicts the freeze's own flush (what writers dirtied during that round).
FLUSH_QUIET_SHARE = 0.1  # a round this short (share of max_freeze_seconds) ends the flush
FLUSH_REFUSE_SHARE = 0.5  # a flush not over by then refuses to freeze (it bounds the rounds)
# ext4's FIFREEZE also writes every journaled metadata block home (a checkpoint), one disk write
# after another; the flush does that first too (80 ms a write: 0.13 s left instead of 0.33 s).
EXT4_SUPER_MAGIC = 0xEF53
EXT4_IOC_CHECKPOINT = 0x4004662B  # _IOW('f', 43, __u32), Linux 5.13

_GUARDIAN_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE)
_NS_PER_MS = 1_000_000
_NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class ThawReport:
    """What happened between the first FIFREEZE and the last FITHAW (times in milliseconds)."""

    frozen_mounts: list[str]
    thaw_forced: bool
    # "deadline", "parent died", "guardian died", "guardian stopped answering",
    # "thawed by another process", "window over the deadline" or None
    forced_reason: str | None
    freeze_ms: float
    thaw_ms: float
    frozen_window_ms: float
    errors: list[str]
    mount_freeze_ms: dict[str, float] = field(default_factory=dict)
    expedited: bool = False  # rcu_expedited was 1 during the FIFREEZE calls
    sync_ms: float = 0.0  # the flush (syncfs() of every mount) before the first FIFREEZE
    sync_rounds: int = 0  # rounds of the flush
    last_sync_ms: float = 0.0  # its last round: about what the first FIFREEZE had to write

    def as_dict(self) -> dict:
        return asdict(self)


def _ms(start_ns: int, end_ns: int) -> float:
    return round((end_ns - start_ns) / _NS_PER_MS, 3)


def _errno_text(number: int) -> str:
    return f"{os.strerror(number)} ({errno.errorcode.get(number, number)})"


def restore_rcu(fd: int, earlier: bytes) -> str:
    """Put ``earlier`` back into rcu_expedited if it still holds our 1. Imports nothing.

    Returns "restored", "changed" (another program changed it: left alone) or "E<errno>".
    """
    try:
        if os.pread(fd, 16, 0).strip() != b"1":
            return "changed"
        os.pwrite(fd, earlier, 0)
        return "restored"
    except OSError as exc:
        return f"E{exc.errno}"


def _unlink(path: str | None) -> None:
    """Remove the thaw timer's marker (on /run, a tmpfs): the timer then does nothing."""
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)


# ---------------------------------------------------------------------------------------------
# The guardian process. Protocol on its reply pipe, one ASCII line per event:
#   "f i deadline"      about to FIFREEZE mount i      "F i t0 t1"       froze mount i
#   "E i errno"         FIFREEZE of mount i failed     "L"               deadline hit while freezing
#   "D"                 everything is frozen           "T i t0 t1 errno" thawed mount i
#   "x earlier"         about to set rcu_expedited     "y"               rcu_expedited is 1
#   "X outcome"         rcu_expedited handled (restored, changed, E<errno>)
#   "Q reason"          every freeze undone ("-", "deadline" or "parent died")
# Times and the deadline are CLOCK_MONOTONIC nanoseconds, one clock for every process.
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


class _Plan:
    """What the guardian and its deputy need besides their pipes (inherited through fork)."""

    def __init__(
        self,
        fds: list[int],
        max_ns: int,
        release_by_ns: int,
        rcu_fd: int,
        rcu_earlier: bytes,
        marker: str | None,
    ) -> None:
        self.fds = fds
        self.max_ns = max_ns
        self.release_by_ns = release_by_ns  # 0: none
        self.rcu_fd = rcu_fd  # -1: leave rcu_expedited alone
        self.rcu_earlier = rcu_earlier
        self.marker = marker


def _deputy_main(plan: _Plan, events_r: int, module_r: int, guardian: int) -> None:
    """Thaw what the guardian froze if the guardian and the module both end without thawing,
    or if neither has thawed by the deadline (plus a grace); restore rcu_expedited if the
    guardian died holding it."""
    frozen: set[int] = set()
    rcu_pending = False
    deadline: int | None = None
    buffer = b""
    poller = select.poll()
    for fd in (events_r, module_r):
        poller.register(fd, select.POLLIN)
    open_fds = {events_r, module_r}

    def read_events(fd: int) -> bool:
        """Handle what the guardian wrote; False when it says everything is thawed."""
        nonlocal buffer, rcu_pending, deadline
        chunk = os.read(fd, 4096)
        if not chunk:
            poller.unregister(fd)
            open_fds.discard(fd)
            return True
        *lines, buffer = (buffer + chunk).split(b"\n")
        for kind, *values in (line.split() for line in lines):
            if kind == b"Q":
                return False
            if kind == b"f":  # counted from the attempt: its outcome may never be told
                frozen.add(int(values[0]))
                deadline = deadline or int(values[1])
            elif kind in (b"E", b"T"):
                frozen.discard(int(values[0]))
            elif kind == b"x":
                rcu_pending = True
            elif kind == b"X":
                rcu_pending = False
        return True

    try:
        while open_fds:
            timeout = -1
            if deadline is not None:
                late = deadline + int(DEPUTY_GRACE_SECONDS * _NS_PER_S) - time.monotonic_ns()
                timeout = max(0, -(-late // _NS_PER_MS))
            ready = poller.poll(timeout)
            if not ready:  # the deadline is over and nobody said everything was thawed
                if events_r in open_fds:
                    with contextlib.suppress(OSError):  # a stopped guardian dies too
                        os.kill(guardian, signal.SIGKILL)
                    while events_r in open_fds:  # EOF once its last ioctl has returned
                        if not read_events(events_r):
                            return
                break
            for fd, _events in ready:
                if fd == module_r:
                    if os.read(fd, 16):
                        return  # "D": the module saw every filesystem thawed
                    poller.unregister(fd)
                    open_fds.discard(fd)
                elif not read_events(fd):
                    return
            if events_r not in open_fds and rcu_pending:  # the guardian died holding it
                restore_rcu(plan.rcu_fd, plan.rcu_earlier)
                rcu_pending = False
        for index in sorted(frozen, reverse=True):
            with contextlib.suppress(OSError):
                fcntl.ioctl(plan.fds[index], FITHAW, 0)
        if rcu_pending:
            restore_rcu(plan.rcu_fd, plan.rcu_earlier)
    finally:
        _unlink(plan.marker)


def _guardian_main(plan: _Plan, cmd_r: int, reply_w: int, module_r: int) -> None:
    fds = plan.fds
    frozen: list[int] = []
    events_r, events_w = os.pipe()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the deputy
    me = os.getpid()
    try:
        deputy = os.fork()
    except OSError:
        deputy = -1
    if deputy == 0:
        for fd in (cmd_r, reply_w, events_w):  # the module must see EOF when the guardian dies
            os.close(fd)
        _deputy_main(plan, events_r, module_r, me)
        os._exit(0)
    os.close(events_r)
    os.close(module_r)
    os.set_blocking(events_w, False)
    rcu_set = False

    def send(text: str) -> None:
        for fd in (reply_w, events_w):
            with contextlib.suppress(OSError):  # a reader is gone: thawing matters, telling not
                os.write(fd, f"{text}\n".encode())

    def unexpedite() -> None:
        nonlocal rcu_set
        if rcu_set:
            rcu_set = False
            send(f"X {restore_rcu(plan.rcu_fd, plan.rcu_earlier)}")

    def thaw_all(reason: str) -> None:
        unexpedite()
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
            start = time.monotonic_ns()
            deadline = deadline or _deadline_ns(start, plan.max_ns, plan.release_by_ns)
            send(f"f {index} {deadline}")
            if index == 0 and plan.rcu_fd >= 0:
                send(f"x {plan.rcu_earlier.decode()}")
                rcu_set = True  # from the attempt: a write that fails half-way is restored too
                try:
                    os.pwrite(plan.rcu_fd, b"1", 0)
                    send("y")
                except OSError as exc:
                    rcu_set = False
                    send(f"X E{exc.errno}")
            # The window starts at the ioctl, not before the messages above: no writer waits
            # on them. The deadline still counts from before them.
            began = time.monotonic_ns()
            try:
                fcntl.ioctl(fd, FIFREEZE, 0)
            except OSError as exc:
                send(f"E {index} {exc.errno}")
                thaw_all("-")
                return
            frozen.append(index)
            now = time.monotonic_ns()
            send(f"F {index} {began} {now}")
            if now >= deadline:
                send("L")
                thaw_all("-")
                return
            if poller.poll(0):  # the module waits for "D": input now means it is gone
                thaw_all("-" if os.read(cmd_r, 1) == b"T" else "parent died")
                return
        unexpedite()
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
        if frozen or rcu_set:
            thaw_all("-")


# ---------------------------------------------------------------------------------------------
# The module's side.
# ---------------------------------------------------------------------------------------------


class Guardian:
    """Freeze ``mount_points`` (in this order; thaw in reverse) for at most ``max_freeze_seconds``.

    ``start()`` before any thread starts, then ``freeze()``, ``thaw()`` and ``close()``; or use it
    as a context manager, which starts it and always thaws and closes.

    ``rcu_fd``/``rcu_earlier``: an open ``/sys/kernel/rcu_expedited`` and its value before, to
    expedite the FIFREEZE calls (see ``_rcu_expedite``); ``marker``: the thaw timer's marker
    file, removed by whichever process ends the freeze (see ``_thaw_timer``); ``release_by_ns``:
    when the application that a pre-script quiesced must be released (``time.monotonic_ns()``,
    0: none), by which the flush gives up and everything is thawed.
    """

    def __init__(
        self,
        mount_points: Sequence[str],
        max_freeze_seconds: float,
        *,
        rcu_fd: int = -1,
        rcu_earlier: bytes = b"0",
        marker: str | None = None,
        sync_first: bool = True,
        release_by_ns: int = 0,
    ) -> None:
        if not mount_points or max_freeze_seconds <= 0:
            raise ValueError("Guardian needs mount points and a positive max_freeze_seconds")
        self.mount_points = list(mount_points)
        self.max_freeze_seconds = max_freeze_seconds
        self.release_by_ns = release_by_ns
        self.pid: int | None = None
        self._rcu_fd = rcu_fd
        self._rcu_earlier = rcu_earlier
        self._marker = marker
        self._sync_first = sync_first
        self._fds: list[int] = []
        self._cmd_w = -1
        self._reply_r = -1
        self._deputy_w = -1
        self._poller = select.poll()
        self._buffer = b""
        self._frozen: list[int] = []
        self._in_flight: int | None = None
        self._freeze_times: dict[int, tuple[int, int]] = {}
        self._thaw_times: list[tuple[int, int]] = []
        self._errors: list[str] = []
        self._failure: VmSnapshotError | None = None
        self._forced_reason: str | None = None
        self._finished = False
        self._all_frozen = threading.Event()  # "D" came, or it is all over
        self._thaw_requested: int | None = None  # when the module asked for the thaw
        self._deadline: int | None = None
        self._rcu_pending = False
        self._expedited = False
        self._sync_ms = 0.0
        self._sync_rounds = 0
        self._last_sync_ms = 0.0
        self._watcher: threading.Thread | None = None
        self._report: ThawReport | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Open every mount point, fork the guardian (which keeps its own copies), then flush.

        The flush (``FLUSH_*``) leaves the first FIFREEZE little to write, outside the window.
        It ends here, before the caller counts any time from the freeze. When writers dirty data
        faster than the disks write it back, the freeze would hold them past the deadline:
        nothing is frozen, everything is closed and 122 (freeze timeout) is raised.
        """
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
                keep = {cmd_r, reply_w, deputy_r, *self._fds}
                if self._rcu_fd >= 0:
                    keep.add(self._rcu_fd)
                _become_guardian(keep)
                plan = _Plan(
                    self._fds,
                    int(self.max_freeze_seconds * _NS_PER_S),
                    self.release_by_ns,
                    self._rcu_fd,
                    self._rcu_earlier,
                    self._marker,
                )
                _guardian_main(plan, cmd_r, reply_w, deputy_r)
            finally:
                os._exit(0)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        self.pid = pid
        for fd in (cmd_r, reply_w, deputy_r):
            os.close(fd)
        self._poller.register(self._reply_r, select.POLLIN)
        if self._sync_first:
            try:
                self._flush()
            except VmSnapshotError:
                self.close()
                raise

    def _flush(self) -> None:
        """The flush (see ``FLUSH_*``), waited for up to ``FLUSH_REFUSE_SHARE`` of the deadline
        and never past ``release_by_ns``; raise 122 (nothing frozen) when it has not ended."""
        budget_ns = int(self.max_freeze_seconds * FLUSH_REFUSE_SHARE * _NS_PER_S)
        start = time.monotonic_ns()
        give_up = start + budget_ns
        if self.release_by_ns:
            give_up = min(give_up, self.release_by_ns)
        flush = _Flush(self._fds, int(self.max_freeze_seconds * FLUSH_QUIET_SHARE * _NS_PER_S))
        ended = flush.done.wait(max(0, give_up - start) / _NS_PER_S)
        self._sync_ms = _ms(start, time.monotonic_ns())
        self._sync_rounds = flush.rounds
        self._last_sync_ms = _ms(0, flush.last_ns)
        if not ended:
            flush.abandon()
            raise VmSnapshotError(
                Status.FailedRetryableFsFreezeTimeout,
                f"Not frozen: flushing the filesystems before the freeze had not ended after "
                f"{self._sync_ms / 1000:.1f} s ({self._sync_rounds} rounds done), and the "
                "freeze would have had to write the rest while every writer waited: the disks "
                "write back slower than writers dirty data, or there is that much to write. "
                f"The flush may take {FLUSH_REFUSE_SHARE:.0%} of max_freeze_seconds "
                f"({self.max_freeze_seconds} s) at most, counted within the application's "
                "quiesced time; it goes on in the background.",
            )

    def deadline_ns(self, first_freeze_ns: int) -> int:
        """When everything must be thawed for a freeze that starts at `first_freeze_ns`."""
        return _deadline_ns(
            first_freeze_ns, int(self.max_freeze_seconds * _NS_PER_S), self.release_by_ns
        )

    def freeze(self) -> None:
        """Freeze every mount point in order; on failure everything is thawed and 121/122 raised.

        The watcher thread starts before the freeze and hands "D" over through an event: no
        thread start inside the window.
        """
        if self.pid is None or self._watcher is not None or self._finished:
            raise RuntimeError("Guardian.freeze() runs once, after start()")
        # Until the guardian tells its deadline, count it from now: no FIFREEZE starts earlier.
        self._deadline = self.deadline_ns(time.monotonic_ns())
        self._watcher = threading.Thread(target=self._watch, name="freeze-guardian-watch")
        self._watcher.daemon = True
        self._watcher.start()
        self._send(b"F")
        self._all_frozen.wait()
        if self._finished:
            self._watcher.join()
            self._reap()
            raise self._failure or VmSnapshotError(
                Status.FailedRetryableFsFreezeFailed, "The freeze was abandoned."
            )

    def thaw(self) -> ThawReport:
        """Thaw (in reverse order) unless already thawed; report what happened. Never raises."""
        if self._report is not None:
            return self._report
        if self.pid is not None:
            if self._thaw_requested is None:
                self._thaw_requested = time.monotonic_ns()
            self._send(b"T")
            if self._watcher is not None:
                self._watcher.join()  # bounded: the watcher enforces the deadline itself
            else:  # never froze: the guardian answers "Q -" at once, or is taken over
                self._deadline = time.monotonic_ns()
                self._watch()
            self._reap()
            _unlink(self._marker)  # thawed: the thaw timer must not act any more
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

    def _limit(self) -> int:
        """Until when the guardian may stay silent before the module takes over."""
        if self._deadline is None:
            raise RuntimeError("Guardian._limit() needs the deadline of a started freeze")
        limit = self._deadline + int(MODULE_GRACE_SECONDS * _NS_PER_S)
        if self._thaw_requested is not None:
            limit = min(limit, self._thaw_requested + int(THAW_REPLY_SECONDS * _NS_PER_S))
        return limit

    def _read_line(self) -> str | None:
        """The next line from the guardian; None at EOF; TimeoutError once ``_limit()`` is over."""
        while b"\n" not in self._buffer:
            remaining = self._limit() - time.monotonic_ns()
            if remaining <= 0:
                raise TimeoutError
            if not self._poller.poll(min(_TICK_MS, -(-remaining // _NS_PER_MS))):
                continue  # look at the limit again: a thaw request may have shortened it
            chunk = os.read(self._reply_r, 4096)
            if not chunk:
                return None
            self._buffer += chunk
        line, _newline, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def _watch(self) -> None:
        """Handle the guardian's lines until it is done; take over if it dies or goes silent."""
        try:
            while not self._finished:
                try:
                    line = self._read_line()
                except TimeoutError:
                    self._take_over(silent=True)
                    return
                if line is None:
                    self._take_over(silent=False)
                    return
                self._handle(line)
        finally:
            self._all_frozen.set()

    def _handle(self, line: str) -> None:
        kind, *values = line.split()
        numbers = [int(value) for value in values] if kind in "fFETD" else []
        if kind == "f":
            self._in_flight, self._deadline = numbers
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
                f"Freezing ran into the deadline (max_freeze_seconds, {self.max_freeze_seconds} "
                "s from the first FIFREEZE, or from the end of the pre-script while the "
                "application is quiesced); every filesystem was thawed.",
            )
            self._errors.append(self._failure.message)
        elif kind == "D":
            self._all_frozen.set()
        elif kind == "x":
            self._rcu_pending = True
        elif kind == "y":
            self._expedited = True
        elif kind == "X":
            self._rcu_pending = False
            self._rcu_outcome(values[0])
        elif kind == "T":
            index, start, end, number = numbers
            self._frozen.remove(index)
            self._thaw_times.append((start, end))
            if number:
                self._errors.append(self._thaw_error(self.mount_points[index], number))
            if number == errno.EINVAL and self._forced_reason is None:
                # Thawed before we did: a snapshot may have been taken after that thaw.
                self._forced_reason = "thawed by another process"
        elif kind == "Q":
            if values[0] != "-":
                self._forced_reason = " ".join(values)
            self._finished = True

    def _rcu_outcome(self, outcome: str) -> None:
        if outcome.startswith("E"):
            self._errors.append(
                f"Cannot write /sys/kernel/rcu_expedited: {_errno_text(int(outcome[1:]))}."
            )

    # -- when the guardian is gone or silent --------------------------------------------------

    def _kill(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def _reap(self) -> None:
        if self.pid is not None:
            os.waitpid(self.pid, 0)
            self.pid = None

    def _take_over(self, *, silent: bool) -> None:
        """Stop and reap the guardian (SIGKILL ends a stopped process too, once its running
        ioctl has returned, so none is in flight afterwards), then thaw what it froze."""
        self._kill()
        self._reap()
        if self._rcu_pending:
            self._rcu_pending = False
            self._rcu_outcome(restore_rcu(self._rcu_fd, self._rcu_earlier))
        pending = list(self._frozen)
        if self._in_flight is not None:
            pending.append(self._in_flight)  # unknown outcome: frozen forever is the worse error
        if pending:
            if self._thaw_requested is None and silent:
                self._forced_reason = "deadline"
                self._errors.append(
                    "The freeze guardian process had not thawed by the deadline (stopped, or "
                    "its FIFREEZE had not returned); the module stopped it and thawed by itself."
                )
            elif self._thaw_requested is None:
                self._forced_reason = "guardian died"
                self._errors.append(
                    "The freeze guardian process died while filesystems were frozen; "
                    "the module thawed them itself."
                )
            elif silent:
                self._forced_reason = "guardian stopped answering"
                self._errors.append(
                    "The freeze guardian process did not answer the thaw request; "
                    "the module stopped it and thawed by itself."
                )
        for index in reversed(pending):
            start = time.monotonic_ns()
            try:
                fcntl.ioctl(self._fds[index], FITHAW, 0)
            except OSError as exc:
                if index in self._frozen or exc.errno != errno.EINVAL:
                    self._errors.append(self._thaw_error(self.mount_points[index], exc.errno))
            # Thawed by now, by us or by another process (the deputy): the window ends here at
            # the latest, which is what the report must not understate.
            self._thaw_times.append((start, time.monotonic_ns()))
        if self._failure is None and (pending or not self._all_frozen.is_set()):
            self._failure = VmSnapshotError(
                Status.FailedRetryableFsFreezeTimeout
                if silent
                else Status.FailedRetryableFsFreezeFailed,
                "The freeze guardian process "
                + ("did not answer in time" if silent else "died")
                + " while freezing; every filesystem was thawed.",
            )
        self._frozen.clear()
        self._in_flight = None
        self._finished = True
        _unlink(self._marker)
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
        window = _ms(first_freeze, last_thaw) if freezes else 0.0
        forced_reason = self._forced_reason
        if forced_reason is None and window > self.max_freeze_seconds * 1000:
            # However it ended, a window longer than the deadline is not the planned thaw.
            forced_reason = "window over the deadline"
            self._errors.append(
                f"The filesystems stayed frozen {window:.0f} ms, longer than max_freeze_seconds."
            )
        return ThawReport(
            frozen_mounts=[self.mount_points[index] for index in self._freeze_times],
            thaw_forced=forced_reason is not None,
            forced_reason=forced_reason,
            freeze_ms=_ms(
                first_freeze, max((end for _start, end in freezes), default=first_freeze)
            ),
            thaw_ms=_ms(min(start for start, _end in self._thaw_times), last_thaw)
            if self._thaw_times
            else 0.0,
            frozen_window_ms=window,
            errors=list(self._errors),
            mount_freeze_ms={
                self.mount_points[index]: _ms(start, end)
                for index, (start, end) in self._freeze_times.items()
            },
            expedited=self._expedited,
            sync_ms=self._sync_ms,
            sync_rounds=self._sync_rounds,
            last_sync_ms=self._last_sync_ms,
        )

    def _close_fds(self) -> None:
        while self._fds:
            os.close(self._fds.pop())


try:  # loaded when this module is imported, never while frozen
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


def _deadline_ns(first_freeze_ns: int, max_ns: int, release_by_ns: int) -> int:
    """When everything must be thawed: max_ns after the first FIFREEZE, or at release_by_ns."""
    deadline = first_freeze_ns + max_ns
    return min(deadline, release_by_ns) if release_by_ns else deadline


class _Flush:
    """syncfs() every mount in rounds until a round is short (``FLUSH_QUIET_SHARE``) or no
    shorter than the one before, then checkpoint ext4's journal; on a thread of its own and
    with fds of its own, so that the module can stop waiting and close its fds meanwhile."""

    def __init__(self, fds: list[int], quiet_ns: int) -> None:
        self._quiet_ns = quiet_ns
        self._abandoned = False
        self.rounds = 0
        self.last_ns = 0
        self.done = threading.Event()
        self._fds: list[int] = []
        try:
            for fd in fds:
                self._fds.append(os.dup(fd))
            threading.Thread(target=self._run, name="freeze-guardian-flush", daemon=True).start()
        except (OSError, RuntimeError) as exc:  # no fd or thread left: nothing to freeze with
            self._close()
            raise VmSnapshotError(
                Status.FailedRetryableFsFreezeFailed,
                f"Cannot start the flush before the freeze: {exc}.",
            ) from None

    def abandon(self) -> None:
        """Start no other syncfs() or checkpoint: the run goes on without this flush."""
        self._abandoned = True

    def _run(self) -> None:
        try:
            previous = time.monotonic_ns()
            while not self._abandoned:
                for fd in self._fds:
                    _syncfs(fd)  # an error (EIO) is not ours to report: FIFREEZE flushes again
                now = time.monotonic_ns()
                shorter = self.rounds == 0 or now - previous < self.last_ns
                self.last_ns, previous = now - previous, now
                self.rounds += 1
                if self.last_ns <= self._quiet_ns or not shorter:
                    break
            for fd in self._fds:
                if not self._abandoned:
                    _checkpoint(fd)
        finally:
            self._close()
            self.done.set()

    def _close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def _checkpoint(fd: int) -> None:
    """ext4 only: write the journal's blocks home now, not inside the freeze."""
    if _LIBC is None:
        return
    buffer = ctypes.create_string_buffer(256)  # struct statfs; f_type, a long, comes first
    if _LIBC.fstatfs(fd, buffer) != 0:
        return
    if ctypes.c_long.from_buffer(buffer).value == EXT4_SUPER_MAGIC:
        with contextlib.suppress(OSError):  # before 5.13, or no journal: FIFREEZE does it
            fcntl.ioctl(fd, EXT4_IOC_CHECKPOINT, bytes(4))


def _syncfs(fd: int) -> None:
    """syncfs(2): write back this filesystem's dirty data (Python has no os.syncfs)."""
    if _LIBC is None:
        os.sync()  # every filesystem: slower, same effect for ours
    else:
        _LIBC.syncfs(fd)
