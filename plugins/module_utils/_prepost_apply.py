# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""Enforce a host's whole pre/post-script desired state in one pass: validate, plan, apply.

``validate()`` checks every input and raises ``ApplyError`` before anything is touched.
``plan()`` only reads: it walks every directory from ``/`` with directory descriptors
(``O_NOFOLLOW``), compares each file through a descriptor opened with ``O_NOFOLLOW`` and refuses a
symbolic link anywhere it would write. ``apply()`` then creates the missing directories (root,
never group/other writable), writes what differs through a temp file renamed in the same
directory descriptor (fsync'd), fixes owner and mode on the open descriptor, and removes what
``state=absent`` asks for. The path-based ``_atomic_file.write_atomically`` is not used because a
path could be swapped for a symbolic link between the check and the write; a descriptor cannot.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._consistency import RANK
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._prepost_config import (
    parse_host_config,
    parse_plugin_config,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    VmSnapshotError,
)

KIND_CONFIG = "config"
KIND_HOST_CONFIG = "host_config"
KIND_SCRIPT = "script"
KIND_SUPPORT = "support"

CONFIG_MODE = 0o600
HOST_CONFIG_MODE = 0o600
NEW_DIR_MODE = 0o755
# Azure's rules: nothing for group/other on scripts and configs; never setuid/setgid/sticky.
_FORBIDDEN = {
    KIND_CONFIG: 0o7177,
    KIND_HOST_CONFIG: 0o7033,
    KIND_SCRIPT: 0o7077,
    KIND_SUPPORT: 0o7022,
}
_WANTED = {
    KIND_CONFIG: "no owner execute, no group or other bits, e.g. 0600",
    KIND_HOST_CONFIG: "group and other may at most read, e.g. 0600",
    KIND_SCRIPT: "no group or other bits and no setuid/setgid, as the snapshot requires: 0700",
    KIND_SUPPORT: "not writable by group or other, no setuid/setgid, e.g. 0700",
}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_MAX_LINK_HOPS = 40
# Larger or binary content gets a checksum line in the diff instead of the text.
MAX_DIFF_BYTES = 256 * 1024


class ApplyError(Exception):
    """Bad input or an unsafe path: the message says which and why; nothing was changed."""


@dataclass(frozen=True)
class Desired:
    """One file the host must have (or, with state=absent, must not have)."""

    path: str
    kind: str
    content: bytes
    mode: int


@dataclass
class Change:
    """What differs for one file; `before` is None when the file is missing."""

    desired: Desired
    before: bytes | None
    before_mode: int | None = None
    before_owner: tuple[int, int] | None = None
    remove: bool = False

    @property
    def content_differs(self) -> bool:
        return self.before != self.desired.content

    @property
    def attrs_differ(self) -> bool:
        return self.before is not None and (
            self.before_mode != self.desired.mode or self.before_owner != (0, 0)
        )


@dataclass
class Plan:
    dirs: list[tuple[str, int]] = field(default_factory=list)  # (path, mode) to create
    dir_modes: list[tuple[str, int, int]] = field(default_factory=list)  # (path, old, new)
    changes: list[Change] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.dirs or self.dir_modes or self.changes)


def parse_mode(value: Any, what: str, kind: str) -> int:
    """An octal mode given as a string ('0700'); refuses what the snapshot's checks refuse."""
    text = str(value).strip() if value is not None else ""
    if isinstance(value, bool) or not text or any(c not in "01234567" for c in text):
        raise ApplyError(f"{what}: the mode {value!r} is not an octal string such as '0700'.")
    mode = int(text, 8)
    if mode > 0o7777 or mode & _FORBIDDEN[kind]:
        raise ApplyError(
            f"{what}: the mode {text} is not allowed; it must leave out the bits "
            f"{_FORBIDDEN[kind]:04o} ({_WANTED[kind]})."
        )
    return mode


