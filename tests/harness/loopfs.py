"""Throwaway loop-mounted filesystems (ext4, xfs, btrfs) for tests and playbooks.

Each filesystem lives in its own temp directory (sparse image + mount point) and is recorded in
a state directory, ``$APPCONSISTENT_HARNESS_STATE_DIR`` or
``${XDG_RUNTIME_DIR:-/run}/appconsistent-harness``, one JSON file per filesystem, written before
each step so that a killed run leaves a record of everything it made. ``teardown()`` thaws,
unmounts (lazily as a last resort), detaches the loop device and removes the directory; it runs
from the pytest finalizers, at exit and on SIGTERM/SIGHUP. ``cleanup`` removes the leftovers of
dead owners, touching only what a record names and only after checking that the mount and the
loop device are still ours (loop device numbers get reused).

CLI (needs root)::

    python tests/harness/loopfs.py up --fstype ext4 [--size-mb 64] [--json out.json]
    python tests/harness/loopfs.py down --json out.json
    python tests/harness/loopfs.py cleanup [--all]

Filesystems made by ``up`` belong to no process: ``down`` or ``cleanup`` removes them.
pytest fixtures: ``loop_filesystem_factory``, ``loop_ext4``, ``loop_xfs``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Callable, Iterator, Optional

try:
    import pytest
except ImportError:  # the CLI also runs under a Python without pytest
    pytest = None

DEFAULT_SIZE_MB = {"ext4": 64, "xfs": 320, "btrfs": 256}  # xfsprogs >= 5.19 needs 300 MB
MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-F"],
    "xfs": ["mkfs.xfs", "-q", "-f"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
}
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")

_live: dict[str, LoopFilesystem] = {}  # made by this process and not yet torn down
_live_lock = threading.Lock()
_hooks_pid: Optional[int] = None


def state_dir() -> str:
    explicit = os.environ.get("APPCONSISTENT_HARNESS_STATE_DIR")
    if explicit:
        return explicit
    return os.path.join(os.environ.get("XDG_RUNTIME_DIR") or "/run", "appconsistent-harness")


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


def _process_start(pid: int) -> Optional[str]:
    """The start time of a process (field 22 of /proc/PID/stat), to tell a reused PID apart."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def mounted_source(mount_point: str) -> Optional[str]:
    """The source (device) of the top-most mount at ``mount_point``, or None."""
    source = None
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split(" ")
            if _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4]) == mount_point:
                source = fields[fields.index("-", 6) + 2]
    return source


def loop_backing_file(device: str) -> Optional[str]:
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


class LoopFilesystem:
    """A loop-mounted filesystem; create with ``make_loop_filesystem()``."""

    def __init__(self, record: dict, state_file: str) -> None:
        self.fstype: str = record["fstype"]
        self.base_dir: str = record["base_dir"]
        self.image: str = record["image"]
        self.mount_point: str = record["mount_point"]
        self.device: Optional[str] = record.get("device")
        self.owner_pid: Optional[int] = record.get("owner_pid")
        self.owner_start: Optional[str] = record.get("owner_start")
        self.state_file = state_file

    def as_dict(self) -> dict:
        return {
            "fstype": self.fstype,
            "base_dir": self.base_dir,
            "image": self.image,
            "mount_point": self.mount_point,
            "device": self.device,
            "owner_pid": self.owner_pid,
            "owner_start": self.owner_start,
            "state_file": self.state_file,
        }

    def _save(self) -> None:
        temporary = f"{self.state_file}.tmp"
        with open(temporary, "w") as handle:
            json.dump(self.as_dict(), handle, indent=2)
        os.replace(temporary, self.state_file)

    def is_mounted(self) -> bool:
        source = mounted_source(self.mount_point)
        return source is not None and loop_backing_file(source) == self.image

    def owner_alive(self) -> bool:
        return self.owner_pid is not None and _process_start(self.owner_pid) == self.owner_start

    def teardown(self) -> None:
        """Thaw, unmount, detach and remove; safe to call twice and after a partial setup."""
        if self.is_mounted():
            _run(["fsfreeze", "-u", self.mount_point], check=False)  # "not frozen" is fine
            for _attempt in range(10):
                if _run(["umount", self.mount_point], check=False).returncode == 0:
                    break
                time.sleep(0.2)  # a process that was blocked on the frozen fs is leaving
            else:
                _run(["umount", "--lazy", self.mount_point])
        for device in loops_backed_by(self.image):  # also one attached before it was recorded
            _run(["losetup", "--detach", device])
        if not self.is_mounted():
            shutil.rmtree(self.base_dir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.state_file)
        with _live_lock:
            _live.pop(self.state_file, None)


def _nested_first(filesystems: list[LoopFilesystem]) -> list[LoopFilesystem]:
    """A filesystem made inside another's mount point is longer and must go first."""
    return sorted(filesystems, key=lambda filesystem: len(filesystem.mount_point), reverse=True)


def _teardown_all() -> None:
    if os.getpid() != _hooks_pid:  # a forked child (the freeze guardian) must not clean up
        return
    with _live_lock:
        filesystems = _nested_first(list(_live.values()))
    for filesystem in filesystems:
        with contextlib.suppress(Exception):
            filesystem.teardown()


def _on_signal(signum: int, frame: object) -> None:
    _teardown_all()
    previous = _previous_handlers.pop(signum, None) or signal.SIG_DFL
    signal.signal(signum, previous)
    if callable(previous):
        previous(signum, frame)
    else:
        os.kill(os.getpid(), signum)


