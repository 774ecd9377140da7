"""Blob-backed block devices: a page blob in the blob service used as a disk, like an Azure VHD.

A small FUSE filesystem (libfuse 3 through mfusepy) exposes one page blob as the file
``disk.vhd``; a loop device on that file, in direct I/O mode, is the disk. Every read request
is a ranged Get Blob, every write request a Put Page on the blob (whole 512-byte pages; a write
that does not cover whole pages is completed from the blob first), answered only once the blob
service accepted it. There is no write cache to lose: when the kernel sends a flush (fsync of
the file, a flush request on the loop device), everything written is already in the blob. So a
blob snapshot holds exactly what the disk held, and a freeze of the filesystem on the disk makes
that a file-system-consistent image.

Each disk has its own FUSE server process (this file's ``serve`` command; the SAS URI reaches it
on stdin, never on a command line) and its own temp directory, and is recorded in
``<loopfs state dir>/blobdisk/`` (``records.py`` keeps the records). ``teardown()`` thaws and
unmounts the filesystem, detaches the loop device, unmounts the FUSE filesystem and ends the
server by its PID (checked against its start time); it runs from the pytest finalizers, at exit
and on SIGTERM/SIGHUP. ``cleanup`` removes the leftovers of dead owners.

CLI (root)::

    python tests/harness/blobdisk.py up --sas-file FILE [--mkfs ext4] [--mount] [--json out.json]
    python tests/harness/blobdisk.py down --json out.json
    python tests/harness/blobdisk.py cleanup [--all]

``up`` reads the SAS URI (read and write on an existing page blob) from ``--sas-file`` or, with
``-``, from stdin; disks made by ``up`` belong to no process: ``down`` or ``cleanup`` removes them.
pytest fixture: ``blob_disk_factory``.
"""

from __future__ import annotations

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
import threading
import time
from collections.abc import Iterator
from typing import Callable
from urllib.parse import urlsplit

if __package__ in (None, ""):  # run as a script: import the harness the way the tests do
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.loopfs import MKFS, loops_backed_by, mounted_source
from harness.records import Record, Registry, process_start, run, same_process, state_dir

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


class BlobDisk(Record):
    """A page blob attached as a loop device (and optionally a filesystem on it)."""

    fields = (
        "blob_url",
        "base_dir",
        "fuse_mount",
        "mount_point",
        "fstype",
        "device",
        "server_pid",
        "server_start",
    )
    noun = "blob disk"
    registry = Registry(records_dir)
    blob_url: str
    base_dir: str
    fuse_mount: str
    mount_point: str
    fstype: str | None
    device: str | None
    server_pid: int | None
    server_start: str | None

    def __str__(self) -> str:
        return f"{self.device} {self.blob_url}"

    @property
    def backing_file(self) -> str:
        return os.path.join(self.fuse_mount, DISK_FILE)

    @property
    def log_file(self) -> str:
        return os.path.join(self.base_dir, "server.log")

    def server_alive(self) -> bool:
        return same_process(self.server_pid, self.server_start)

    def is_mounted(self) -> bool:
        """The filesystem on this disk's loop device is mounted at ``mount_point``."""
        source = mounted_source(self.mount_point)
        return source is not None and source in loops_backed_by(self.backing_file)

    def mount(self) -> None:
        run(["mount", self.device, self.mount_point])

    def unmount(self) -> None:
        """Thaw (a test may have frozen it) and unmount; lazily as a last resort."""
        if not self.is_mounted():
            return
        run(["fsfreeze", "-u", self.mount_point], check=False)  # "not frozen" is fine
        for _attempt in range(25):
            if run(["umount", self.mount_point], check=False).returncode == 0:
                return
            time.sleep(0.2)  # a process that used the filesystem is still leaving
        run(["umount", "--lazy", self.mount_point])

    def teardown(self) -> None:
        """Unmount, detach, unmount FUSE, end the server; safe twice and after a partial set-up."""
        self.unmount()
        for device in loops_backed_by(self.backing_file):
            run(["losetup", "--detach", device], check=False)
        if _fuse_mounted(self.fuse_mount):
            busy = run(["umount", self.fuse_mount], check=False).returncode != 0
            if busy:  # a loop device the kernel has not let go of yet
                run(["umount", "--lazy", self.fuse_mount])
        self._end_server()
        if not self.is_mounted() and not _fuse_mounted(self.fuse_mount):
            shutil.rmtree(self.base_dir, ignore_errors=True)
        self.forget()

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


