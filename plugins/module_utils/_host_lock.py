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


class HostLock:
    def __init__(self, state_dir: str, name: bytes = HOST_LOCK_NAME) -> None:
        self.path = os.path.join(state_dir, LOCK_FILE_NAME)
        self.name = name
        self._fd: int | None = None
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
            shown = self.name.lstrip(b"\0").decode("ascii", "replace")
            raise self._refused(_holder_pid(self.name), f"@{shown}") from None
        self._socket = sock

    def _lock_state_dir(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            # The reference's codes for an unexpected OS error: 12 for ENOENT, else 2.
            raise VmSnapshotError(
                Status.error_12 if exc.errno == errno.ENOENT else Status.error,
                f"The state directory {os.path.dirname(self.path)} cannot be used: "
                f"{exc.strerror}; this run did nothing.",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise self._refused(holder, self.path) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def acquire(self) -> None:
        self._bind()
        try:
            self._lock_state_dir()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> HostLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