def parse_dir_mode(value: Any) -> int:
    what = "config_dir_mode"
    text = str(value).strip() if value is not None else ""
    if isinstance(value, bool) or not text or any(c not in "01234567" for c in text):
        raise ApplyError(f"{what}: the mode {value!r} is not an octal string such as '0755'.")
    mode = int(text, 8)
    if mode > 0o7777 or mode & 0o7022 or mode & 0o700 != 0o700:
        raise ApplyError(
            f"{what}: the mode {text} is not allowed; the directory must not be writable by group "
            "or other (the snapshot refuses it with 317), carry no special bits, and give root "
            "rwx, e.g. '0755'."
        )
    return mode


def check_path(path: Any, what: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or path == "/":
        raise ApplyError(f"{what}: {path!r} is not an absolute file path.")
    parts = path.split("/")[1:]
    if any(part in ("", ".", "..") for part in parts) or "\0" in path:
        raise ApplyError(
            f"{what}: {path!r} must be a normalised absolute path (no '.', '..' or '//')."
        )
    return path


def decode_b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ApplyError(f"{what}: the content must be a base64 string.")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise ApplyError(f"{what}: the content is not valid base64.") from None


def validate(params: dict[str, Any]) -> tuple[int, list[Desired]]:
    """Every desired file, checked; raises ApplyError before anything on the host changes.

    With state=absent only the paths matter: the content may be left out.
    """
    dir_mode = parse_dir_mode(params.get("config_dir_mode"))
    check_path(params.get("config_dir"), "config_dir")
    if params.get("state") == "absent":
        return dir_mode, _paths_only(params)
    desired: list[Desired] = []
    host_timeout = 1800
    host = params.get("host_config")
    if host:
        path = check_path(host.get("path"), "host_config.path")
        data = (host.get("content") or "").encode("utf-8")
        try:
            parsed = parse_host_config(data, path)
        except VmSnapshotError as exc:
            raise ApplyError(f"host_config: {exc.message}") from None
        host_timeout = parsed.timeout_seconds
        desired.append(Desired(path, KIND_HOST_CONFIG, data, HOST_CONFIG_MODE))
    for index, config in enumerate(params.get("configs") or []):
        path = check_path(config.get("path"), f"configs[{index}].path")
        data = (config.get("content") or "").encode("utf-8")
        try:
            parse_plugin_config(data, path, host_timeout)
        except VmSnapshotError as exc:
            raise ApplyError(f"configs[{index}]: {exc.message}") from None
        desired.append(Desired(path, KIND_CONFIG, data, CONFIG_MODE))
    for key, kind in (("scripts", KIND_SCRIPT), ("support_files", KIND_SUPPORT)):
        for index, item in enumerate(params.get(key) or []):
            what = f"{key}[{index}]"
            path = check_path(item.get("path"), f"{what}.path")
            data = decode_b64(item.get("content"), f"{what} ({path})")
            mode = parse_mode(item.get("mode") or "0700", f"{what} ({path})", kind)
            desired.append(Desired(path, kind, data, mode))
    seen: dict[str, str] = {}
    for item in desired:
        if item.path in seen:
            raise ApplyError(f"{item.path} is given twice ({seen[item.path]} and {item.kind}).")
        seen[item.path] = item.kind
    return dir_mode, desired


def _paths_only(params: dict[str, Any]) -> list[Desired]:
    desired = []
    groups = (("configs", KIND_CONFIG), ("scripts", KIND_SCRIPT), ("support_files", KIND_SUPPORT))
    for key, kind in groups:
        for index, item in enumerate(params.get(key) or []):
            path = check_path(item.get("path"), f"{key}[{index}].path")
            desired.append(Desired(path, kind, b"", 0))
    return desired


def _safe_link(parent_fd: int, name: str) -> bool:
    """A directory symlink is followed only when root owns it and its non-writable parent."""
    link = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    parent = os.fstat(parent_fd)
    return (
        link.st_uid == 0
        and parent.st_uid == 0
        and (not parent.st_mode & 0o022 or bool(parent.st_mode & stat.S_ISVTX))
    )


def open_dir(path: str, create: list[tuple[str, int]] | None = None) -> int | None:
    """A descriptor of directory `path`, walked from `/` one O_NOFOLLOW step at a time.

    Returns None when a component is missing (its path and every missing one below it are added
    to `create` when given). A symbolic link is followed only if _safe_link allows it.
    """
    parts = [part for part in path.split("/") if part]
    fd = os.open("/", _DIR_FLAGS)
    walked = ""
    hops = 0
    index = 0
    try:
        while index < len(parts):
            name = parts[index]
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if create is not None:
                    for missing in range(index, len(parts)):
                        create.append(("/" + "/".join(parts[: missing + 1]), NEW_DIR_MODE))
                os.close(fd)
                return None
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                here = f"{walked}/{name}"
                if not stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise ApplyError(f"{here} is not a directory.") from None
                hops += 1
                if hops > _MAX_LINK_HOPS or not _safe_link(fd, name):
                    raise ApplyError(
                        f"{here} is a symbolic link that root does not own in a root-only "
                        "directory; refusing to follow it."
                    ) from None
                target = os.readlink(name, dir_fd=fd)
                base = target if target.startswith("/") else f"{walked}/{target}"
                parts = [p for p in os.path.normpath(base).split("/") if p] + parts[index + 1 :]
                os.close(fd)
                fd = os.open("/", _DIR_FLAGS)
                walked, index = "", 0
                continue
            os.close(fd)
            fd = child
            walked = f"{walked}/{name}"
            index += 1
        return fd
    except BaseException:
        os.close(fd)
        raise


def _read_file(dir_fd: int, name: str, path: str) -> tuple[bytes | None, os.stat_result | None]:
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ApplyError(
                f"{path} is a symbolic link; refusing to follow or replace it."
            ) from None
        raise ApplyError(f"{path} cannot be opened: {exc.strerror}.") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ApplyError(f"{path} exists and is not a regular file.")
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks), info
    finally:
        os.close(fd)


