"""Blob-backed block devices: a page blob in the blob service used as a disk, like an Azure VHD.

A small FUSE filesystem (libfuse 3 through mfusepy) exposes one page blob as the file
``disk.vhd``; a loop device on that file is the disk. Every read is a ranged Get Blob, every
write a Put Page on the blob (whole 512-byte pages; a write that does not cover whole pages is
completed from the blob first), answered only once the blob service accepted it. There is no
write cache to lose: when the kernel sends a flush (fsync of the file, a flush request on the loop
device), everything written is already in the blob. So a blob snapshot holds exactly what the
disk held, and a freeze of the filesystem on the disk makes that a file-system-consistent image.

Each disk has its own FUSE server process (this file's ``serve`` command; the SAS URI reaches it
on stdin, never on a command line) and its own temp directory, and is recorded in
``<loopfs state dir>/blobdisk/`` before every step, so that a killed run leaves a record of what
it made. ``teardown()`` thaws and unmounts the filesystem, detaches the loop device, unmounts the
FUSE filesystem and ends the server by its PID (checked against its start time); it runs from
the pytest finalizers, at exit and on SIGTERM/SIGHUP. ``cleanup`` removes the leftovers of dead
owners.

CLI (root)::

    python tests/harness/blobdisk.py up --sas-file FILE [--mkfs ext4] [--mount] [--json out.json]
    python tests/harness/blobdisk.py down --json out.json
    python tests/harness/blobdisk.py cleanup [--all]

``up`` reads the SAS URI (read and write on an existing page blob) from ``--sas-file`` or, with
``-``, from stdin; disks made by ``up`` belong to no process: ``down`` or ``cleanup`` removes them.
pytest fixture: ``blob_disk_factory``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import http.client
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Callable, Iterator, Optional
from urllib.parse import urlsplit

if __package__ in (None, ""):  # run as a script: import the harness the way the tests do
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.loopfs import (
    MKFS,
    _process_start,
    _run,
    loops_backed_by,
    mounted_source,
    state_dir,
)

try:
    import pytest
except ImportError:  # the CLI also runs under a Python without pytest
    pytest = None

PAGE = 512
DISK_FILE = "disk.vhd"
X_MS_VERSION = "2021-12-02"
HTTP_TIMEOUT = 30.0
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

_live: dict[str, BlobDisk] = {}  # made by this process and not yet torn down
_live_lock = threading.Lock()
_hooks_pid: Optional[int] = None


# --- the FUSE server ---------------------------------------------------------------------------


class PageBlobIO:
    """Ranged reads and page writes on one page blob through its SAS URI (one connection/thread)."""

    def __init__(self, sas: str) -> None:
        parts = urlsplit(sas)
        self.host, self.port, self.path, self.query = (
            parts.hostname,
            parts.port or 80,
            parts.path,
            parts.query,
        )
        if parts.scheme != "http":
            raise ValueError("the blob disk harness speaks plain HTTP to the local Azurite only")
        self._local = threading.local()
        self._rmw_lock = threading.Lock()
        response = self._request("HEAD", "", {})[0]
        if response.getheader("x-ms-blob-type") != "PageBlob":
            raise ValueError("the blob is not a page blob")
        self.size = int(response.getheader("content-length"))

    def _request(self, method: str, extra: str, headers: dict, body: bytes = b"") -> tuple:
        query = f"{self.query}&{extra}" if extra else self.query
        headers = {"x-ms-version": X_MS_VERSION, "Content-Length": str(len(body)), **headers}
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT)
                self._local.conn = conn
            try:
                conn.request(method, f"{self.path}?{query}", body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
                continue  # a kept-alive connection the server closed: once more, fresh
            if response.status >= 300:
                raise OSError(errno.EIO, f"{method} answered HTTP {response.status}")
            return response, data
        raise AssertionError("unreachable")

    def read(self, offset: int, size: int) -> bytes:
        size = max(0, min(size, self.size - offset))
        if size == 0:
            return b""
        data = self._request("GET", "", {"x-ms-range": f"bytes={offset}-{offset + size - 1}"})[1]
        if len(data) != size:
            raise OSError(errno.EIO, f"short read: {len(data)} of {size} bytes")
        return data

    def write(self, offset: int, data: bytes) -> None:
        if offset + len(data) > self.size:
            raise OSError(errno.ENOSPC, "write beyond the end of the disk")
        head, tail = offset % PAGE, -(offset + len(data)) % PAGE
        if head or tail:
            # Pages are written whole: complete the edges from the blob, one such write at a time.
            with self._rmw_lock:
                start = offset - head
                pages = bytearray(self.read(start, head + len(data) + tail))
                pages[head : head + len(data)] = data
                self._put_pages(start, bytes(pages))
        else:
            self._put_pages(offset, data)

    def _put_pages(self, offset: int, data: bytes) -> None:
        headers = {
            "x-ms-page-write": "update",
            "x-ms-range": f"bytes={offset}-{offset + len(data) - 1}",
        }
        self._request("PUT", "comp=page", headers, data)


def serve(sas: str, mountpoint: str) -> None:
    """Serve the page blob as ``<mountpoint>/disk.vhd`` until the FUSE filesystem is unmounted."""
    import mfusepy  # only the server needs it

    blob = PageBlobIO(sas)
    started = time.time_ns()
    root = {"st_mode": stat.S_IFDIR | 0o700, "st_nlink": 2}
    disk = {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": blob.size}
    for attrs in (root, disk):
        attrs.update(st_uid=0, st_gid=0, st_atime=started, st_mtime=started, st_ctime=started)

    class BlobDiskOperations(mfusepy.Operations):
        use_ns = True

        def getattr(self, path, fh=None):
            if path == "/":
                return root
            if path == f"/{DISK_FILE}":
                return disk
            raise mfusepy.FuseOSError(errno.ENOENT)

        def readdir(self, path, fh):
            return [".", "..", DISK_FILE]

        def open(self, path, flags):
            if path != f"/{DISK_FILE}":
                raise mfusepy.FuseOSError(errno.ENOENT)
            return 0

        def read(self, path, size, offset, fh):
            return blob.read(offset, size)

        def write(self, path, data, offset, fh):
            blob.write(offset, bytes(data))
            return len(data)

        def truncate(self, path, length, fh=None):
            if length != blob.size:
                raise mfusepy.FuseOSError(errno.EPERM)  # a disk does not change size
            return 0

        def flush(self, path, fh):
            return 0  # every write is in the blob before it is answered

        def fsync(self, path, datasync, fh):
            return 0  # likewise: nothing is cached here

    mfusepy.FUSE(BlobDiskOperations(), mountpoint, foreground=True, fsname="blobdisk")


# --- one disk: record, set-up and teardown -----------------------------------------------------


def records_dir() -> str:
    return os.path.join(state_dir(), "blobdisk")


def _fuse_mounted(mountpoint: str) -> bool:
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split(" ")
            if fields[4] == mountpoint and fields[fields.index("-", 6) + 1].startswith("fuse"):
                return True
    return False


class BlobDisk:
    """A page blob attached as a loop device (and optionally a filesystem on it)."""

    def __init__(self, record: dict, state_file: str) -> None:
        self.blob_url: str = record["blob_url"]
        self.base_dir: str = record["base_dir"]
        self.fuse_mount: str = record["fuse_mount"]
        self.mount_point: str = record["mount_point"]
        self.fstype: Optional[str] = record.get("fstype")
        self.device: Optional[str] = record.get("device")
        self.server_pid: Optional[int] = record.get("server_pid")
        self.server_start: Optional[str] = record.get("server_start")
        self.owner_pid: Optional[int] = record.get("owner_pid")
        self.owner_start: Optional[str] = record.get("owner_start")
        self.state_file = state_file

    @property
    def backing_file(self) -> str:
        return os.path.join(self.fuse_mount, DISK_FILE)

    @property
    def log_file(self) -> str:
        return os.path.join(self.base_dir, "server.log")

    def as_dict(self) -> dict:
        return {
            "blob_url": self.blob_url,
            "base_dir": self.base_dir,
            "fuse_mount": self.fuse_mount,
            "mount_point": self.mount_point,
            "fstype": self.fstype,
            "device": self.device,
            "server_pid": self.server_pid,
            "server_start": self.server_start,
            "owner_pid": self.owner_pid,
            "owner_start": self.owner_start,
            "state_file": self.state_file,
        }

    def _save(self) -> None:
        temporary = f"{self.state_file}.tmp"
        with open(temporary, "w") as handle:
            json.dump(self.as_dict(), handle, indent=2)
        os.replace(temporary, self.state_file)

    def owner_alive(self) -> bool:
        return self.owner_pid is not None and _process_start(self.owner_pid) == self.owner_start

    def server_alive(self) -> bool:
        return self.server_pid is not None and _process_start(self.server_pid) == self.server_start

    def is_mounted(self) -> bool:
        """The filesystem on this disk's loop device is mounted at ``mount_point``."""
        source = mounted_source(self.mount_point)
        return source is not None and source in loops_backed_by(self.backing_file)

    def mount(self) -> None:
        _run(["mount", self.device, self.mount_point])

    def unmount(self) -> None:
        """Thaw (a test may have frozen it) and unmount; lazily as a last resort."""
        if not self.is_mounted():
            return
        _run(["fsfreeze", "-u", self.mount_point], check=False)  # "not frozen" is fine
        for _attempt in range(25):
            if _run(["umount", self.mount_point], check=False).returncode == 0:
                return
            time.sleep(0.2)  # a process that used the filesystem is still leaving
        _run(["umount", "--lazy", self.mount_point])

    def teardown(self) -> None:
        """Unmount, detach, unmount FUSE, end the server; safe twice and after a partial set-up."""
        self.unmount()
        for device in loops_backed_by(self.backing_file):
            _run(["losetup", "--detach", device], check=False)
        if _fuse_mounted(self.fuse_mount):
            busy = _run(["umount", self.fuse_mount], check=False).returncode != 0
            if busy:  # a loop device the kernel has not let go of yet
                _run(["umount", "--lazy", self.fuse_mount])
        self._end_server()
        if not self.is_mounted() and not _fuse_mounted(self.fuse_mount):
            shutil.rmtree(self.base_dir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.state_file)
        with _live_lock:
            _live.pop(self.state_file, None)

    def _end_server(self) -> None:
        """The server leaves by itself once unmounted; else SIGTERM, then SIGKILL, by PID."""
        for signum in (None, signal.SIGTERM, signal.SIGKILL):
            if signum is not None and self.server_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.server_pid, signum)
            deadline = time.monotonic() + STOP_TIMEOUT / 2
            while self.server_alive() and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.server_pid, os.WNOHANG)  # reap it when it is our child
                time.sleep(0.05)
            if not self.server_alive():
                return


