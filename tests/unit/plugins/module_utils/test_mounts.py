"""The mount table parser and the freezable-mount rules, over crafted mountinfo text."""

from __future__ import annotations

import os
import textwrap

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._mounts import (
    FREEZABLE_FSTYPES,
    Mount,
    freezable_mounts,
    parse_mountinfo,
    read_mountinfo,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)


def table(text: str) -> list[Mount]:
    return parse_mountinfo(textwrap.dedent(text))


# A server: ext4 root, xfs data with a nested ext4, a bind mount of the xfs, btrfs subvolumes
# (and a bind of a directory inside one), nfs, tmpfs, overlay, a loop device, a space in a path.
SERVER = r"""
    22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
    23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
    24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
    25 22 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=4022k,mode=755
    26 22 0:24 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,mode=755
    30 22 8:17 / /data rw,noatime shared:30 - xfs /dev/sdb1 rw,attr2,inode64
    31 30 8:33 / /data/pg rw,noatime shared:31 - ext4 /dev/sdc1 rw
    32 22 8:17 /exports /srv/exports rw,noatime shared:30 - xfs /dev/sdb1 rw,attr2,inode64
    33 22 0:40 / /mnt/nfs rw,relatime shared:33 - nfs4 fs1:/vol rw,vers=4.2,addr=10.0.0.5
    34 22 0:41 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay rw,lowerdir=/l
    35 22 8:49 / /mnt/my\040disk rw,relatime shared:35 - ext3 /dev/sdd1 rw
    36 22 7:0 / /mnt/loop rw,relatime shared:36 - ext4 /dev/loop0 rw
    37 22 0:50 /@home /home rw,relatime shared:37 - btrfs /dev/sde1 rw,subvolid=257,subvol=/@home
    38 22 0:50 /@var /var rw,relatime shared:38 - btrfs /dev/sde1 rw,subvolid=258,subvol=/@var
    39 22 0:50 /@home/al/share /srv/share rw - btrfs /dev/sde1 rw,subvolid=257,subvol=/@home
    40 22 0:60 / /mnt/sshfs rw,nosuid - fuse.sshfs me@host:/ rw,user_id=0
    41 22 0:61 / /mnt/win rw - cifs //srv/share rw,vers=3.0
    42 22 8:65 / /boot/efi rw - vfat /dev/sdf1 rw,fmask=0077
    43 22 0:62 / /tank rw - zfs tank rw,xattr
"""

SERVER_ORDER = ["/home", "/mnt/loop", "/mnt/my disk", "/data/pg", "/data", "/"]


def test_parse_fields_and_escapes() -> None:
    mounts = table(
        r"""
        35 22 8:49 /dir\134x /mnt/my\040disk\011tab rw shared:35 master:2 - ext3 /dev/my\040dev rw
        36 22 7:0 / /mnt/loop rw - ext4 /dev/loop0 rw,data=ordered
        """
    )
    assert mounts == [
        Mount(
            mount_id=35,
            parent_id=22,
            device="8:49",
            root="/dir\\x",
            mount_point="/mnt/my disk\ttab",
            fstype="ext3",
            source="/dev/my dev",
            options="rw",
            super_options="rw",
        ),
        Mount(36, 22, "7:0", "/", "/mnt/loop", "ext4", "/dev/loop0", "rw", "rw,data=ordered"),
    ]


def test_parse_skips_blank_lines() -> None:
    assert parse_mountinfo("\n  \n") == []


@pytest.mark.parametrize(
    "line",
    [
        "22 1 8:1 / / rw shared:1 ext4 /dev/sda1 rw",
        "x 1 8:1 / / rw - ext4 /dev/sda1 rw",
        "22 1 8:1 / / rw - ext4",
    ],
    ids=["no-separator", "bad-id", "short"],
)
def test_parse_rejects_malformed(line: str) -> None:
    with pytest.raises(ValueError, match="Malformed mountinfo line"):
        parse_mountinfo(line)


def test_server_default_order() -> None:
    # nested before parents, most recently mounted first, "/" last; the btrfs superblock once,
    # through its first subvolume mount; no bind mount, network or virtual filesystem; loop kept.
    assert freezable_mounts(table(SERVER)) == SERVER_ORDER


@pytest.mark.parametrize(
    ("skip", "expected"),
    [
        ([], SERVER_ORDER),
        (["/data"], ["/home", "/mnt/loop", "/mnt/my disk", "/data/pg", "/"]),
        (["/data/"], ["/home", "/mnt/loop", "/mnt/my disk", "/data/pg", "/"]),
        (["/"], ["/home", "/mnt/loop", "/mnt/my disk", "/data/pg", "/data"]),
        (["/var"], ["/mnt/loop", "/mnt/my disk", "/data/pg", "/data", "/"]),  # same btrfs
        (["/mnt/my disk", "/mnt/loop"], ["/home", "/data/pg", "/data", "/"]),
        (["/proc", "/nowhere", "/srv/exports"], SERVER_ORDER),  # not freeze targets: no effect
    ],
)
def test_skip(skip: list[str], expected: list[str]) -> None:
    assert freezable_mounts(table(SERVER), skip=skip) == expected