_previous_handlers: dict[int, object] = {}


def _install_hooks() -> None:
    global _hooks_pid
    if _hooks_pid == os.getpid():
        return
    _hooks_pid = os.getpid()
    atexit.register(_teardown_all)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            _previous_handlers[signum] = signal.signal(signum, _on_signal)


def make_loop_filesystem(
    fstype: str = "ext4",
    size_mb: Optional[int] = None,
    base_dir: Optional[str] = None,
    owned: bool = True,
) -> LoopFilesystem:
    """Make, record and mount a fresh filesystem in a new temp dir under ``base_dir``.

    ``owned``: torn down when this process exits; ``False`` leaves it to ``down``/``cleanup``.
    """
    if fstype not in MKFS:
        raise ValueError(f"fstype must be one of {', '.join(MKFS)}, not {fstype!r}")
    os.makedirs(state_dir(), mode=0o700, exist_ok=True)
    directory = tempfile.mkdtemp(prefix=f"appconsistent-{fstype}-", dir=base_dir)
    record = {
        "fstype": fstype,
        "base_dir": directory,
        "image": os.path.join(directory, f"{fstype}.img"),
        "mount_point": os.path.join(directory, "mnt"),
        "owner_pid": os.getpid() if owned else None,
        "owner_start": _process_start(os.getpid()) if owned else None,
    }
    name = f"{os.path.basename(directory)}-{uuid.uuid4().hex[:8]}.json"
    filesystem = LoopFilesystem(record, os.path.join(state_dir(), name))
    if owned:
        _install_hooks()
        with _live_lock:
            _live[filesystem.state_file] = filesystem
    try:
        filesystem._save()
        os.mkdir(filesystem.mount_point)
        with open(filesystem.image, "wb") as handle:
            handle.truncate((size_mb or DEFAULT_SIZE_MB[fstype]) * 1024 * 1024)
        filesystem.device = _run(["losetup", "--find", "--show", filesystem.image]).stdout.strip()
        filesystem._save()
        _run([*MKFS[fstype], filesystem.device])
        _run(["mount", "-t", fstype, filesystem.device, filesystem.mount_point])
    except BaseException:
        filesystem.teardown()
        raise
    return filesystem


def load_records(directory: Optional[str] = None) -> list[LoopFilesystem]:
    directory = directory or state_dir()
    filesystems = []
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(directory)):
            if name.endswith(".json"):
                path = os.path.join(directory, name)
                with open(path) as handle:
                    filesystems.append(LoopFilesystem(json.load(handle), path))
    return filesystems


def cleanup(everything: bool = False) -> list[LoopFilesystem]:
    """Tear down recorded filesystems whose owner is gone (all of them with ``everything``)."""
    removed = []
    for filesystem in _nested_first(load_records()):
        if everything or not filesystem.owner_alive():
            filesystem.teardown()
            removed.append(filesystem)
    return removed


if pytest is not None:

    @pytest.fixture
    def loop_filesystem_factory() -> Iterator[Callable[..., LoopFilesystem]]:
        """Call with ``(fstype, size_mb=None, base_dir=None)``; all are torn down, newest first."""
        made: list[LoopFilesystem] = []

        def factory(
            fstype: str = "ext4", size_mb: Optional[int] = None, base_dir: Optional[str] = None
        ) -> LoopFilesystem:
            made.append(make_loop_filesystem(fstype, size_mb=size_mb, base_dir=base_dir))
            return made[-1]

        yield factory
        failures = []
        for filesystem in reversed(made):
            try:
                filesystem.teardown()
            except Exception as exc:  # tear the others down before reporting
                failures.append(exc)
        if failures:
            raise failures[0]

    @pytest.fixture
    def loop_ext4(loop_filesystem_factory: Callable[..., LoopFilesystem]) -> LoopFilesystem:
        return loop_filesystem_factory("ext4")

    @pytest.fixture
    def loop_xfs(loop_filesystem_factory: Callable[..., LoopFilesystem]) -> LoopFilesystem:
        return loop_filesystem_factory("xfs")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="make, record and mount a filesystem")
    up.add_argument("--fstype", choices=sorted(MKFS), default="ext4")
    up.add_argument("--size-mb", type=int)
    up.add_argument("--base-dir")
    up.add_argument("--json", help="also write the record to this file")
    down = commands.add_parser("down", help="tear down the filesystem that up recorded")
    down.add_argument("--json", required=True, help="the file up wrote")
    clean = commands.add_parser("cleanup", help="tear down recorded leftovers of dead owners")
    clean.add_argument("--all", action="store_true", help="also those whose owner is alive")
    args = parser.parse_args(argv)

    if args.command == "up":
        filesystem = make_loop_filesystem(
            args.fstype, size_mb=args.size_mb, base_dir=args.base_dir, owned=False
        )
        text = json.dumps(filesystem.as_dict(), indent=2)
        if args.json:
            with open(args.json, "w") as handle:
                handle.write(text + "\n")
        print(text)
    elif args.command == "down":
        with open(args.json) as handle:
            state_file = json.load(handle)["state_file"]
        # Only what the state directory still records is touched.
        recorded = [fs for fs in load_records() if fs.state_file == state_file]
        for filesystem in recorded:
            filesystem.teardown()
        print(f"removed {len(recorded)} filesystem(s)")
    else:
        for filesystem in cleanup(everything=args.all):
            print(f"removed {filesystem.fstype} {filesystem.device} {filesystem.mount_point}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
