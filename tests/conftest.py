"""Shared pytest set-up: the collection's import path and the harness fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / ".cache" / "collections"))
sys.path.insert(0, str(ROOT / "tests"))

# The harness' fixtures, for every test below tests/.
from harness.armstandin import arm_standin  # noqa: E402
from harness.azurite import azurite, blob_disks  # noqa: E402
from harness.blobdisk import blob_disk_factory  # noqa: E402
from harness.loopfs import loop_ext4, loop_filesystem_factory, loop_xfs  # noqa: E402

__all__ = [
    "arm_standin",
    "azurite",
    "blob_disk_factory",
    "blob_disks",
    "loop_ext4",
    "loop_filesystem_factory",
    "loop_xfs",
]
