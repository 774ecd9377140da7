# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The restore_point playbook's per-VM record and fleet summary (filters of the fleet plugin)."""

from __future__ import annotations

import base64
import json

from ansible_collections.appconsistent.vmsnapshot.plugins.filter.fleet import FilterModule

F = FilterModule().filters()
EXTENSION = "Microsoft.Azure.RecoveryServices.VMSnapshotLinux"
STATUS_FILE = f"/var/lib/waagent/{EXTENSION}-1.0.9184.0/status/2.status"
GROUP = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute"
RP_ID = f"{GROUP}/restorePointCollections/vm-rp/restorePoints/rp-1"


def slurped(document) -> dict:
    return {
        "content": base64.b64encode(json.dumps(document).encode()).decode(),
        "encoding": "base64",
    }


def status_file(code: str, message: str, consistency: int) -> dict:
    """As the extension writes it: the status document as a JSON string in substatus[0].name."""
    inner_message = json.dumps({"messageStr": message, "snapshotConsistency": consistency})
    inner = [
        {
            "status": {
                "status": "error",
                "code": code,
                "formattedMessage": {"lang": "en-US", "message": inner_message},
            }
        }
    ]
    outer = [
        {
            "status": {
                "status": "success",
                "code": code,
                "substatus": [{"code": "0", "name": json.dumps(inner), "status": "success"}],
            }
        }
    ]
    return slurped(outer)


def run(consistency: str, disks=2, excluded=0) -> dict:
    return {
        "changed": True,
        "restore_point": {
            "id": RP_ID,
            "consistency": consistency,
            "disks": [
                {
                    "id": f"{GROUP}/disks/d{i}",
                    "excluded": i < excluded,
                    "disk_restore_point_id": None
                    if i < excluded
                    else f"{RP_ID}/diskRestorePoints/d{i}",
                }
                for i in range(disks)
            ],
        },
        "deleted": ["old"],
    }


def test_extension_status_reads_the_nested_document():
    status = F["extension_status"](
        status_file("300", "Pre-script failed with exit code 3.", 1), STATUS_FILE
    )
    assert status == {
        "file": STATUS_FILE,
        "code": "300",
        "status": "error",
        "message": "Pre-script failed with exit code 3.",
        "snapshot_consistency": 1,
    }


def test_extension_status_of_a_flat_document_with_a_plain_message():
    flat = slurped(
        [{"status": {"status": "success", "code": "1", "formattedMessage": {"message": "plain"}}}]
    )
    assert F["extension_status"](flat, "f")["message"] == "plain"


def test_extension_status_of_no_file_and_of_a_broken_one():
    assert F["extension_status"]({"skipped": True}, "") == {}
    broken = F["extension_status"]({"content": base64.b64encode(b"{not json").decode()}, "f")
    assert broken["code"] is None and "not the extension's JSON" in broken["message"]


def test_an_application_consistent_vm():
    result = F["restore_point_host_result"](run("application"), {}, {}, "application", False, "vm1")
    assert result["meets_policy"] and result["ran"] and not result["failed"]
    assert result["message"] == "Application-consistent."
    assert result["restore_point_id"] == RP_ID and result["deleted"] == ["old"]
    fleet = F["restore_point_fleet"]({"vm1": {"restore_point_result": result}}, ["vm1"])
    row = fleet["hosts"]["vm1"]
    assert row["outcome"] == "ok" and row["snapshots_taken"] == 2 and row["snapshots_total"] == 2
    assert row["restore_point_id"] == RP_ID and row["why"] == {}
    assert fleet["consistency"] == {"application": 1, "filesystem": 0, "crash": 0, "none": 0}


def test_a_file_system_consistent_vm_says_why_from_the_vm():
    why = {
        "prepost_info": {"status_code": 306, "status_name": "FailedPrepostPreScriptPermissionError",
                         "message": "mode 0755"},
        "status": F["extension_status"](status_file("306", "Permission error.", 1), STATUS_FILE),
        "log": {"file": "/var/log/azure/x/extension.log", "tail": ["a", "b", "c", "exited with 3"]},
    }  # fmt: skip
    result = F["restore_point_host_result"](
        run("filesystem", excluded=1), {}, why, "application", False, "vm2"
    )
    assert not result["meets_policy"]
    assert result["status_code"] == 306
    assert result["status_name"] == "FailedPrepostPreScriptPermissionError"
    for words in ("prepost_info: 306", "mode 0755", STATUS_FILE, "b | c | exited with 3"):
        assert words in result["message"]
    fleet = F["restore_point_fleet"]({"vm2": {"restore_point_result": result}}, ["vm2"])
    row = fleet["hosts"]["vm2"]
    assert row["outcome"] == "below application"
    assert (row["snapshots_taken"], row["snapshots_total"]) == (1, 2)
    lines = F["snapshot_fleet_lines"](fleet)
    assert lines[1].split()[:4] == [
        "vm2",
        "filesystem",
        "306",
        "FailedPrepostPreScriptPermissionError",
    ]
    assert lines[2].startswith("  vm2: prepost_info: 306")


def test_the_status_files_code_wins_and_the_name_only_when_it_matches():
    why = {
        "prepost_info": {"status_code": 306, "status_name": "FailedPrepostPreScriptPermissionError",
                         "message": "m"},
        "status": {"file": "f", "code": "300", "message": "Pre-script failed"},
    }  # fmt: skip
    result = F["restore_point_host_result"](run("filesystem"), {}, why, "filesystem")
    assert result["status_code"] == 300 and result["status_name"] is None
    assert result["meets_policy"]


def test_a_vm_that_reports_nothing_wrong():
    why = {"prepost_info": {"status_code": 0, "status_name": "success"}, "status": {}, "log": {}}
    result = F["restore_point_host_result"](run("crash"), {}, why, "filesystem")
    assert result["status_code"] is None
    assert result["message"].startswith("the VM reports no failure")


def test_a_failure_and_check_mode():
    failed = F["restore_point_host_result"](
        {}, {"message": "throttled", "azure_code": "TooManyRequests"}, {"error": "unreachable"},
        "crash", False, "vm3",
    )  # fmt: skip
    assert failed["failed"] and not failed["meets_policy"] and failed["message"] == "throttled"
    assert failed["azure_code"] == "TooManyRequests"
    checked = F["restore_point_host_result"](
        {"changed": True, "restore_point": None}, {}, {}, "crash", True
    )
    assert not checked["meets_policy"] and not checked["ran"]
    fleet = F["restore_point_fleet"](
        {"vm3": {"restore_point_result": failed}, "vm4": {"restore_point_result": checked}},
        ["vm3", "vm4", "vm5"],
    )
    assert [fleet["hosts"][h]["outcome"] for h in ("vm3", "vm4", "vm5")] == [
        "failed",
        "check mode",
        "no result",
    ]
    assert fleet["hosts"]["vm3"]["azure_code"] == "TooManyRequests"


def test_a_refused_input_is_the_vms_message():
    result = F["restore_point_host_result"](
        {"skipped": True}, {"message": "snapshot_required_consistency must be one of"}, {}, "app"
    )
    assert result["failed"] and result["message"].startswith("snapshot_required_consistency")
