"""A pre-script that writes errors but exits 0 (as Microsoft's MySQL sample does when its SQL
fails) shows in extension.log with its output, and in the role's summary as a flagged script.
Real parts: the example pre/post scripts' shape, a loop-mounted ext4, Azurite."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import _fleet
from harness.modules import run_module
from harness.scriptset import write_prepost

pytestmark = pytest.mark.root


def test_script_errors_with_exit_0_reach_the_log_and_the_summary(
    azurite, blob_disks, loop_ext4, tmp_path
):
    disks = blob_disks(1)
    prepost = write_prepost(
        tmp_path / "scripts",
        pre='echo "ERROR 1045 (28000): Access denied for user backup" >&2; exit 0',
    )
    args = {
        "disks": [disk.sas for disk in disks],
        "config_path": str(prepost.config_path),
        "freeze_mounts": [loop_ext4.mount_point],
        "state_dir": str(tmp_path / "state"),
        "log_dir": str(tmp_path / "logs"),
    }
    deadline = time.monotonic() + 180
    while True:  # another test's run may hold this machine's host lock for a moment
        result = run_module("snapshot", args)
        if "holds the host lock" not in str(result.get("msg", "")) or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert result["consistency"] == "application", result
    assert len(azurite.list_snapshots(disks[0].container, disks[0].name)) == 1

    log = Path(tmp_path / "logs" / "extension.log").read_text()
    line = next(
        line for line in log.splitlines() if "pre-script " + str(prepost.config_path.parent) in line
    )
    assert "exit code 0" in line and "ERROR 1045 (28000): Access denied" in line, line

    record = _fleet.host_result(result, {}, "filesystem", False, "db1")
    assert [(n["phase"], n["exit_code"]) for n in record["script_notes"]] == [("pre", 0)]
    assert "ERROR 1045" in record["script_notes"][0]["stderr_tail"]
    lines = _fleet.snapshot_fleet_lines(_fleet.snapshot_fleet({"db1": record}))
    assert any("pre-script" in line and "exit 0" in line and "ERROR 1045" in line for line in lines)
