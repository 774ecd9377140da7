"""The restore_point module with the real Azure SDK against the Resource Manager stand-in.

Azure itself is NOT reached: `tests/harness/armstandin.py` with the restore-point routes of
`armstandin_restore_points.py` follows the published REST specification and its examples, over
HTTPS with its own certificate. The module gets its token from the stand-in's AAD endpoint with a
service principal, through `azure-identity`, as it would from Microsoft Entra ID. Each included
disk is a page blob in Azurite, and a restore point takes a real blob snapshot of it.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from harness.armstandin import start_standin
from harness.armstandin_restore_points import add_vm, set_outcome
from harness.azurite import ACCOUNT, ACCOUNT_KEY
from harness.modules import run_module

SUB = "00000000-0000-0000-0000-0000000000aa"
RG = "rg-rp"
SECRET = "sp-secret-Zq81mUvX0pLk3RtY"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def arm_standin(azurite, tmp_path_factory):
    """The Resource Manager stand-in (with its restore-point routes) on the session's Azurite."""
    standin = start_standin(azurite.state(), tmp_path_factory.mktemp("rp-standin"))
    yield standin
    standin.stop()


@pytest.fixture
def vm(arm_standin):
    """A fresh VM with an OS disk and a data disk on Azurite page blobs."""
    name = f"vm{next(_names)}"
    disks = [
        arm_standin.add_disk(f"{name}-os", subscription=SUB, resource_group=RG),
        arm_standin.add_disk(f"{name}-data", subscription=SUB, resource_group=RG),
    ]
    add_vm(arm_standin, name, disks, subscription=SUB, resource_group=RG)
    arm_standin.clear_faults()
    return name, disks


def args(standin, vm_name: str, **extra) -> dict:
    return {
        "resource_group": RG,
        "vm_name": vm_name,
        "name": "nightly-1",
        "subscription_id": SUB,
        "tenant": "tenant-1",
        "client_id": "awx-sp",
        "secret": SECRET,
        "arm_endpoint": standin.arm_endpoint,
        "authority_host": standin.aad_endpoint,
        "ca_path": standin.ca_file,
        "timeout": 30,
        **extra,
    }


def snapshots_of(standin, disk_id: str) -> int:
    """How many blob snapshots the page blob behind this disk has (read from Azurite)."""
    backing = standin.backing(disk_id)
    azurite = json.loads(Path(standin.directory, "azurite.json").read_text())
    service = BlobServiceClient(
        azurite["url"], credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY}
    )
    blobs = service.get_container_client(backing["container"]).list_blobs(
        name_starts_with=backing["blob"], include=["snapshots"]
    )
    return sum(1 for b in blobs if b.name == backing["blob"] and b.snapshot)


def test_application_consistent_then_rerun_changes_nothing(arm_standin, vm):
    name, disks = vm
    check = run_module("restore_point", args(arm_standin, name), check_mode=True)
    assert check["changed"] and check["created_collection"] and check["restore_point"] is None
    assert snapshots_of(arm_standin, disks[0]) == 0  # check mode took nothing

    first = run_module("restore_point", args(arm_standin, name))
    assert not first.get("failed"), first
    point = first["restore_point"]
    assert first["changed"] and first["created_collection"]
    assert point["consistency"] == "application", point
    assert point["provisioning_state"] == "Succeeded"
    assert point["id"].endswith(
        f"/restorePointCollections/{name}-restore-points/restorePoints/nightly-1"
    )
    assert [d["consistency"] for d in point["disks"]] == ["application", "application"]
    assert all(d["disk_restore_point_id"] for d in point["disks"])
    # The state: one real blob snapshot per disk.
    assert [snapshots_of(arm_standin, d) for d in disks] == [1, 1]

    again = run_module("restore_point", args(arm_standin, name))
    assert not again["changed"] and again["restore_point"]["id"] == point["id"]
    assert [snapshots_of(arm_standin, d) for d in disks] == [1, 1]
    puts = [
        r for r in arm_standin.requests() if r["method"] == "PUT" and "/restorePoints/" in r["path"]
    ]
    assert len(puts) == 1
    # The secret never comes back.
    assert SECRET not in repr(first) + repr(again)