def _teardown_all() -> None:
    if os.getpid() != _hooks_pid:  # a forked child must not clean up
        return
    with _live_lock:
        disks = list(_live.values())
    for disk in disks:
        with contextlib.suppress(Exception):
            disk.teardown()


_previous_handlers: dict[int, object] = {}


def _on_signal(signum: int, frame: object) -> None:
    _teardown_all()
    previous = _previous_handlers.pop(signum, None) or signal.SIG_DFL
    signal.signal(signum, previous)
    if callable(previous):
        previous(signum, frame)
    else:
        os.kill(os.getpid(), signum)


def _install_hooks() -> None:
    global _hooks_pid
    if _hooks_pid == os.getpid():
        return
    _hooks_pid = os.getpid()
    atexit.register(_teardown_all)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            _previous_handlers[signum] = signal.signal(signum, _on_signal)


def _start_server(disk: BlobDisk, sas: str) -> None:
    with open(disk.log_file, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve", "--mountpoint", disk.fuse_mount],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not in the test's process group: it must outlive signals
        )
    disk.server_pid, disk.server_start = process.pid, _process_start(process.pid)
    disk._save()
    process.stdin.write(json.dumps({"sas": sas}).encode())
    process.stdin.close()
    deadline = time.monotonic() + READY_TIMEOUT
    while not (_fuse_mounted(disk.fuse_mount) and os.path.exists(disk.backing_file)):
        if process.poll() is not None or time.monotonic() > deadline:
            with open(disk.log_file, errors="replace") as handle:
                log_tail = handle.read()[-2000:]
            raise RuntimeError(f"the blob disk server did not come up: {log_tail}")
        time.sleep(0.02)