def plan(
    dir_mode: int,
    config_dir: str,
    desired: list[Desired],
    state: str = "present",
    stale: tuple[str, bytes] | None = None,
) -> Plan:
    """What must change; reads only. `stale` is (path, first bytes) of a file to remove if it
    starts with them (the host config the role wrote earlier, no longer wanted)."""
    result = Plan()
    creating: list[tuple[str, int]] = []
    if state == "present":
        fd = open_dir(config_dir, creating)
        if fd is not None:
            try:
                current = stat.S_IMODE(os.fstat(fd).st_mode)
            finally:
                os.close(fd)
            if current != dir_mode:
                result.dir_modes.append((config_dir, current, dir_mode))
    targets = list(desired)
    if stale is not None:
        targets.append(Desired(stale[0], "stale", stale[1], 0))
    for item in targets:
        directory, name = os.path.split(item.path)
        fd = open_dir(directory, creating if state == "present" and item.kind != "stale" else None)
        if fd is None:
            if state == "present" and item.kind != "stale":
                result.changes.append(Change(item, None))
            continue
        try:
            before, info = _read_file(fd, name, item.path)
        finally:
            os.close(fd)
        if before is None:
            if state == "present" and item.kind != "stale":
                result.changes.append(Change(item, None))
            continue
        if item.kind == "stale":
            if before.startswith(item.content):
                result.changes.append(Change(item, before, remove=True))
            continue
        change = Change(
            item,
            before,
            stat.S_IMODE(info.st_mode),
            (info.st_uid, info.st_gid),
            remove=state == "absent",
        )
        if change.remove or change.content_differs or change.attrs_differ:
            result.changes.append(change)
    # Each missing directory once, parents first; the config dir gets its own mode.
    for path, mode in sorted(set(creating), key=lambda item: item[0].count("/")):
        result.dirs.append((path, dir_mode if path == config_dir.rstrip("/") else mode))
    return result


