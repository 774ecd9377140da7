"""Restore points: reading Azure's answer, disk exclusion, credentials (no network here)."""

from __future__ import annotations

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import _restore_point as rp

models = pytest.importorskip("azure.mgmt.compute.models")

SUB = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute"
DISKS = [
    {"id": f"{SUB}/disks/vm-os", "name": "vm-os"},
    {"id": f"{SUB}/disks/vm-data", "name": "vm-data", "lun": 0},
]


def point(state: str, mode: str, *, exclude_data: bool = False) -> object:
    """A restore point shaped like the specification's RestorePoint_Get_WithInstanceView."""
    base = f"{SUB}/restorePointCollections/c/restorePoints/p"
    data = [] if exclude_data else [
        {"lun": 0, "name": "vm-data", "managedDisk": {"id": DISKS[1]["id"]},
         "diskRestorePoint": {"id": f"{base}/diskRestorePoints/vm-data_1"}}
    ]  # fmt: skip
    views = [{"id": f"{base}/diskRestorePoints/vm-os_1", "snapshotAccessState": "Available"}]
    return models.RestorePoint(
        {
            "id": base,
            "name": "p",
            "properties": {
                "provisioningState": state,
                "consistencyMode": mode,
                "timeCreated": "2026-12-02T00:00:00+00:00",
                "sourceMetadata": {
                    "storageProfile": {
                        "osDisk": {
                            "name": "vm-os",
                            "managedDisk": {"id": DISKS[0]["id"]},
                            "diskRestorePoint": {"id": f"{base}/diskRestorePoints/vm-os_1"},
                        },
                        "dataDisks": data,
                    }
                },
                "instanceView": {"diskRestorePoints": views},
            },
        }
    )


@pytest.mark.parametrize(
    ("mode", "level"),
    [
        ("ApplicationConsistent", "application"),
        ("FileSystemConsistent", "filesystem"),
        ("CrashConsistent", "crash"),
        ("SomethingNew", "none"),
    ],
)
def test_every_included_disk_has_the_restore_points_consistency(mode, level):
    described = rp.describe(point("Succeeded", mode), DISKS, [])
    assert described["consistency"] == level and described["consistency_mode"] == mode
    assert [d["consistency"] for d in described["disks"]] == [level, level]
    assert described["disks"][0]["snapshot_access_state"] == "Available"


def test_excluded_disks_and_unfinished_points():
    described = rp.describe(
        point("Succeeded", "ApplicationConsistent", exclude_data=True), DISKS, [DISKS[1]["id"]]
    )
    assert [d["consistency"] for d in described["disks"]] == ["application", "excluded"]
    assert rp.describe(point("Failed", "ApplicationConsistent"), DISKS, [])["consistency"] == "none"


def test_exclude_disks_by_name_or_id_and_a_clear_error_otherwise():
    request = rp.Request("rg", "vm", "p", "c", exclude_disks=["VM-DATA", DISKS[0]["id"].upper()])
    assert rp._excluded_ids(request, DISKS) == [DISKS[1]["id"], DISKS[0]["id"]]
    with pytest.raises(rp.RestorePointError, match="'nope', which is not a managed disk"):
        rp._excluded_ids(rp.Request("rg", "vm", "p", "c", exclude_disks=["nope"]), DISKS)


def test_credentials_are_required_and_http_is_refused():
    with pytest.raises(
        rp.RestorePointError, match="AZURE_CLIENT_ID, AZURE_SECRET and AZURE_TENANT"
    ):
        rp.credential(rp.Credentials(subscription_id="s", client_id="c"), None)
    token = rp.credential(rp.Credentials(subscription_id="s", access_token="t" * 40), None)
    assert token.get_token("scope").token == "t" * 40
    request = rp.Request("rg", "vm", "p", "c", arm_endpoint="http://127.0.0.1:1")
    with pytest.raises(rp.RestorePointError, match="not HTTPS"):
        rp.client(rp.Credentials(subscription_id="s", access_token="t" * 40), request)