@pytest.mark.parametrize(
    ("only", "skip", "expected"),
    [
        (["/", "/data/pg"], [], ["/data/pg", "/"]),
        (["/data", "/data/pg"], [], ["/data/pg", "/data"]),
        (["/var"], [], ["/var"]),
        (["/var", "/home"], [], ["/home"]),
        (["/mnt/loop", "/mnt/my disk"], ["/mnt/loop"], ["/mnt/my disk"]),
        ([], [], []),
    ],
)
def test_only(only: list[str], skip: list[str], expected: list[str]) -> None:
    assert freezable_mounts(table(SERVER), only=only, skip=skip) == expected


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/proc", "has type proc; only ext3, ext4, xfs, btrfs can be frozen"),
        ("/run", "has type tmpfs; only ext3, ext4, xfs, btrfs can be frozen"),
        ("/mnt/nfs", "has type nfs4; only ext3, ext4, xfs, btrfs can be frozen"),
        (
            "/var/lib/docker/overlay2/abc/merged",
            "has type overlay; only ext3, ext4, xfs, btrfs can be frozen",
        ),
        ("/tank", "has type zfs; only ext3, ext4, xfs, btrfs can be frozen"),
        ("/srv/exports", "is a bind mount of /exports on /dev/sdb1"),
        ("/srv/share", "is a bind mount of /@home/al/share"),
        ("/nowhere", "is not a mount point"),
        ("/data/pg/sub", "is not a mount point"),
    ],
)
def test_only_rejects(path: str, reason: str) -> None:
    with pytest.raises(VmSnapshotError) as caught:
        freezable_mounts(table(SERVER), only=["/", path])
    assert caught.value.status == Status.FailedRetryableUnableToOpenMount
    assert f"The mount point {path} given in freeze_mounts {reason}" in caught.value.message


OVERMOUNTED = """
    22 1 8:1 / / rw - ext4 /dev/sda1 rw
    30 22 8:17 / /data rw - xfs /dev/sdb1 rw
    31 30 8:33 / /data/pg rw - ext4 /dev/sdc1 rw
    32 22 8:49 / /data rw - ext4 /dev/sdd1 rw
    33 22 8:65 / /mnt/a rw - ext4 /dev/sde1 rw
    34 33 8:81 / /mnt/a rw - xfs /dev/sdf1 rw
"""


def test_hidden_mounts_are_never_chosen() -> None:
    # /data (xfs) and its child /data/pg are hidden by a later /data; /mnt/a is stacked twice.
    mounts = table(OVERMOUNTED)
    assert freezable_mounts(mounts) == ["/mnt/a", "/data", "/"]
    assert freezable_mounts(mounts, only=["/data"]) == ["/data"]
    with pytest.raises(VmSnapshotError, match="/data/pg given in freeze_mounts is hidden"):
        freezable_mounts(mounts, only=["/data/pg"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            """
            22 1 0:30 /@ / rw,relatime - btrfs /dev/vda2 rw,subvolid=256,subvol=/@
            23 22 0:30 /@home /home rw,relatime - btrfs /dev/vda2 rw,subvolid=257,subvol=/@home
            24 22 0:30 /@/srv /srv rw,relatime - btrfs /dev/vda2 rw,subvolid=256,subvol=/@
            """,
            ["/"],
            id="btrfs-root-on-subvolume-chosen-through-slash",
        ),
        pytest.param(
            """
            22 1 8:1 / / rw - ext4 /dev/sda1 rw
            23 22 8:17 /srv /mnt/bind-only rw - ext4 /dev/sdb1 rw
            """,
            ["/"],
            id="bind-only-superblock-not-chosen",
        ),
        pytest.param(
            """
            22 1 8:1 / / rw - xfs /dev/sda1 rw
            23 22 8:17 / /a rw - ext4 /dev/sdb1 rw
            24 23 8:33 / /a/b rw - ext4 /dev/sdc1 rw
            25 24 8:49 / /a/b/c rw - xfs /dev/sdd1 rw
            26 22 8:65 / /z rw - ext4 /dev/sde1 rw
            27 22 8:17 / /a-again rw - ext4 /dev/sdb1 rw
            """,
            ["/z", "/a/b/c", "/a/b", "/a", "/"],
            id="nested-deepest-first-and-second-mount-of-a-superblock-ignored",
        ),
        pytest.param(
            """
            22 1 0:20 / / rw - overlay overlay rw,lowerdir=/x
            23 22 0:21 / /tmp rw - tmpfs tmpfs rw
            """,
            [],
            id="container-nothing-to-freeze",
        ),
    ],
)
def test_tables(text: str, expected: list[str]) -> None:
    assert freezable_mounts(table(text)) == expected


def test_real_mountinfo() -> None:
    mounts = read_mountinfo()
    assert any(m.mount_point == "/" for m in mounts)
    chosen = freezable_mounts(mounts)
    by_point = {m.mount_point: m for m in mounts}
    assert len({by_point[p].device for p in chosen}) == len(chosen)
    assert all(by_point[p].fstype in FREEZABLE_FSTYPES and os.path.ismount(p) for p in chosen)
    if "/" in chosen:
        assert chosen[-1] == "/"