def attach_blob_disk(
    sas: str,
    *,
    mkfs: Optional[str] = None,
    mount: bool = False,
    base_dir: Optional[str] = None,
    owned: bool = True,
) -> BlobDisk:
    """Attach the page blob behind ``sas`` as a loop device; ``mkfs`` makes a filesystem on it
    first, ``mount`` mounts it at ``mount_point``. ``owned``: torn down when this process exits.
    """
    if mkfs is not None and mkfs not in MKFS:
        raise ValueError(f"mkfs must be one of {', '.join(MKFS)}, not {mkfs!r}")
    os.makedirs(records_dir(), mode=0o700, exist_ok=True)
    directory = tempfile.mkdtemp(prefix="appconsistent-blobdisk-", dir=base_dir)
    os.chmod(directory, 0o755)  # a database's own user must reach the mount point
    record = {
        "blob_url": sas.split("?", 1)[0],
        "base_dir": directory,
        "fuse_mount": os.path.join(directory, "blob"),
        "mount_point": os.path.join(directory, "mnt"),
        "fstype": mkfs,
        "owner_pid": os.getpid() if owned else None,
        "owner_start": _process_start(os.getpid()) if owned else None,
    }
    name = f"{os.path.basename(directory)}-{uuid.uuid4().hex[:8]}.json"
    disk = BlobDisk(record, os.path.join(records_dir(), name))
    if owned:
        _install_hooks()
        with _live_lock:
            _live[disk.state_file] = disk
    try:
        disk._save()
        os.mkdir(disk.fuse_mount, 0o700)
        os.mkdir(disk.mount_point)
        _start_server(disk, sas)
        disk.device = _run(["losetup", "--find", "--show", disk.backing_file]).stdout.strip()
        disk._save()
        if mkfs:
            _run([*MKFS[mkfs], disk.device])
        if mount:
            disk.mount()
    except BaseException:
        disk.teardown()
        raise
    return disk


