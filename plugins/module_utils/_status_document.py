# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""The status document of a run, in the reference's JSON shape (docs/reference-behaviour.md §5.5).

The blob variant (`build_status_document`) goes to the status blob; the local variant
(`local_status_document`) nests the blob JSON in its substatus, as the guest agent expects.
Every string in both, and the JSON text written, pass through `_redact.scrub()` (each
registered secret by value, in any spelling), and the file is written atomically with 0600.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._atomic_file import (
    write_atomically,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._redact import (
    scrub,
    scrub_obj,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
    describe,
)

HANDLER_NAME = "Microsoft.Azure.RecoveryServices.VMSnapshotLinux"
OPERATION = "Enable"
# Utils/Status.py SnapshotConsistencyType.
CONSISTENCY = {"none": 0, "filesystem": 1, "application": 2, "crash": 3}
STATUS_TEXTS = ("success", "error")
SNAPSHOT_INFO_KEYS = (
    "isSuccessful",
    "snapshotUri",
    "errorMessage",
    "blobUri",
    "directDriveSnapshotIdentifier",
)
# The guest agent reads an ARM VM's local status as success; the result is in the substatus.
ARM_VM_TYPE = "microsoft.compute/virtualmachines"
_MS_DATE = re.compile(r"^/Date\((\d+)\)/$")
_ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_STATUS_KEYS = (
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
)


def _redacted(value: Any) -> Any:
    return scrub_obj(value)


def build_status_document(
    *,
    task_id: str | None,
    status: Status,
    status_text: str,
    message: str,
    consistency: str,
    snapshots: list[Mapping[str, Any]],
    health_status: Status,
    command_start_ticks: str | None,
    telemetry: Mapping[str, Any],
    unique_machine_id: str,
    extension_version: str,
    timestamp_ms: int | None = None,
    storage_details: Mapping[str, Any] | None = None,
) -> list:
    """The status blob document: a JSON array with one element.

    `timestampUTC` holds "/Date(<ms>)/" (serialised as the reference's "\\/Date(<ms>)\\/" by
    `dumps_status_document`). We do not measure used disk space, so `storage_details`
    defaults to zeros with isSizeComputationFailed true. Telemetry values of None are left out.
    """
    if status_text not in STATUS_TEXTS:
        raise ValueError(f"status_text must be one of {STATUS_TEXTS}, not {status_text!r}")
    if consistency not in CONSISTENCY:
        raise ValueError(f"consistency must be one of {sorted(CONSISTENCY)}, not {consistency!r}")
    for index, entry in enumerate(snapshots):
        if set(entry) != set(SNAPSHOT_INFO_KEYS):
            raise ValueError(f"snapshots[{index}] must have exactly the keys {SNAPSHOT_INFO_KEYS}")
    storage = dict(
        storage_details
        or {
            "partitionCount": 0,
            "totalUsedSizeInBytes": 0,
            "isStoragespacePresent": False,
            "isSizeComputationFailed": True,
        }
    )
    if timestamp_ms is None:
        timestamp_ms = int(time.time() * 1000)
    formatted = {
        "messageStr": message,
        "snapshotConsistency": CONSISTENCY[consistency],
        "jobMessage": "",
        "isSizeComputationFailed": bool(storage.get("isSizeComputationFailed")),
    }
    body = {
        "name": HANDLER_NAME,
        "operation": OPERATION,
        "status": status_text,
        "substatus": [],
        "code": str(int(status)),
        "taskId": task_id,
        "formattedMessage": {"lang": "en-US", "message": json.dumps(_redacted(formatted))},
        "storageDetails": storage,
        "commandStartTimeUTCTicks": command_start_ticks,
        "telemetryData": [
            {"Key": str(key), "Value": str(value)}
            for key, value in telemetry.items()
            if value is not None
        ],
        "uniqueMachineId": unique_machine_id,
        "snapshotInfo": [dict(entry) for entry in snapshots],
        "vmHealthInfo": {
            "vmHealthState": int(describe(health_status).health_state),
            "vmHealthStatusCode": int(health_status),
        },
    }
    return _redacted(
        [{"version": extension_version, "timestampUTC": f"/Date({timestamp_ms})/", "status": body}]
    )


def dumps_status_document(document: list) -> str:
    """JSON text of a document; Microsoft's date format escapes its slashes (\\/Date(..)\\/)."""
    text = json.dumps(document, separators=(",", ":"))
    text = re.sub(r'"/Date\((\d+)\)/"', r'"\\/Date(\1)\\/"', text)
    return scrub(text)


def local_status_document(blob_document: list, *, vm_type: str | None = None) -> list:
    """The local status file's variant of a blob document (docs/reference-behaviour.md §5.5).

    The same top-level shape with telemetryData, snapshotInfo and vmHealthInfo null, the blob
    document's JSON text as the one substatus, and an ISO timestamp (the guest agent parses
    it). On an ARM VM a terminal status is reported as success, as the reference does.
    """
    top = blob_document[0]
    body = dict(top["status"])
    match = _MS_DATE.match(top["timestampUTC"])
    seconds = int(match.group(1)) // 1000 if match else int(time.time())
    if vm_type and vm_type.lower() == ARM_VM_TYPE:
        body["status"] = "success"
    body.update(
        substatus=[
            {
                "code": "0",
                "name": dumps_status_document(blob_document),
                "status": "success",
                "formattedMessage": None,
            }
        ],
        telemetryData=None,
        snapshotInfo=None,
        vmHealthInfo=None,
    )
    timestamp = time.strftime(_ISO_FORMAT, time.gmtime(seconds))
    return _redacted([{"version": top["version"], "timestampUTC": timestamp, "status": body}])


def write_status_file(path: str, document: list) -> None:
    """Write the document atomically, mode 0600."""
    write_atomically(path, dumps_status_document(document).encode("utf-8"))


def _bad(message: str) -> VmSnapshotError:
    return VmSnapshotError(Status.error_parameter, f"Not a status document: {message}.")


def _require(mapping: Any, key: str, kind: Any, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise _bad(f"{where} has no {key!r}")
    value = mapping[key]
    if not isinstance(value, kind):
        raise _bad(f"{where}.{key} has the wrong type ({type(value).__name__})")
    return value


def parse_status_document(text: str) -> dict[str, Any]:
    """Check a status document (blob or local variant) and return its essentials.

    Keys: version, timestamp_ms (None for the local ISO form), status, code, task_id, message
    (the decoded formattedMessage: messageStr, snapshotConsistency, ...), consistency (name),
    snapshots, health_state, health_code, telemetry (dict), local (bool) and, for the local
    variant, blob (the parsed blob document nested in its substatus).
    """
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise _bad(f"invalid JSON ({exc})") from None
    if not isinstance(document, list) or len(document) != 1:
        raise _bad("the top level must be a JSON array with one element")
    top = document[0]
    _require(top, "version", str, "the document")
    stamp = _require(top, "timestampUTC", str, "the document")
    body = _require(top, "status", dict, "the document")
    missing = [key for key in _STATUS_KEYS if key not in body]
    if missing:
        raise _bad(f"status lacks {', '.join(missing)}")
    status = _require(body, "status", str, "status")
    code = _require(body, "code", str, "status")
    if not code.lstrip("-").isdigit():
        raise _bad(f"status.code {code!r} is not a number")
    formatted = _require(body, "formattedMessage", dict, "status")
    try:
        message = json.loads(_require(formatted, "message", str, "formattedMessage"))
    except ValueError:
        raise _bad("formattedMessage.message is not JSON") from None
    for key in ("messageStr", "snapshotConsistency", "jobMessage", "isSizeComputationFailed"):
        _require(message, key, object, "formattedMessage.message")
    names = {number: name for name, number in CONSISTENCY.items()}
    if message["snapshotConsistency"] not in names:
        raise _bad(f"unknown snapshotConsistency {message['snapshotConsistency']!r}")
    substatus = _require(body, "substatus", list, "status")
    local = body["snapshotInfo"] is None
    result: dict[str, Any] = {
        "version": top["version"],
        "timestamp_ms": int(_MS_DATE.match(stamp).group(1)) if _MS_DATE.match(stamp) else None,
        "status": status,
        "code": int(code),
        "task_id": body["taskId"],
        "message": message,
        "consistency": names[message["snapshotConsistency"]],
        "local": local,
    }
    if local:
        if len(substatus) != 1:
            raise _bad("a local status document has exactly one substatus")
        result["blob"] = parse_status_document(_require(substatus[0], "name", str, "substatus"))
        return result
    snapshots = _require(body, "snapshotInfo", list, "status")
    for index, entry in enumerate(snapshots):
        if not isinstance(entry, dict) or set(entry) != set(SNAPSHOT_INFO_KEYS):
            raise _bad(f"snapshotInfo[{index}] must have exactly the keys {SNAPSHOT_INFO_KEYS}")
    health = _require(body, "vmHealthInfo", dict, "status")
    telemetry = _require(body, "telemetryData", list, "status")
    if not all(isinstance(item, dict) and set(item) == {"Key", "Value"} for item in telemetry):
        raise _bad("telemetryData must be a list of {Key, Value} objects")
    result.update(
        snapshots=snapshots,
        health_state=_require(health, "vmHealthState", int, "vmHealthInfo"),
        health_code=_require(health, "vmHealthStatusCode", int, "vmHealthInfo"),
        telemetry={item["Key"]: item["Value"] for item in telemetry},
    )
    return result