def _start_server(disk: BlobDisk, sas: str) -> None:
    with open(disk.log_file, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve", "--mountpoint", disk.fuse_mount],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not in the test's process group: it must outlive signals
        )
    disk.server_pid, disk.server_start = process.pid, process_start(process.pid)
    disk.save()
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
    mkfs: str | None = None,
    mount: bool = False,
    base_dir: str | None = None,
    owned: bool = True,
) -> BlobDisk:
    """Attach the page blob behind ``sas`` as a loop device; ``mkfs`` makes a filesystem on it
    first, ``mount`` mounts it at ``mount_point``. ``owned``: torn down when this process exits.
    """
    if mkfs is not None and mkfs not in MKFS:
        raise ValueError(f"mkfs must be one of {', '.join(MKFS)}, not {mkfs!r}")
    directory = BlobDisk.registry.new_directory("appconsistent-blobdisk-", base_dir)
    os.chmod(directory, 0o755)  # a database's own user must reach the mount point
    record = {
        "blob_url": sas.split("?", 1)[0],
        "base_dir": directory,
        "fuse_mount": os.path.join(directory, "blob"),
        "mount_point": os.path.join(directory, "mnt"),
        "fstype": mkfs,
    }
    with BlobDisk.registry.making(record, owned) as disk:
        os.mkdir(disk.fuse_mount, 0o700)
        os.mkdir(disk.mount_point)
        _start_server(disk, sas)
        # Direct I/O: each request of the filesystem is one read or write of the file (one Put
        # Page), as a disk sees it, not one per 4 KiB page through a second page cache.
        disk.device = run(
            ["losetup", "--find", "--show", "--direct-io=on", disk.backing_file]
        ).stdout.strip()
        disk.save()
        if mkfs:
            run([*MKFS[mkfs], disk.device])
        if mount:
            disk.mount()
    return disk


if pytest is not None:

    @pytest.fixture
    def blob_disk_factory() -> Iterator[Callable[..., BlobDisk]]:
        """Call like ``attach_blob_disk``; every disk is torn down at the end, newest first."""
        yield from BlobDisk.registry.factory(attach_blob_disk)


def main(argv: list[str] | None = None) -> int:
    registry = BlobDisk.registry
    parser, commands, up = registry.command_line(
        __doc__.split("\n", 1)[0], "attach a page blob as a loop device and record it"
    )
    up.add_argument("--sas-file", required=True, help="file holding the SAS URI, - for stdin")
    up.add_argument("--mkfs", choices=sorted(MKFS))
    up.add_argument("--mount", action="store_true", help="mount the filesystem at mount_point")
    server = commands.add_parser("serve", help="(internal) the FUSE server; SAS JSON on stdin")
    server.add_argument("--mountpoint", required=True)
    args = parser.parse_args(argv)

    if args.command == "serve":
        serve(json.load(sys.stdin)["sas"], args.mountpoint)
        return 0

    def up_disk() -> BlobDisk:
        if args.sas_file == "-":
            sas = sys.stdin.read().strip()
        else:
            with open(args.sas_file) as handle:
                sas = handle.read().strip()
        return attach_blob_disk(
            sas, mkfs=args.mkfs, mount=args.mount, base_dir=args.base_dir, owned=False
        )

    return registry.run_command(args, up_disk)


if __name__ == "__main__":
    sys.exit(main())
