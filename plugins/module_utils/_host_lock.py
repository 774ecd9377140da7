# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""One snapshot run per host, whatever its state directory.

The lock is a unix socket bound to the abstract name ``HOST_LOCK_NAME``: the kernel allows one
binding of a name per network namespace and drops it when the holder dies (even by SIGKILL),
nothing is written to disk, and a second run finds the holder's pid in /proc. A host is one
network namespace: separate containers or namespaces with their own network stack are separate
hosts with their own locks, while every run that shares the host's network stack - any state
directory, any mount namespace - shares one lock. A lock file would be per filesystem: runs
with different state directories (or in mount namespaces that do not share the file) would not
see each other.

The run also takes an exclusive ``flock`` on ``snapshot.lock`` in its state directory, which
guards that directory's files when two network namespaces share it.

Unlike the reference, whose lock is advisory (it freezes even when it could not take it), a run
that cannot take the lock stops before doing anything.

An abstract name has no owner or mode: any local user can bind it first and so refuse every
run. A run needs root, so a holder that is not root is not a run: then the host lock is an
exclusive ``flock`` on ``SQUATTED_LOCK_PATH`` instead (in ``/run``, where only root creates
files), which every run of the same mount namespace shares.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

LOCK_FILE_NAME = "snapshot.lock"
HOST_LOCK_NAME = b"\0appconsistent.vmsnapshot.host-lock"
# The host lock while an unprivileged process holds HOST_LOCK_NAME.
SQUATTED_LOCK_PATH = "/run/appconsistent.vmsnapshot.host.lock"


def _holder_pid(name: bytes) -> str:
    """The pid of a process holding the socket bound to `name`, or "unknown".

    Read from /proc (the socket's inode in ``/proc/net/unix``, then the process with a
    descriptor on it), not by connecting: the holder never accepts, so probes would fill its
    backlog.
    """
    wanted = "@" + name[1:].decode("ascii", "replace")
    try:
        with open("/proc/net/unix", encoding="ascii", errors="replace") as handle:
            inodes = {
                fields[6]
                for fields in (line.split() for line in handle)
                if len(fields) >= 8 and fields[7] == wanted
            }
    except OSError:
        return "unknown"
    targets = {f"socket:[{inode}]" for inode in inodes}
    for pid in (entry for entry in os.listdir("/proc") if entry.isdigit()):
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in descriptors:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                    return pid
            except OSError:
                continue
    return "unknown"


def _owned_by_root(pid: str) -> bool:
    """The process is root's (or cannot be looked at: then it counts as a run)."""
    try:
        return os.stat(f"/proc/{int(pid)}").st_uid == 0
    except (OSError, ValueError):
        return True


class HostLock:
    def __init__(
        self, state_dir: str, name: bytes = HOST_LOCK_NAME, squatted_path: str = SQUATTED_LOCK_PATH
    ) -> None:
        self.path = os.path.join(state_dir, LOCK_FILE_NAME)
        self.name = name
        self.squatted_path = squatted_path
        self._fd: int | None = None
        self._squatted_fd: int | None = None
        self._socket: socket.socket | None = None

    def _refused(self, holder: str, where: str) -> VmSnapshotError:
        return VmSnapshotError(
            Status.error,
            f"Another snapshot run (pid {holder}) holds the host lock {where}; this run did "
            "nothing.",
        )

    def _bind(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # not inherited by children
        try:
            sock.bind(self.name)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise VmSnapshotError(
                    Status.error,
                    f"The host lock cannot be taken: {exc.strerror}; this run did nothing.",
                ) from None
            holder = _holder_pid(self.name)
            if holder == "unknown" or _owned_by_root(holder):
                shown = self.name.lstrip(b"\0").decode("ascii", "replace")
                raise self._refused(holder, f"@{shown}") from None
            try:
                self._squatted_fd = self._flock(self.squatted_path)
            except OSError as exc:
                raise VmSnapshotError(
                    Status.error,
                    f"The host lock is held by a process that is not root (pid {holder}), and "
                    f"{self.squatted_path} cannot be used instead: {exc.strerror}; this run did "
                    "nothing.",
                ) from None
            return
        self._socket = sock

    def _flock(self, path: str) -> int:
        """An exclusive flock on `path` holding our pid; refused when another run holds it."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise self._refused(holder, path) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def _lock_state_dir(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            self._fd = self._flock(self.path)
        except OSError as exc:
            # The reference's codes for an unexpected OS error: 12 for ENOENT, else 2.
            raise VmSnapshotError(
                Status.error_12 if exc.errno == errno.ENOENT else Status.error,
                f"The state directory {os.path.dirname(self.path)} cannot be used: "
                f"{exc.strerror}; this run did nothing.",
            ) from None

    def acquire(self) -> None:
        self._bind()
        try:
            self._lock_state_dir()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for name in ("_fd", "_squatted_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> HostLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
