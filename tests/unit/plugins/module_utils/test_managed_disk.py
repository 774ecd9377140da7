"""Unit tests of the managed-disk options and the mapping of Resource Manager answers to codes."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._arm_rest import (
    ArmResponse,
    failure_status_for,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._managed_disk import (
    ManagedSnapshotResult,
    settings_from_params,
    targets_from_params,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

DISK = "/subscriptions/s1/resourceGroups/rg-vm/providers/Microsoft.Compute/disks/data"
NOW = datetime(2026, 12, 1, 2, 3, 4, tzinfo=timezone.utc)
ENDPOINTS = {
    "arm_endpoint": "https://management.azure.com",
    "imds_endpoint": "http://169.254.169.254",
}


def targets(*entries, **params):
    return targets_from_params({"managed_disks": list(entries), **params}, now=NOW)


def test_names_default_to_the_disk_and_the_run_time():
    [target] = targets({"id": DISK})
    assert target.snapshot_name == "data-20261201T020304Z"
    assert target.snapshot_resource_group == "rg-vm"
    assert target.snapshot_id.endswith(
        "/resourceGroups/rg-vm/providers/Microsoft.Compute/snapshots/data-20261201T020304Z"
    )


def test_task_id_and_resource_group():
    [target] = targets(
        {"id": DISK, "snapshot_name": "{disk}-{task_id}", "snapshot_resource_group": "rg-snap"},
        task_id="nightly-7",
    )
    assert (target.snapshot_resource_group, target.snapshot_name) == ("rg-snap", "data-nightly-7")


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"id": "/subscriptions/s1/disks/data"}, "resource ID"),
        ({"id": DISK, "snapshot_name": "{nope}"}, "may use only"),
        ({"id": DISK, "snapshot_name": "has space"}, "1-80 letters"),
        ({"id": DISK, "snapshot_name": "x" * 81}, "1-80 letters"),
        ({"id": DISK, "snapshot_resource_group": "bad/group"}, "not a resource group"),
    ],
)
def test_bad_entries_are_parameter_errors(entry, words):
    with pytest.raises(VmSnapshotError) as caught:
        targets(entry)
    assert caught.value.status == Status.error_parameter and words in caught.value.message


def test_two_disks_may_not_share_a_snapshot_name():
    with pytest.raises(VmSnapshotError, match="two disks"):
        targets({"id": DISK, "snapshot_name": "same"}, {"id": DISK + "2", "snapshot_name": "same"})


def test_the_token_never_goes_over_plain_http():
    with pytest.raises(VmSnapshotError, match="https"):
        settings_from_params({**ENDPOINTS, "arm_endpoint": "http://management.azure.com"})


def test_one_identity_at_most():
    with pytest.raises(VmSnapshotError, match="one of"):
        settings_from_params(
            {**ENDPOINTS, "managed_identity": {"client_id": "a", "object_id": "b"}}
        )


def answer(status: int, code: str = "", message: str = "") -> ArmResponse:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return ArmResponse(status, {}, body)


@pytest.mark.parametrize(
    ("response", "status"),
    [
        (answer(401, "InvalidAuthenticationToken"), Status.error_http_failure),
        (answer(403, "AuthorizationFailed"), Status.error_http_failure),
        (answer(409, "Conflict"), Status.error_http_failure),
        (answer(429, "TooManyRequests"), Status.FailedRetryableSnapshotRateExceeded),
        (answer(503, "ServiceUnavailable"), Status.FailedRetryableSnapshotRateExceeded),
        (
            answer(409, "OperationNotAllowed", "The maximum number of snapshots is reached."),
            Status.FailedSnapshotLimitReached,
        ),
    ],
)
def test_answers_map_to_the_page_blob_codes(response, status):
    assert failure_status_for(response) == status


def test_error_text_is_short_and_names_the_code():
    text = answer(403, "AuthorizationFailed", "x" * 1000).error_text()
    assert text.startswith("HTTP 403 AuthorizationFailed: ") and len(text) <= 300


def test_results_fill_the_status_document_with_resource_ids():
    result = ManagedSnapshotResult(DISK, DISK + "-snap", True, 202, None, Status.success)
    assert result.snapshot_info() == {
        "isSuccessful": True,
        "snapshotUri": DISK + "-snap",
        "errorMessage": "",
        "blobUri": DISK,
        "directDriveSnapshotIdentifier": None,
    }
