# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""One snapshot run per host: an exclusive, non-blocking lock on a file in the state directory.

Unlike the reference, whose lock is advisory (it freezes even when it could not take it), a run
that cannot take the lock stops before doing anything.
"""

from __future__ import annotations

import errno
import fcntl
import os

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

LOCK_FILE_NAME = "snapshot.lock"


class HostLock:
    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, LOCK_FILE_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
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
            raise VmSnapshotError(
                Status.error,
                f"Another snapshot run (pid {holder}) holds the host lock {self.path}; "
                "this run did nothing.",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> HostLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
