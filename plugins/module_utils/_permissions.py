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
* ``..`` is resolved by the kernel, never by text: the walk opens ``..`` from the directory it
  stands in, so ``/etc/link/../x`` names the ``x`` next to the link's *target*, as ``open()``
  would, and that directory is checked too.
* ours: every path must be valid text (a lone surrogate from JSON cannot name a file), and the
  file must live on a filesystem whose ownership and modes the kernel enforces
  (``TRUSTED_FILESYSTEMS``). FUSE, network filesystems (NFS, CIFS/SMB, 9p, virtiofs) and
  filesystems without Unix ownership (vfat, exfat, ntfs) report owners and modes that their
  server or mount options make up, so a file another user wrote can claim root:root 0700
  there: such a file is refused with the role's "not safe" code.
* scripts: ``check_script`` also copies the checked bytes into a sealed ``memfd``
  (``F_SEAL_WRITE|F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL``); the runner executes that copy, so
  nothing done to the file after the check (a pre-script that loosens the post-script's mode,
  another user appending to it) changes what runs. ``recheck()`` looks at the file's descriptor
  again right before it runs and says what changed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from dataclasses import dataclass

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
# Filesystems whose owner and mode bits the kernel keeps and enforces for local files. Anything
# else (fuse.*, nfs, cifs, smb3, 9p, virtiofs, vfat, exfat, ntfs3, ...) is refused.
TRUSTED_FILESYSTEMS = frozenset(
    {
        "ext2",
        "ext3",
        "ext4",
        "xfs",
        "btrfs",
        "f2fs",
        "jfs",
        "reiserfs",
        "bcachefs",
        "zfs",
        "tmpfs",
        "ramfs",
        "overlay",
        "squashfs",
        "erofs",
    }
)
# The largest script copied into memory before it runs.
MAX_SCRIPT_BYTES = 64 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024
_SEALS = ("F_SEAL_SEAL", "F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE")


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
        chunks: list[bytes] = []
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
    """A checked pre- or post-script; the runner executes `run_fd`, never its path.

    `run_fd` is the sealed in-memory copy of the checked bytes (see the module docstring), or
    the file's own descriptor where the kernel offers no sealed memfd.
    """

    def __init__(self, path: str, fd: int, role: str, mode: int) -> None:
        super().__init__(path, fd, role, mode)
        self.sealed_fd = -1
        self._identity: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def executable(self) -> bool:
        return bool(self.mode & stat.S_IXUSR)

    @property
    def run_fd(self) -> int:
        return self.sealed_fd if self.sealed_fd >= 0 else self.fd

    def seal(self) -> None:
        """Copy the checked bytes into a sealed memfd; raise VmSnapshotError when they change."""
        rule = _RULES[self.role]
        before = os.fstat(self.fd)
        if before.st_size > MAX_SCRIPT_BYTES:
            raise VmSnapshotError(
                rule.refused,
                f"The {rule.what} {self.path!r} is larger than {MAX_SCRIPT_BYTES} bytes.",
            )
        try:
            memfd = os.memfd_create("vmsnapshot-script", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except (AttributeError, OSError):
            self._identity = _identity(before)
            return  # no sealed copy here: recheck() guards the file itself
        try:
            offset = 0
            while offset <= MAX_SCRIPT_BYTES:
                chunk = os.pread(self.fd, _COPY_CHUNK, offset)
                if not chunk:
                    break
                os.write(memfd, chunk)
                offset += len(chunk)
            if _identity(os.fstat(self.fd)) != _identity(before) or offset != before.st_size:
                raise VmSnapshotError(
                    rule.refused, f"The {rule.what} {self.path!r} changed while it was read."
                )
            seals = 0
            for name in _SEALS:
                seals |= getattr(fcntl, name)
            fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, seals)
        except BaseException:
            os.close(memfd)
            raise
        self.sealed_fd = memfd
        self._identity = _identity(before)

    def recheck(self) -> str | None:
        """Look at the file again right before it runs: None, or what changed since the check.

        With a sealed copy the checked bytes run whatever the answer; without one a change is
        a refusal (the caller does not run the script).
        """
        st = os.fstat(self.fd)
        changes = []
        if st.st_uid != 0:
            changes.append(f"its owner is now uid {st.st_uid}")
        mode = stat.S_IMODE(st.st_mode)
        if mode & (_RULES[self.role].forbidden_bits | stat.S_ISUID | stat.S_ISGID):
            changes.append(f"its mode is now {mode:04o}")
        if _identity(st) != self._identity:
            changes.append("its content or metadata changed")
        if not changes:
            return None
        return f"The {_RULES[self.role].what} {self.path} changed after the check: " + (
            ", ".join(changes)
        )

    def close(self) -> None:
        if self.sealed_fd >= 0:
            os.close(self.sealed_fd)
            self.sealed_fd = -1
        super().close()


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _fs_type(fd: int) -> str | None:
    """The type of the filesystem holding `fd` (its mount's, from /proc), or None."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as handle:
            mnt_id = next(line.split()[1] for line in handle if line.startswith("mnt_id:"))
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if fields and fields[0] == mnt_id and "-" in fields:
                    return fields[fields.index("-") + 1]
    except (OSError, StopIteration, IndexError):
        return None
    return None


def _components(path: str) -> list[str]:
    # Not normpath: ".." after a symbolic link is the link target's parent, which only the
    # kernel knows; the walk opens ".." from the directory it stands in.
    return [part for part in path.split("/") if part not in ("", ".")]


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


def _open_parent(path: str, rule: _Rule) -> tuple[int, str]:
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
                if part == "..":
                    next_fd = os.open("..", _DIR_FLAGS, dir_fd=fd)
                    os.close(fd)
                    fd = next_fd
                    where = os.path.dirname(where)
                    _check_dir(fd, where, path, rule)
                    parts.pop(0)
                    continue
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
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise VmSnapshotError(
            rule.not_found,
            f"The {rule.what} location {path!a} is not valid text (it holds a lone surrogate).",
        ) from None
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
        fs_type = _fs_type(fd)
        if fs_type not in TRUSTED_FILESYSTEMS:
            raise VmSnapshotError(
                rule.refused,
                f"The {rule.what} {path!r} is on a {fs_type or 'unknown'} filesystem, whose "
                "owners and modes the kernel does not enforce; keep it on a local filesystem "
                f"({', '.join(sorted(TRUSTED_FILESYSTEMS))}).",
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
    script = _open_checked(path, role, CheckedScript)
    try:
        script.seal()
    except OSError as exc:
        script.close()
        raise VmSnapshotError(
            _RULES[role].unreadable, f"The {_RULES[role].what} {path!r} cannot be read: {exc}."
        ) from None
    except BaseException:
        script.close()
        raise
    return script
