"""The blob-backed disk of the harness: its data is in the page blob, flushes are honoured, and
it leaves nothing behind. The blob service (azure-storage-blob on Azurite) is the oracle."""

from __future__ import annotations

import json
import mmap
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness import blobdisk
from harness.loopfs import loops_backed_by, mounted_source

pytestmark = pytest.mark.root

SIZE = 64 * 1024 * 1024
PAGE = 4096


def new_blob(azurite, content: bytes = b"", size: int = SIZE) -> tuple[str, str, str]:
    container = azurite.create_container()
    azurite.create_page_blob("disk.vhd", size, content, container=container)
    return container, "disk.vhd", azurite.blob_sas(container, "disk.vhd")


def blob_bytes(azurite, container: str, name: str, offset: int, length: int) -> bytes:
    client = azurite.service.get_blob_client(container, name)
    return client.download_blob(offset=offset, length=length).readall()


def assert_gone(disk: blobdisk.BlobDisk) -> None:
    assert mounted_source(disk.mount_point) is None
    assert mounted_source(disk.fuse_mount) is None
    assert loops_backed_by(disk.backing_file) == []
    assert not disk.server_alive()
    assert not os.path.exists(disk.base_dir) and not os.path.exists(disk.state_file)


def test_reads_and_writes_of_the_disk_are_the_blobs(azurite, blob_disk_factory):
    initial = os.urandom(3 * PAGE)
    container, name, sas = new_blob(azurite, initial)
    disk = blob_disk_factory(sas)

    with open(disk.device, "rb") as device:
        assert device.read(len(initial)) == initial
    data = os.urandom(2 * PAGE)
    buffer = mmap.mmap(-1, len(data))  # page-aligned, as O_DIRECT wants
    buffer.write(data)
    fd = os.open(disk.device, os.O_WRONLY | os.O_DIRECT)
    try:
        assert os.pwrite(fd, buffer, SIZE - len(data)) == len(data)
    finally:
        os.close(fd)
    # Acknowledged means in the blob: no flush was needed, none is pending.
    assert blob_bytes(azurite, container, name, SIZE - len(data), len(data)) == data

    # A write that covers no whole 512-byte page, straight to the file: completed from the blob.
    with open(disk.backing_file, "r+b") as backing:
        backing.seek(700)
        backing.write(b"unaligned!")
    assert blob_bytes(azurite, container, name, 0, PAGE) == (
        initial[:700] + b"unaligned!" + initial[710:PAGE]
    )


def test_a_snapshot_of_the_frozen_filesystem_restores_to_exactly_that_filesystem(
    azurite, blob_disk_factory
):
    container, name, sas = new_blob(azurite)
    disk = blob_disk_factory(sas, mkfs="ext4", mount=True)
    kept = Path(disk.mount_point) / "kept.bin"
    content = os.urandom(3 * 1024 * 1024)
    kept.write_bytes(content)  # no fsync: the freeze must flush it
    subprocess.run(["fsfreeze", "-f", disk.mount_point], check=True)
    try:
        snapshot = azurite.service.get_blob_client(container, name).create_snapshot()["snapshot"]
    finally:
        subprocess.run(["fsfreeze", "-u", disk.mount_point], check=True)
    kept.write_bytes(b"changed after the snapshot")
    (Path(disk.mount_point) / "later.txt").write_text("later")

    restored_blob = azurite.service.get_blob_client(container, "restored.vhd")
    restored_blob.start_copy_from_url(
        azurite.service.get_blob_client(container, name, snapshot=snapshot).url,
        requires_sync=False,
    )
    restored = blob_disk_factory(azurite.blob_sas(container, "restored.vhd"))
    # Clean as frozen: fsck needs no journal replay and finds nothing.
    check = subprocess.run(
        ["e2fsck", "-fn", restored.device], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    restored.mount()
    assert (Path(restored.mount_point) / "kept.bin").read_bytes() == content
    assert not (Path(restored.mount_point) / "later.txt").exists()


def test_teardown_leaves_nothing_even_when_the_server_was_killed(azurite, blob_disk_factory):
    for kill_server in (False, True):
        sas = new_blob(azurite)[2]
        disk = blob_disk_factory(sas, mkfs="ext4", mount=True)
        assert disk.is_mounted() and disk.server_alive()
        assert sas.split("sig=")[1] not in Path(f"/proc/{disk.server_pid}/cmdline").read_text()
        if kill_server:
            os.kill(disk.server_pid, signal.SIGKILL)
        disk.teardown()
        assert_gone(disk)


def test_the_cli_brings_a_disk_up_and_down_and_cleans_up_after_a_dead_owner(azurite, tmp_path):
    script = Path(blobdisk.__file__)
    for finish in ("down", "cleanup"):
        sas = new_blob(azurite)[2]
        record_file = tmp_path / f"{finish}.json"
        up = subprocess.run(
            [sys.executable, str(script), "up", "--sas-file", "-", "--mkfs", "ext4", "--mount",
             "--json", str(record_file)],
            input=sas, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        record = json.loads(record_file.read_text())
        assert "sig=" not in record_file.read_text()
        disk = blobdisk.BlobDisk(record, record["state_file"])
        assert disk.is_mounted()
        if finish == "down":
            command = [sys.executable, str(script), "down", "--json", str(record_file)]
        else:
            # Made by up, it belongs to no process: cleanup takes it as a dead owner's.
            command = [sys.executable, str(script), "cleanup"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert_gone(disk)
