# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""The run log: lines kept in memory for the log blob, appended to extension.log when allowed.

While filesystems are frozen nothing may be written to disk, so `hold()` keeps new lines in
memory only and `release()` writes them once the thaw is done.

Every line is scrubbed of secrets by value (`_redact.scrub`) as it arrives, and again as it
leaves (file and log blob), in case a secret was registered after the line was added.
"""

from __future__ import annotations

import os
import time

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._redact import scrub

LOG_FILE_NAME = "extension.log"
# extension.log is rotated once it passes this size, keeping one previous file.
MAX_LOG_BYTES = 8 * 1024 * 1024


class RunLog:
    """Lines of one run, redacted as they arrive."""

    def __init__(self, log_dir: str | None) -> None:
        self.path = os.path.join(log_dir, LOG_FILE_NAME) if log_dir else None
        self.lines: list[str] = []
        self._unwritten = 0
        self._held = False
        self.write_error: str | None = None

    def info(self, message: str) -> None:
        self._add("INFO", message)

    def warning(self, message: str) -> None:
        self._add("WARNING", message)

    def error(self, message: str) -> None:
        self._add("ERROR", message)

    def _add(self, level: str, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        self.lines.append(f"{stamp}Z {level} [{os.getpid()}] {scrub(message)}")
        self._unwritten += 1
        if not self._held:
            self.flush()

    def hold(self) -> None:
        """Keep lines in memory only (filesystems are about to freeze)."""
        self._held = True

    def release(self) -> None:
        """Write what was held (the thaw is done)."""
        self._held = False
        self.flush()

    def flush(self) -> None:
        if not self.path or not self._unwritten or self.write_error:
            return
        pending = self.lines[-self._unwritten :]
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            self._rotate_if_large()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as handle:
                handle.write(scrub("\n".join(pending)) + "\n")
            self._unwritten = 0
        except OSError as exc:
            # A log that cannot be written must not fail the snapshot; the result says so.
            self.write_error = f"cannot write {self.path}: {exc.strerror}"

    def _rotate_if_large(self) -> None:
        try:
            if os.path.getsize(self.path) > MAX_LOG_BYTES:
                os.replace(self.path, self.path + ".1")
        except FileNotFoundError:
            pass

    def text(self) -> str:
        return scrub("\n".join(self.lines)) + "\n"
