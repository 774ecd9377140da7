"""Numbers the restore modules did not expect: NaN, infinity, 1e308, 1e30 as a timeout.

`snapshot_restore` and `managed_disk_restore` passed `timeout` to the socket layer as it came:
infinity or 1e308 ended in `OverflowError: timestamp out of range` and NaN in a `ValueError`,
both as a traceback with no JSON result. Each must be refused with 11 and a sentence, at once,
with nothing read or written.
"""

from __future__ import annotations

import time

import pytest
from fault_support import TRACEBACK, run_module_process, summary

SNAPSHOT_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
    "Microsoft.Compute/snapshots/s1"
)
ODD_NUMBERS = {"NaN": float("nan"), "infinity": float("inf"), "1e308": 1e308, "1e30": 10**30}


@pytest.mark.parametrize("number", list(ODD_NUMBERS))
def test_snapshot_restore_refuses_an_odd_timeout(figures, blob_disks, azurite, tmp_path, number):
    scenario = figures.scenario(
        "odd-restore-timeouts", "input",
        "NaN, infinity, 1e308, 1e30 as the timeout of snapshot_restore, managed_disk_restore",
    )  # fmt: skip
    with scenario.case(f"snapshot_restore timeout {number}") as case:
        disk = blob_disks(1)[0]
        snapshot = azurite.service.get_blob_client(disk.container, disk.name).create_snapshot()
        source = azurite.blob_sas(
            disk.container, disk.name, permissions="r", snapshot=snapshot["snapshot"]
        )
        destination = azurite.blob_sas(disk.container, "restored.vhd", permissions="rcw")
        args = {"snapshot_uri": source, "destination_uri": destination}
        started = time.monotonic()
        result, process = run_module_process(
            {**args, "timeout": ODD_NUMBERS[number]}, tmp_path, name="snapshot_restore"
        )
        case.module_output(process)
        case.check(TRACEBACK not in process.stdout + process.stderr, "a traceback")
        case.check(result and result.get("status_code") == 11, summary(result))
        case.check(time.monotonic() - started < 15, "took too long")
        names = [blob.name for blob in azurite.service.get_container_client(disk.container)
                 .list_blobs()]  # fmt: skip
        case.check("restored.vhd" not in names, "the destination was written")


@pytest.mark.parametrize("number", list(ODD_NUMBERS))
def test_managed_disk_restore_refuses_an_odd_timeout(figures, arm_standin, tmp_path, number):
    scenario = figures.scenario(
        "odd-restore-timeouts", "input",
        "NaN, infinity, 1e308, 1e30 as the timeout of snapshot_restore, managed_disk_restore",
    )  # fmt: skip
    with scenario.case(f"managed_disk_restore timeout {number}") as case:
        before = len(arm_standin.requests())
        args = {
            "snapshot_id": SNAPSHOT_ID,
            "name": "restored",
            "access_token": arm_standin.token("awx-credential"),
            "arm_endpoint": arm_standin.arm_endpoint,
            "ca_path": arm_standin.ca_file,
            "timeout": ODD_NUMBERS[number],
        }
        result, process = run_module_process(args, tmp_path, name="managed_disk_restore")
        case.module_output(process)
        case.check(TRACEBACK not in process.stdout + process.stderr, "a traceback")
        case.check(result and result.get("status_code") == 11, summary(result))
        case.check(len(arm_standin.requests()) == before, "Resource Manager was called")


# Option values a YAML file or a survey can carry that no path or header can hold. (A NUL in
# config_path or host_config_path is a configuration not found, 316/313, as the reference
# does for a missing one; in freeze_mounts it is 123, not a mount point: both documented.)
HOSTILE_OPTIONS = {
    "state_dir with a NUL": {"state_dir": "/tmp/st\u0000ate"},
    "log_dir with a NUL": {"log_dir": "/tmp/lo\u0000gs"},
    "task_id with a NUL": {"task_id": "task\u0000id"},
    "task_id with a line break": {"task_id": "task\r\nx-ms-meta-evil: 1"},
    "task_id of 100000 characters": {"task_id": "t" * 100000},
    "backup_metadata value that is a dict": {"backup_metadata": {"k": {"a": 1}}},
    "backup_metadata value that is a list": {"backup_metadata": {"k": [1, 2]}},
}


@pytest.mark.parametrize("option", HOSTILE_OPTIONS)
def test_snapshot_refuses_hostile_option_values_before_anything_runs(
    figures, app, blob_disks, azurite, loop_ext4, run_dirs, tmp_path, option
):
    scenario = figures.scenario(
        "hostile-option-values", "input",
        "NULs, line breaks, 100000 characters, nested values in the snapshot module's options",
    )  # fmt: skip
    with scenario.case(option) as case:
        disk = blob_disks(1)[0]
        args = {
            "disks": [disk.sas],
            "config_path": app.config_location,
            "freeze_mounts": [loop_ext4.mount_point],
            **run_dirs,
            **HOSTILE_OPTIONS[option],
        }
        result, process = run_module_process(args, tmp_path, timeout=60)
        case.module_output(process)
        case.check(result and result.get("status_code") == 11, summary(result))
        case.check(len(process.stdout) < 20000, f"{len(process.stdout)} bytes of output")
        case.check(app.entries() == [], f"scripts ran: {app.entries()}")
        held = len(azurite.list_snapshots(disk.container, disk.name))
        case.check(held == 0, f"{held} snapshot(s) taken")