def load_records() -> list[BlobDisk]:
    disks = []
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(records_dir())):
            if name.endswith(".json"):
                path = os.path.join(records_dir(), name)
                with open(path) as handle:
                    disks.append(BlobDisk(json.load(handle), path))
    return disks


def cleanup(everything: bool = False) -> list[BlobDisk]:
    """Tear down recorded disks whose owner is gone (all of them with ``everything``)."""
    removed = []
    for disk in load_records():
        if everything or not disk.owner_alive():
            disk.teardown()
            removed.append(disk)
    return removed


if pytest is not None:

    @pytest.fixture
    def blob_disk_factory() -> Iterator[Callable[..., BlobDisk]]:
        """Call like ``attach_blob_disk``; every disk is torn down at the end, newest first."""
        made: list[BlobDisk] = []

        def factory(sas: str, **options) -> BlobDisk:
            made.append(attach_blob_disk(sas, **options))
            return made[-1]

        yield factory
        failures = []
        for disk in reversed(made):
            try:
                disk.teardown()
            except Exception as exc:  # tear the others down before reporting
                failures.append(exc)
        if failures:
            raise failures[0]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="attach a page blob as a loop device and record it")
    up.add_argument("--sas-file", required=True, help="file holding the SAS URI, - for stdin")
    up.add_argument("--mkfs", choices=sorted(MKFS))
    up.add_argument("--mount", action="store_true", help="mount the filesystem at mount_point")
    up.add_argument("--base-dir")
    up.add_argument("--json", help="also write the record to this file")
    down = commands.add_parser("down", help="tear down the disk that up recorded")
    down.add_argument("--json", required=True, help="the file up wrote")
    clean = commands.add_parser("cleanup", help="tear down recorded leftovers of dead owners")
    clean.add_argument("--all", action="store_true", help="also those whose owner is alive")
    server = commands.add_parser("serve", help="(internal) the FUSE server; SAS JSON on stdin")
    server.add_argument("--mountpoint", required=True)
    args = parser.parse_args(argv)

    if args.command == "serve":
        serve(json.load(sys.stdin)["sas"], args.mountpoint)
    elif args.command == "up":
        if args.sas_file == "-":
            sas = sys.stdin.read().strip()
        else:
            with open(args.sas_file) as handle:
                sas = handle.read().strip()
        disk = attach_blob_disk(
            sas, mkfs=args.mkfs, mount=args.mount, base_dir=args.base_dir, owned=False
        )
        text = json.dumps(disk.as_dict(), indent=2)
        if args.json:
            with open(args.json, "w") as handle:
                handle.write(text + "\n")
        print(text)
    elif args.command == "down":
        with open(args.json) as handle:
            state_file = json.load(handle)["state_file"]
        # Only what the state directory still records is touched.
        recorded = [disk for disk in load_records() if disk.state_file == state_file]
        for disk in recorded:
            disk.teardown()
        print(f"removed {len(recorded)} blob disk(s)")
    else:
        for disk in cleanup(everything=args.all):
            print(f"removed {disk.device} {disk.blob_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
