from __future__ import annotations

import base64
import json

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._snapshot_options import (
    request_from_params,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

SIG = "c2lnbmF0dXJlLXRoYXQtbXVzdC1uZXZlci1sZWFr"
DISK = f"https://acct.blob.core.windows.net/vhds/disk0.vhd?sv=2021-12-02&sr=b&sp=rw&sig={SIG}"
STATUS = f"https://acct.blob.core.windows.net/status/s.json?sv=2021-12-02&sr=b&sp=cw&sig={SIG}"


def params(**overrides):
    base = {
        "disks": [DISK],
        "settings": None,
        "protected_settings": None,
        "config_path": "/etc/azure/VMSnapshotScriptPluginConfig.json",
        "host_config_path": "/etc/azure/VMSnapshotPluginHost.conf",
        "status_blob_uri": None,
        "logs_blob_uri": None,
        "task_id": None,
        "backup_metadata": {},
        "freeze_mounts": None,
        "mounts_to_skip": [],
        "max_freeze_seconds": 60,
        "snapshot_timeout": 10.0,
        "log_dir": "/tmp/log",
        "state_dir": "/tmp/state",
    }
    base.update(overrides)
    return base


def encoded(value) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def test_plain_disks():
    request = request_from_params(params(backup_metadata={"job": "nightly"}))
    assert [d.blob_url for d in request.disks] == [DISK.split("?", maxsplit=1)[0]]
    assert request.backup_metadata == {"job": "nightly"}
    assert request.status_blob is None and not request.crash_fallback_allowed


def test_extension_settings_and_explicit_options_win():
    settings = {
        "taskId": "t-1",
        "commandToExecute": "snapshot",
        "commandStartTimeUTCTicks": "638000000000000000",
        "vmType": "microsoft.compute/virtualmachines",
        "objectStr": encoded({"backupMetadata": [{"Key": "Origin", "Value": "azure"}]}),
        "statusBlobUri": STATUS,
    }
    protected = {"objectStr": encoded({"blobSASUri": [DISK, DISK.replace("disk0", "disk1")]})}
    request = request_from_params(
        params(disks=None, settings=settings, protected_settings=protected, task_id="mine")
    )
    assert len(request.disks) == 2 and request.task_id == "mine"
    assert request.backup_metadata == {"Origin": "azure"}
    assert request.status_blob.blob_url.endswith("/status/s.json")
    assert request.vm_type == "microsoft.compute/virtualmachines"
    assert request.command_start_ticks == "638000000000000000"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"disks": []}, "No disk"),
        ({"disks": ["ftp://example/disk?sig=x"]}, "disks[0]"),
        ({"max_freeze_seconds": 0}, "max_freeze_seconds is 0"),
        ({"max_freeze_seconds": 100000}, "max_freeze_seconds is 100000"),
        ({"snapshot_timeout": 0}, "snapshot_timeout is 0"),
        ({"backup_metadata": {"has space": "x"}}, "'has space'"),
        ({"backup_metadata": {"1st": "x"}}, "'1st'"),
        ({"status_blob_uri": "not a url"}, "status_blob_uri"),
    ],
)
def test_bad_options_name_the_option_and_hide_the_signature(overrides, needle):
    with pytest.raises(VmSnapshotError) as caught:
        request_from_params(params(**overrides))
    assert caught.value.status == Status.error_parameter
    assert needle in caught.value.message
    assert SIG not in caught.value.message


DISK1 = DISK.replace("disk0", "disk1")


@pytest.mark.parametrize(
    "shape",
    [[DISK, DISK1], f"{DISK},{DISK1}", f" {DISK} , {DISK1} ", json.dumps([DISK, DISK1])],
    ids=["list", "comma-separated", "comma-and-blanks", "json-string"],
)
def test_disks_in_every_survey_shape(shape):
    request = request_from_params(params(disks=shape))
    assert [d.blob_url for d in request.disks] == [
        DISK.split("?", maxsplit=1)[0],
        DISK1.split("?", maxsplit=1)[0],
    ]


@pytest.mark.parametrize(
    ("shape", "needle"),
    [
        (f'["{DISK}"', "disks starts with '[' but is not a JSON list"),
        ({"a": DISK}, "disks must be a list of URIs"),
        ([DISK, 5], "disks[1] must be a string"),
        ("", "No disk"),
        ("[]", "No disk"),
    ],
    ids=["broken-json", "dict", "not-a-string", "empty", "empty-json"],
)
def test_disks_of_a_wrong_shape_are_refused_without_the_signature(shape, needle):
    with pytest.raises(VmSnapshotError) as caught:
        request_from_params(params(disks=shape))
    assert caught.value.status == Status.error_parameter
    assert needle in caught.value.message
    assert SIG not in caught.value.message
