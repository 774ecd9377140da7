"""Throwaway loop-mounted filesystems (ext4, xfs, btrfs) for tests and playbooks.

Each filesystem lives in its own temp directory (sparse image + mount point) and is recorded in
a state directory, ``$APPCONSISTENT_HARNESS_STATE_DIR`` or
``${XDG_RUNTIME_DIR:-/run}/appconsistent-harness``, one JSON file per filesystem (``records.py``
keeps them). ``teardown()`` thaws, unmounts (lazily as a last resort), detaches the loop device
and removes the directory; it runs from the pytest finalizers, at exit and on SIGTERM/SIGHUP.
``cleanup`` removes the leftovers of dead owners, nested filesystems first, touching only what a
record names and only after checking that the mount and the loop device are still ours (loop
device numbers get reused).

CLI (needs root)::

    python tests/harness/loopfs.py up --fstype ext4 [--size-mb 64] [--json out.json]
    python tests/harness/loopfs.py down --json out.json
    python tests/harness/loopfs.py cleanup [--all]

Filesystems made by ``up`` belong to no process: ``down`` or ``cleanup`` removes them.
pytest fixtures: ``loop_filesystem_factory``, ``loop_ext4``, ``loop_xfs``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from typing import Callable

if __package__ in (None, ""):  # run as a script: import the harness the way the tests do
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.records import Record, Registry, run, state_dir

try:
    import pytest
except ImportError:  # the CLI also runs under a Python without pytest
    pytest = None

DEFAULT_SIZE_MB = {"ext4": 64, "xfs": 320, "btrfs": 256}  # xfsprogs >= 5.19 needs 300 MB
MKFS = {
    # No lazy initialisation: its background writes would land in tests that freeze or time.
    "ext4": ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"],
    "xfs": ["mkfs.xfs", "-q", "-f"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
}
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def mounted_source(mount_point: str) -> str | None:
    """The source (device) of the top-most mount at ``mount_point``, or None."""
    source = None
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split(" ")
            if _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4]) == mount_point:
                source = fields[fields.index("-", 6) + 2]
    return source


def loop_backing_file(device: str) -> str | None:
    try:
        with open(f"/sys/block/{os.path.basename(device)}/loop/backing_file") as handle:
            return handle.read().strip().removesuffix(" (deleted)")
    except OSError:
        return None


def loops_backed_by(image: str) -> list[str]:
    """Loop devices whose backing file is ``image`` (by the kernel's word, not our record's)."""
    return [
        f"/dev/{name}"
        for name in sorted(os.listdir("/sys/block"))
        if name.startswith("loop") and loop_backing_file(name) == image
    ]


def _nested_first(filesystems: list[LoopFilesystem]) -> list[LoopFilesystem]:
    """A filesystem made inside another's mount point is longer and must go first."""
    return sorted(filesystems, key=lambda filesystem: len(filesystem.mount_point), reverse=True)


class LoopFilesystem(Record):
    """A loop-mounted filesystem; create with ``make_loop_filesystem()``."""

    fields = ("fstype", "base_dir", "image", "mount_point", "device")
    noun = "filesystem"
    registry = Registry(state_dir, order=_nested_first)
    fstype: str
    base_dir: str
    image: str
    mount_point: str
    device: str | None

    def __str__(self) -> str:
        return f"{self.fstype} {self.device} {self.mount_point}"

    def is_mounted(self) -> bool:
        source = mounted_source(self.mount_point)
        return source is not None and loop_backing_file(source) == self.image

    def teardown(self) -> None:
        """Thaw, unmount, detach and remove; safe to call twice and after a partial setup."""
        if self.is_mounted():
            run(["fsfreeze", "-u", self.mount_point], check=False)  # "not frozen" is fine
            for _attempt in range(10):
                if run(["umount", self.mount_point], check=False).returncode == 0:
                    break
                time.sleep(0.2)  # a process that was blocked on the frozen fs is leaving
            else:
                run(["umount", "--lazy", self.mount_point])
        for device in loops_backed_by(self.image):  # also one attached before it was recorded
            run(["losetup", "--detach", device])
        if not self.is_mounted():
            shutil.rmtree(self.base_dir, ignore_errors=True)
        self.forget()


def make_loop_filesystem(
    fstype: str = "ext4",
    size_mb: int | None = None,
    base_dir: str | None = None,
    owned: bool = True,
) -> LoopFilesystem:
    """Make, record and mount a fresh filesystem in a new temp dir under ``base_dir``.

    ``owned``: torn down when this process exits; ``False`` leaves it to ``down``/``cleanup``.
    """
    if fstype not in MKFS:
        raise ValueError(f"fstype must be one of {', '.join(MKFS)}, not {fstype!r}")
    directory = LoopFilesystem.registry.new_directory(f"appconsistent-{fstype}-", base_dir)
    record = {
        "fstype": fstype,
        "base_dir": directory,
        "image": os.path.join(directory, f"{fstype}.img"),
        "mount_point": os.path.join(directory, "mnt"),
    }
    with LoopFilesystem.registry.making(record, owned) as filesystem:
        os.mkdir(filesystem.mount_point)
        with open(filesystem.image, "wb") as handle:
            handle.truncate((size_mb or DEFAULT_SIZE_MB[fstype]) * 1024 * 1024)
        filesystem.device = run(["losetup", "--find", "--show", filesystem.image]).stdout.strip()
        filesystem.save()
        run([*MKFS[fstype], filesystem.device])
        run(["mount", "-t", fstype, filesystem.device, filesystem.mount_point])
    return filesystem


if pytest is not None:

    @pytest.fixture
    def loop_filesystem_factory() -> Iterator[Callable[..., LoopFilesystem]]:
        """Call like ``make_loop_filesystem``; all are torn down, newest first."""
        yield from LoopFilesystem.registry.factory(make_loop_filesystem)

    @pytest.fixture
    def loop_ext4(loop_filesystem_factory: Callable[..., LoopFilesystem]) -> LoopFilesystem:
        return loop_filesystem_factory("ext4")

    @pytest.fixture
    def loop_xfs(loop_filesystem_factory: Callable[..., LoopFilesystem]) -> LoopFilesystem:
        return loop_filesystem_factory("xfs")


def main(argv: list[str] | None = None) -> int:
    registry = LoopFilesystem.registry
    parser, _commands, up = registry.command_line(
        __doc__.split("\n", 1)[0], "make, record and mount a filesystem"
    )
    up.add_argument("--fstype", choices=sorted(MKFS), default="ext4")
    up.add_argument("--size-mb", type=int)
    args = parser.parse_args(argv)
    return registry.run_command(
        args,
        lambda: make_loop_filesystem(
            args.fstype, size_mb=args.size_mb, base_dir=args.base_dir, owned=False
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
