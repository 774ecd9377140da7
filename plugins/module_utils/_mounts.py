# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""The mount table (``/proc/self/mountinfo``) and which filesystems to freeze, in which order.

The rules follow the reference (docs/reference-behaviour.md §4.1, §4.2): only ext3, ext4, xfs and
btrfs; each filesystem (superblock) once and never through a bind mount; nested mounts before their
parents, ``/`` last.
Deliberate differences:

* Loop devices are frozen like any other block device (the reference skips lsblk TYPE ``loop``):
  many real hosts keep data on loop-mounted images, and our tests depend on it.
* ``skip`` can name ``/``. Skipping any mount point of a filesystem skips that filesystem, because
  a freeze applies to the superblock, not to one of its mount points.
* A mount hidden by a later mount over it (or over a parent directory) is never chosen: opening
  its path would reach the other filesystem.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

FREEZABLE_FSTYPES = ("ext3", "ext4", "xfs", "btrfs")
MOUNTINFO_PATH = "/proc/self/mountinfo"

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """Undo the kernel's octal escapes (``\\040`` space, ``\\011`` tab, ``\\012``, ``\\134``)."""
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo; paths unescaped. ``options`` are the per-mount options."""

    mount_id: int
    parent_id: int
    device: str
    root: str
    mount_point: str
    fstype: str
    source: str
    options: str
    super_options: str = ""

    @property
    def is_bind(self) -> bool:
        """True for a mount of a subtree: a bind mount, not the filesystem's own mount.

        A btrfs subvolume mount (``subvol=/@`` with root ``/@``) is the filesystem's own mount:
        many distributions mount ``/`` that way.
        """
        if self.root == "/":
            return False
        if self.fstype == "btrfs":
            for option in self.super_options.split(","):
                if option.startswith("subvol="):
                    return _unescape(option[len("subvol=") :]) != self.root
        return True


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse mountinfo text (proc(5)) into mounts, in table order (the order they were mounted)."""
    mounts = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
            fstype, source, super_options = fields[separator + 1 : separator + 4]
            mounts.append(
                Mount(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    device=fields[2],
                    root=_unescape(fields[3]),
                    mount_point=_unescape(fields[4]),
                    fstype=fstype,
                    source=_unescape(source),
                    options=fields[5],
                    super_options=super_options,
                )
            )
        except ValueError:
            raise ValueError(f"Malformed mountinfo line: {line!r}") from None
    return mounts


def read_mountinfo(path: str = MOUNTINFO_PATH) -> list[Mount]:
    # Mount points are bytes; surrogateescape keeps non-UTF-8 names intact for os.open().
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return parse_mountinfo(handle.read())


def _covers(outer: str, inner: str) -> bool:
    return outer == inner or inner.startswith(outer.rstrip("/") + "/")


def _is_hidden(mounts: list[Mount], index: int) -> bool:
    """True if a later mount sits on this mount point or on a directory above it."""
    mount = mounts[index]
    by_id = {m.mount_id: m for m in mounts}
    ancestors = set()
    parent = by_id.get(mount.parent_id)
    while parent is not None and parent.mount_id not in ancestors:
        ancestors.add(parent.mount_id)
        parent = by_id.get(parent.parent_id)
    return any(
        _covers(later.mount_point, mount.mount_point) and later.mount_id not in ancestors
        for later in mounts[index + 1 :]
    )


def _check_requested(path: str, mounts: list[Mount], candidates: list[Mount]) -> None:
    """Raise 123 with the reason when a mount point named in ``only`` cannot be frozen."""
    if any(m.mount_point == path for m in candidates):
        return
    on_path = [m for m in mounts if m.mount_point == path]
    if not on_path:
        reason = "is not a mount point"
    elif on_path[-1].fstype not in FREEZABLE_FSTYPES:
        reason = f"has type {on_path[-1].fstype}; only {', '.join(FREEZABLE_FSTYPES)} can be frozen"
    elif on_path[-1].is_bind:
        reason = (
            f"is a bind mount of {on_path[-1].root} on {on_path[-1].source}; "
            "name the filesystem's own mount point instead"
        )
    else:
        reason = "is hidden under a later mount"
    raise VmSnapshotError(
        Status.FailedRetryableUnableToOpenMount,
        f"The mount point {path} given in freeze_mounts {reason}.",
    )


def freezable_mounts(
    mounts: list[Mount], *, skip: Iterable[str] = (), only: Iterable[str] | None = None
) -> list[str]:
    """Mount points to freeze, one per filesystem, nested mounts first and ``/`` last.

    ``skip``: mount points not to freeze (any mount point of a filesystem skips the filesystem).
    ``only``: exactly these mount points (each must be a freezable mount point, else
    ``VmSnapshotError`` 123 naming it), in the same safe order.
    """
    candidates = [
        m
        for index, m in enumerate(mounts)
        if m.fstype in FREEZABLE_FSTYPES and not m.is_bind and not _is_hidden(mounts, index)
    ]
    skip_points = {posixpath.normpath(path) for path in skip}
    skipped_devices = {m.device for m in candidates if m.mount_point in skip_points}
    if only is not None:
        only_points = [posixpath.normpath(path) for path in only]
        for path in only_points:
            _check_requested(path, mounts, candidates)
        candidates = [m for m in candidates if m.mount_point in only_points]

    chosen: dict[str, Mount] = {}
    for mount in candidates:
        # First mount of a filesystem represents it, except that "/" always does.
        if mount.device not in chosen or mount.mount_point == "/":
            chosen[mount.device] = mount
    order = [m for m in reversed(candidates) if chosen[m.device] is m]
    order.sort(key=lambda m: m.mount_point == "/")
    return [m.mount_point for m in order if m.device not in skipped_devices]
