# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""Ownership and mode checks on the configuration files and the scripts, done on open descriptors.

The checked file is the file that is read or run: each file is opened with ``O_NOFOLLOW`` below a
directory chain that was itself opened and checked one level at a time from ``/``, every check
uses ``fstat`` on the open descriptor, and the caller reads or executes that descriptor.

Rules (the reference's, plus ours):

* configuration JSON: owner root (uid 0), no owner execute, no group or other bits (317);
* plugin host INI: owner root, group and other at most read (314);
* scripts: owner root, no group or other bits (306/307); missing or not a regular file: 302/303;
* ours, for all of them: not a symbolic link, no setuid or setgid bit, and every directory from
  ``/`` down to the file owned by root and not writable by group or other. A group/other-writable
  directory is accepted only with the sticky bit (``/tmp``): there only an entry's owner may
  rename or remove it, and every entry on our path must be root-owned anyway. Symbolic links
  among the *directories* are followed, but only after the directory holding the link passed
  these checks, so no one but root can redirect them.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import List, Tuple

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

ROLE_CONFIG = "config"
ROLE_HOST_CONFIG = "host_config"
ROLE_PRE = "pre"
ROLE_POST = "post"

_MAX_SYMLINKS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted at the path must not hang; it is refused as "not a file".
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


@dataclass(frozen=True)
class _Rule:
    what: str
    not_found: Status
    refused: Status
    unreadable: Status
    forbidden_bits: int
    wanted: str


_RULES = {
    ROLE_CONFIG: _Rule(
        "pre/post-script configuration",
        Status.FailedPrepostPluginConfigNotFound,
        Status.FailedPrepostPluginConfigPermissionError,
        Status.FailedPrepostPluginConfigParsing,
        0o177,
        "no owner execute bit and no group or other bits, e.g. 0600",
    ),
    ROLE_HOST_CONFIG: _Rule(
        "plugin host configuration",
        Status.FailedPrepostPluginhostConfigNotFound,
        Status.FailedPrepostPluginhostConfigPermissionError,
        Status.FailedPrepostPluginhostConfigParsing,
        0o033,
        "group and other may at most read, e.g. 0644 or 0600",
    ),
    ROLE_PRE: _Rule(
        "pre-script",
        Status.FailedPrepostPreScriptNotFound,
        Status.FailedPrepostPreScriptPermissionError,
        Status.FailedPrepostPreScriptNotFound,
        0o077,
        "no group or other bits, e.g. 0700",
    ),
    ROLE_POST: _Rule(
        "post-script",
        Status.FailedPrepostPostScriptNotFound,
        Status.FailedPrepostPostScriptPermissionError,
        Status.FailedPrepostPostScriptNotFound,
        0o077,
        "no group or other bits, e.g. 0700",
    ),
}


class CheckedFile:
    """An open descriptor on a file that passed every check of its role; close it when done."""

    def __init__(self, path: str, fd: int, role: str, mode: int) -> None:
        self.path = path
        self.fd = fd
        self.role = role
        self.mode = mode

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def read(self, limit: int) -> bytes:
        """Read the whole file from the descriptor, at most `limit` + 1 bytes."""
        chunks: List[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.pread(self.fd, limit + 1 - size, size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> CheckedFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r}, fd={self.fd}, role={self.role!r})"


class CheckedScript(CheckedFile):
    """A checked pre- or post-script; the runner executes its descriptor, never its path."""

    @property
    def executable(self) -> bool:
        return bool(self.mode & stat.S_IXUSR)


def _components(path: str) -> List[str]:
    return [part for part in os.path.normpath(path).split("/") if part not in ("", ".")]


def _check_dir(fd: int, where: str, path: str, rule: _Rule) -> None:
    st = os.fstat(fd)
    subject = f"The directory {where!r} above the {rule.what} {path!r}"
    if st.st_uid != 0:
        raise VmSnapshotError(rule.refused, f"{subject} is owned by uid {st.st_uid}, not root.")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise VmSnapshotError(
            rule.refused,
            f"{subject} is writable by group or other (mode {stat.S_IMODE(st.st_mode):04o}), "
            "so someone other than root could replace the file.",
        )


def _open_parent(path: str, rule: _Rule) -> Tuple[int, str]:
    """Open and check every directory from / down to the one holding `path`.

    Returns (descriptor of that directory, file name).
    """
    parts = _components(path)
    if not parts:
        raise VmSnapshotError(rule.not_found, f"The {rule.what} {path!r} is not a regular file.")
    name = parts.pop()
    for _hop in range(_MAX_SYMLINKS + 1):
        fd = os.open("/", _DIR_FLAGS)
        where = "/"
        try:
            _check_dir(fd, where, path, rule)
            while parts:
                part = parts[0]
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    # Safe to follow: the directory holding the link is trusted.
                    target = os.readlink(part, dir_fd=fd)
                    parts = _components(os.path.join(where, target)) + parts[1:]
                    break
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = next_fd
                where = os.path.join(where, part)
                _check_dir(fd, where, path, rule)
                parts.pop(0)
            else:
                return fd, name
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise VmSnapshotError(
                    rule.not_found, f"The {rule.what} {path!r} does not exist."
                ) from None
            raise VmSnapshotError(
                rule.refused,
                f"The path to the {rule.what} {path!r} cannot be used: {exc.strerror}.",
            ) from None
        except VmSnapshotError:
            os.close(fd)
            raise
        os.close(fd)
    raise VmSnapshotError(
        rule.refused, f"The path to the {rule.what} {path!r} has too many symbolic links."
    )


def _describe_type(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "another kind of file"


def _open_checked(path: str, role: str, cls: type) -> CheckedFile:
    rule = _RULES[role]
    if not isinstance(path, str) or not os.path.isabs(path) or "\x00" in path:
        raise VmSnapshotError(
            rule.not_found, f"The {rule.what} location {path!r} is not an absolute path."
        )
    dir_fd, name = _open_parent(path, rule)
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise VmSnapshotError(
                rule.refused,
                f"The {rule.what} {path!r} is a symbolic link; point the configuration at the "
                "real file.",
            ) from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise VmSnapshotError(
                rule.not_found, f"The {rule.what} {path!r} does not exist."
            ) from None
        raise VmSnapshotError(
            rule.unreadable, f"The {rule.what} {path!r} cannot be opened: {exc.strerror}."
        ) from None
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISREG(st.st_mode):
            raise VmSnapshotError(
                rule.not_found,
                f"The {rule.what} {path!r} is not a regular file (it is "
                f"{_describe_type(st.st_mode)}).",
            )
        if st.st_uid != 0:
            raise VmSnapshotError(
                rule.refused, f"The {rule.what} {path!r} is owned by uid {st.st_uid}, not root."
            )
        if mode & (stat.S_ISUID | stat.S_ISGID):
            raise VmSnapshotError(
                rule.refused,
                f"The {rule.what} {path!r} has the setuid or setgid bit (mode {mode:04o}).",
            )
        if mode & rule.forbidden_bits:
            raise VmSnapshotError(
                rule.refused,
                f"The {rule.what} {path!r} has mode {mode:04o}; it needs {rule.wanted}.",
            )
    except BaseException:
        os.close(fd)
        raise
    return cls(path, fd, role, mode)


def open_checked(path: str, role: str) -> CheckedFile:
    """Open a configuration file (`role` ``config`` or ``host_config``) after every check passed.

    Raises VmSnapshotError with the role's code: not found (316/313), refused (317/314) or
    unreadable (305/304).
    """
    return _open_checked(path, role, CheckedFile)


def check_script(path: str, role: str) -> CheckedScript:
    """Open the pre- or post-script (`role` ``pre`` or ``post``) after every check passed.

    Raises VmSnapshotError: 302/303 when it is not a regular file, 306/307 when it is not safe.
    """
    if role not in (ROLE_PRE, ROLE_POST):
        raise ValueError(f"role must be {ROLE_PRE!r} or {ROLE_POST!r}, not {role!r}")
    return _open_checked(path, role, CheckedScript)
