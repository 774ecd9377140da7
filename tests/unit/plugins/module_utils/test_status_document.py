"""The status document: the reference's shape, the local variant, atomic 0600 writes, redaction."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_document import (
    build_status_document,
    dumps_status_document,
    local_status_document,
    parse_status_document,
    write_status_file,
)

SIG = "c2VjcmV0LXNpZ25hdHVyZS0wMTIzNDU2Nzg5YWJjZGVm"
BLOB = "https://acct.blob.core.windows.net/vhds/os.vhd"
SNAPSHOT_OK = {
    "isSuccessful": True,
    "snapshotUri": f"{BLOB}?snapshot=2025-01-01T00:00:00.0000000Z",
    "errorMessage": "",
    "blobUri": BLOB,
    "directDriveSnapshotIdentifier": None,
}
SNAPSHOT_FAILED = {
    "isSuccessful": False,
    "snapshotUri": None,
    "errorMessage": f"HTTP 403 AuthenticationFailed: {BLOB}?sv=1&sig={SIG}",
    "blobUri": f"{BLOB}.data1",
    "directDriveSnapshotIdentifier": None,
}


def document(**overrides) -> list:
    arguments = {
        "task_id": "task-1",
        "status": Status.success_appconsistent,
        "status_text": "success",
        "message": "Enable Succeeded with App Consistent Snapshot",
        "consistency": "application",
        "snapshots": [SNAPSHOT_OK],
        "health_status": Status.success_appconsistent,
        "command_start_ticks": "638396640000000000",
        "telemetry": {"FreezeTime": 0.4, "snapshotTimeTaken": 12.5, "ThawTime": None},
        "unique_machine_id": "machine-1",
        "extension_version": "0.1.0",
        "timestamp_ms": 1735689600123,
    }
    arguments.update(overrides)
    return build_status_document(**arguments)


def test_blob_document_shape():
    (top,) = document()
    assert list(top) == ["version", "timestampUTC", "status"]
    assert top["version"] == "0.1.0"
    assert top["timestampUTC"] == "/Date(1735689600123)/"
    body = top["status"]
    assert list(body) == [
        "name",
        "operation",
        "status",
        "substatus",
        "code",
        "taskId",
        "formattedMessage",
        "storageDetails",
        "commandStartTimeUTCTicks",
        "telemetryData",
        "uniqueMachineId",
        "snapshotInfo",
        "vmHealthInfo",
    ]
    assert body["name"] == "Microsoft.Azure.RecoveryServices.VMSnapshotLinux"
    assert body["operation"] == "Enable"
    assert body["status"] == "success" and body["substatus"] == []
    assert body["code"] == "0" and body["taskId"] == "task-1"
    assert body["formattedMessage"]["lang"] == "en-US"
    assert json.loads(body["formattedMessage"]["message"]) == {
        "messageStr": "Enable Succeeded with App Consistent Snapshot",
        "snapshotConsistency": 2,
        "jobMessage": "",
        "isSizeComputationFailed": True,
    }
    assert body["storageDetails"] == {
        "partitionCount": 0,
        "totalUsedSizeInBytes": 0,
        "isStoragespacePresent": False,
        "isSizeComputationFailed": True,
    }
    assert body["commandStartTimeUTCTicks"] == "638396640000000000"
    assert body["telemetryData"] == [
        {"Key": "FreezeTime", "Value": "0.4"},
        {"Key": "snapshotTimeTaken", "Value": "12.5"},
    ]
    assert body["uniqueMachineId"] == "machine-1"
    assert body["snapshotInfo"] == [SNAPSHOT_OK]
    assert body["vmHealthInfo"] == {"vmHealthState": 0, "vmHealthStatusCode": 0}


@pytest.mark.parametrize(
    ("consistency", "number"),
    [("none", 0), ("filesystem", 1), ("application", 2), ("crash", 3)],
)
def test_consistency_numbers(consistency, number):
    (top,) = document(consistency=consistency)
    message = json.loads(top["status"]["formattedMessage"]["message"])
    assert message["snapshotConsistency"] == number
    assert parse_status_document(dumps_status_document([top]))["consistency"] == consistency


@pytest.mark.parametrize(
    ("status", "health", "code", "state"),
    [
        (Status.success, Status.FailedPrepostPreScriptFailed, "1", 128),
        (
            Status.FailedRetryableSnapshotFailedNoNetwork,
            Status.FailedRetryableSnapshotFailedRestrictedNetwork,
            "76",
            256,
        ),
        (Status.error_parameter, Status.error_parameter, "11", 128),
    ],
)
def test_code_and_health(status, health, code, state):
    (top,) = document(status=status, health_status=health, status_text="error")
    assert top["status"]["code"] == code
    assert top["status"]["vmHealthInfo"] == {"vmHealthState": state, "vmHealthStatusCode": health}


def test_serialised_like_the_reference_and_round_trips():
    doc = document(snapshots=[SNAPSHOT_OK, SNAPSHOT_FAILED], status_text="error")
    text = dumps_status_document(doc)
    assert text.startswith('[{"version":"0.1.0","timestampUTC":"\\/Date(1735689600123)\\/"')
    assert json.loads(text)[0]["timestampUTC"] == "/Date(1735689600123)/"
    parsed = parse_status_document(text)
    assert parsed["timestamp_ms"] == 1735689600123
    assert parsed["status"] == "error" and parsed["code"] == 0 and not parsed["local"]
    assert parsed["task_id"] == "task-1"
    assert parsed["message"]["messageStr"] == "Enable Succeeded with App Consistent Snapshot"
    assert [s["isSuccessful"] for s in parsed["snapshots"]] == [True, False]
    assert parsed["health_state"] == 0 and parsed["health_code"] == 0
    assert parsed["telemetry"] == {"FreezeTime": "0.4", "snapshotTimeTaken": "12.5"}


def test_every_string_is_redacted():
    secret_uri = f"{BLOB}?sv=1&sig={SIG}"
    doc = document(
        message=f"disk {secret_uri} failed",
        snapshots=[SNAPSHOT_FAILED],
        telemetry={"lastUri": secret_uri},
        unique_machine_id=f"AccountKey={SIG}",
        task_id=secret_uri,
    )
    text = dumps_status_document(doc)
    local_text = dumps_status_document(local_status_document(doc))
    for shown in (text, local_text, repr(doc)):
        assert SIG not in shown
    assert text.count("sig=REDACTED") == 4  # message, snapshot error, telemetry, taskId
    assert "AccountKey=REDACTED" in text


def test_local_document():
    blob_doc = document(status_text="error", status=Status.FailedRetryableSnapshotFailedNoNetwork)
    (top,) = local_status_document(blob_doc)
    assert top["timestampUTC"] == "2025-01-01T00:00:00Z"
    body = top["status"]
    assert body["telemetryData"] is None and body["snapshotInfo"] is None
    assert body["vmHealthInfo"] is None
    assert body["status"] == "error" and body["code"] == "76"
    assert body["formattedMessage"] == blob_doc[0]["status"]["formattedMessage"]
    (substatus,) = body["substatus"]
    assert substatus["code"] == "0" and substatus["status"] == "success"
    assert substatus["formattedMessage"] is None
    assert substatus["name"] == dumps_status_document(blob_doc)
    parsed = parse_status_document(dumps_status_document([top]))
    assert parsed["local"] and parsed["timestamp_ms"] is None and parsed["code"] == 76
    assert parsed["blob"]["snapshots"] == [SNAPSHOT_OK]
    # The blob document is untouched.
    assert blob_doc[0]["status"]["snapshotInfo"] == [SNAPSHOT_OK]


@pytest.mark.parametrize(
    ("vm_type", "status_text"),
    [
        ("microsoft.compute/virtualmachines", "success"),
        ("Microsoft.Compute/virtualMachines", "success"),
        ("microsoft.classiccompute/virtualmachines", "error"),
        (None, "error"),
    ],
)
def test_local_document_on_arm_reports_success(vm_type, status_text):
    blob_doc = document(status_text="error", status=Status.error)
    (top,) = local_status_document(blob_doc, vm_type=vm_type)
    assert top["status"]["status"] == status_text
    assert top["status"]["code"] == "2"
    assert json.loads(top["status"]["substatus"][0]["name"])[0]["status"]["status"] == "error"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"status_text": "transitioning"}, "status_text"),
        ({"consistency": "app"}, "consistency"),
        ({"snapshots": [{"isSuccessful": True}]}, r"snapshots\[0\] must have"),
    ],
)
def test_build_rejects_bad_arguments(overrides, fragment):
    with pytest.raises(ValueError, match=fragment):
        document(**overrides)


def test_write_status_file_is_atomic_and_private(tmp_path):
    path = tmp_path / "status" / "0.status"
    doc = local_status_document(document())
    write_status_file(str(path), doc)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.stat().st_uid == os.getuid()
    assert parse_status_document(path.read_text())["blob"]["task_id"] == "task-1"
    # Replace: the new content, still 0600, no temp file left behind.
    path.chmod(0o644)
    write_status_file(str(path), local_status_document(document(task_id="task-2")))
    assert parse_status_document(path.read_text())["blob"]["task_id"] == "task-2"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["0.status"]


def test_failed_write_leaves_no_temp_file_and_the_old_file(tmp_path):
    target = tmp_path / "busy.status"
    target.mkdir()  # a directory where the file should go: the rename fails
    (target / "keep").write_text("old")
    with pytest.raises(OSError):
        write_status_file(str(target), document())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy.status"]
    assert (target / "keep").read_text() == "old"


def test_written_file_is_redacted(tmp_path):
    path = tmp_path / "s.status"
    write_status_file(str(path), document(snapshots=[SNAPSHOT_FAILED]))
    assert SIG not in path.read_text() and "sig=REDACTED" in path.read_text()


def _mutated(change) -> str:
    doc = json.loads(dumps_status_document(document()))
    change(doc)
    return json.dumps(doc)


def _set(path: list, value):
    def change(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


def _delete(path: list):
    def change(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return change


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not json", "invalid JSON"),
        ("{}", "one element"),
        ("[]", "one element"),
        ("[1]", "has no 'version'"),
        (_mutated(_delete([0, "timestampUTC"])), "has no 'timestampUTC'"),
        (_mutated(_set([0, "status"], [])), "status has the wrong type"),
        (_mutated(_delete([0, "status", "vmHealthInfo"])), "status lacks vmHealthInfo"),
        (_mutated(_set([0, "status", "code"], 0)), "status.code has the wrong type"),
        (_mutated(_set([0, "status", "code"], "zero")), "is not a number"),
        (_mutated(_set([0, "status", "formattedMessage", "message"], "{")), "is not JSON"),
        (_mutated(_set([0, "status", "formattedMessage", "message"], "{}")), "no 'messageStr'"),
        (
            _mutated(
                _set(
                    [0, "status", "formattedMessage", "message"],
                    json.dumps(
                        {
                            "messageStr": "",
                            "snapshotConsistency": 7,
                            "jobMessage": "",
                            "isSizeComputationFailed": False,
                        }
                    ),
                )
            ),
            "unknown snapshotConsistency 7",
        ),
        (_mutated(_set([0, "status", "snapshotInfo", 0, "extra"], 1)), "snapshotInfo[0]"),
        (_mutated(_set([0, "status", "vmHealthInfo"], {})), "no 'vmHealthState'"),
        (_mutated(_set([0, "status", "telemetryData"], [{"Key": "a"}])), "telemetryData"),
        (_mutated(_set([0, "status", "snapshotInfo"], None)), "exactly one substatus"),
    ],
)
def test_parse_rejects_bad_documents(text, fragment):
    with pytest.raises(VmSnapshotError) as caught:
        parse_status_document(text)
    assert caught.value.status == Status.error_parameter
    assert fragment in caught.value.message
    assert caught.value.message.startswith("Not a status document: ")