def _write(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    temp = f".{name}.{os.getpid()}.tmp"
    fd = os.open(
        temp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=dir_fd,
    )
    try:
        os.fchown(fd, 0, 0)
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def _fix_attrs(dir_fd: int, name: str, mode: int) -> None:
    fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    try:
        os.fchown(fd, 0, 0)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def apply(todo: Plan) -> None:
    """Carry out a plan made just before; every step works on descriptors, never on a path."""
    for path, mode in todo.dirs:
        parent, name = os.path.split(path)
        fd = open_dir(parent)
        if fd is None:
            raise ApplyError(f"{parent} vanished while its directories were being created.")
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=fd)
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            try:
                os.fchown(child, 0, 0)
                os.fchmod(child, mode)
            finally:
                os.close(child)
        finally:
            os.close(fd)
    for path, _old, mode in todo.dir_modes:
        fd = open_dir(path)
        if fd is not None:
            try:
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
    for change in todo.changes:
        directory, name = os.path.split(change.desired.path)
        fd = open_dir(directory)
        if fd is None:
            raise ApplyError(f"{directory} vanished before {change.desired.path} was written.")
        try:
            if change.remove:
                os.unlink(name, dir_fd=fd)
                os.fsync(fd)
            elif change.content_differs:
                _write(fd, name, change.desired.content, change.desired.mode)
            else:
                _fix_attrs(fd, name, change.desired.mode)
        finally:
            os.close(fd)


def _text(data: bytes | None, kind: str) -> str:
    if data is None:
        return ""
    if kind in (KIND_CONFIG, KIND_HOST_CONFIG, "stale") or (
        len(data) <= MAX_DIFF_BYTES and b"\0" not in data
    ):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return (
        f"# binary or large content: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}\n"
    )


def diffs(todo: Plan) -> list[dict[str, Any]]:
    """Ansible diff entries: one per directory, content and attribute change."""
    out: list[dict[str, Any]] = []
    for path, mode in todo.dirs:
        out.append(
            {
                "before": {"path": path, "state": "absent"},
                "after": {"path": path, "state": "directory", "mode": f"{mode:04o}", "owner": 0},
            }
        )
    for path, old, new in todo.dir_modes:
        out.append(
            {
                "before": {"path": path, "mode": f"{old:04o}"},
                "after": {"path": path, "mode": f"{new:04o}"},
            }
        )
    for change in todo.changes:
        item = change.desired
        if change.remove:
            out.append(
                {
                    "before_header": item.path,
                    "after_header": f"{item.path} (removed)",
                    "before": _text(change.before, item.kind),
                    "after": "",
                }
            )
            continue
        if change.content_differs:
            out.append(
                {
                    "before_header": item.path if change.before is not None else "/dev/null",
                    "after_header": item.path,
                    "before": _text(change.before, item.kind),
                    "after": _text(item.content, item.kind),
                }
            )
        if change.before is None or change.attrs_differ:
            before = (
                {"path": item.path, "state": "absent"}
                if change.before is None
                else {
                    "path": item.path,
                    "mode": f"{change.before_mode:04o}",
                    "owner": change.before_owner[0],
                    "group": change.before_owner[1],
                }
            )
            out.append(
                {
                    "before": before,
                    "after": {
                        "path": item.path,
                        "mode": f"{item.mode:04o}",
                        "owner": 0,
                        "group": 0,
                    },
                }
            )
    return out


def summary(todo: Plan) -> list[str]:
    """One line per change, for the task's result."""
    lines = [f"created directory {item[0]}" for item in todo.dirs]
    lines += [f"mode of {path} {old:04o} -> {new:04o}" for path, old, new in todo.dir_modes]
    for change in todo.changes:
        path = change.desired.path
        if change.remove:
            lines.append(f"removed {path}")
        elif change.before is None:
            lines.append(f"created {path}")
        elif change.content_differs:
            lines.append(f"rewrote {path}")
        else:
            lines.append(f"owner/mode of {path} repaired")
    return lines


def meets(consistency: str, required: str | None) -> bool | None:
    if not required:
        return None
    return RANK.get(consistency, 0) >= RANK[required]