@pytest.mark.parametrize(
    ("azure", "ours"), [("FileSystemConsistent", "filesystem"), ("CrashConsistent", "crash")]
)
def test_downgraded_consistency_is_reported(arm_standin, vm, azure, ours):
    name, disks = vm
    set_outcome(arm_standin, name, consistency=azure)
    result = run_module("restore_point", args(arm_standin, name, exclude_disks=[f"{name}-data"]))
    assert not result.get("failed"), result
    point = result["restore_point"]
    assert point["consistency_mode"] == azure and point["consistency"] == ours
    assert [d["consistency"] for d in point["disks"]] == [ours, "excluded"]
    assert [snapshots_of(arm_standin, d) for d in disks] == [1, 0]  # the excluded disk: none


def test_failed_restore_point_fails_with_azures_code(arm_standin, vm):
    name = vm[0]
    set_outcome(
        arm_standin,
        name,
        fail={"code": "VMAgentStatusCommunicationError", "message": "The VM agent did not answer."},
    )
    result = run_module("restore_point", args(arm_standin, name, keep=1))
    assert result["failed"] and result["azure_code"] == "VMAgentStatusCommunicationError"
    assert "VM agent did not answer" in result["msg"] and result["deleted"] == []


def test_throttled_calls_are_retried_after_retry_after(arm_standin, vm):
    name = vm[0]
    arm_standin.set_faults(
        {
            "path": "/restorePoints/",
            "method": "PUT",
            "status": 429,
            "code": "TooManyRequests",
            "retry_after": 1,
            "times": 2,
        }
    )
    result = run_module("restore_point", args(arm_standin, name))
    assert not result.get("failed"), result
    statuses = [
        r.get("status")
        for r in arm_standin.requests()
        if r["method"] == "PUT" and f"{name}-restore-points/restorePoints/" in r["path"]
    ]
    assert statuses == [429, 429, 201]


def test_throttled_beyond_the_retries_fails_clearly(arm_standin, vm):
    name = vm[0]
    arm_standin.set_faults(
        {
            "path": "/restorePoints/",
            "method": "PUT",
            "status": 429,
            "code": "TooManyRequests",
            "retry_after": 0,
        }
    )
    result = run_module("restore_point", args(arm_standin, name))
    assert result["failed"] and "throttled" in result["msg"] and result["http_status"] == 429


def test_operation_outliving_the_timeout_then_rerun_reads_it(arm_standin, vm):
    name = vm[0]
    set_outcome(arm_standin, name, seconds=6)
    result = run_module("restore_point", args(arm_standin, name, timeout=2))
    assert result["failed"] and result["timed_out"], result
    assert 1.5 <= result["wait_seconds"] < 6
    time.sleep(6)
    later = run_module("restore_point", args(arm_standin, name))
    assert not later["changed"] and later["restore_point"]["consistency"] == "application"


def test_retention_keeps_the_newest_only_after_success(arm_standin, vm):
    name = vm[0]
    ids = []
    for number in range(1, 4):
        result = run_module("restore_point", args(arm_standin, name, name=f"rp-{number}", keep=2))
        assert not result.get("failed"), result
        ids.append(result["restore_point"]["id"])
    assert result["deleted"] == [ids[0]]
    set_outcome(arm_standin, name, fail={"code": "InternalError", "message": "no"})
    failed = run_module("restore_point", args(arm_standin, name, name="rp-4", keep=1))
    assert failed["failed"] and failed["deleted"] == []
    status, listed = arm_standin.call(
        "GET",
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/restorePointCollections/"
        f"{name}-restore-points?api-version=2024-11-01&$expand=restorePoints",
        token=arm_standin.token(),
    )
    names = sorted(p["name"] for p in listed["properties"]["restorePoints"])
    assert status == 200 and names == ["rp-2", "rp-3", "rp-4"]


def test_bad_input_gets_a_clear_error(arm_standin, vm):
    name = vm[0]
    result = run_module("restore_point", args(arm_standin, name, exclude_disks=["nope"]))
    assert result["failed"] and "not a managed disk" in result["msg"]
    result = run_module("restore_point", args(arm_standin, "absent-vm"))
    assert result["failed"] and "ResourceNotFound" in result["msg"]
    result = run_module("restore_point", args(arm_standin, name, arm_endpoint="http://127.0.0.1:1"))
    assert result["failed"] and "not HTTPS" in result["msg"]
