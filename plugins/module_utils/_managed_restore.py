# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""Restore a managed disk: a new disk created from a snapshot (`createOption: Copy`).

Idempotent: a disk of that name whose `creationData.sourceResourceId` is this snapshot is left
alone (changed=false); one made from anything else is an error, never overwritten.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._arm_rest import (
    DEFAULT_POLL_SECONDS,
    ArmConnection,
    ArmResponse,
    describe,
    failure_status_for,
    ssl_context_for,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._consistency import (
    STAMP_LEVEL_KEY,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._managed_disk import (
    RESOURCE_GROUP,
    SNAPSHOT_ID,
    TERMINAL,
    ArmSettings,
    _target,
    settings_from_params,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

# Disk names: letters, digits, '_', '-' and '.', at most 80 (Disks - Create Or Update).
DISK_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def _bad(message: str) -> VmSnapshotError:
    return VmSnapshotError(Status.error_parameter, message)


@dataclass(frozen=True)
class RestoreRequest:
    snapshot_id: str
    resource_group: str
    name: str
    settings: ArmSettings
    location: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    sku: str | None = None
    wait: bool = True
    timeout: float = 30.0
    wait_timeout: float = 3600.0

    @property
    def subscription(self) -> str:
        return SNAPSHOT_ID.match(self.snapshot_id).group("sub")

    @property
    def disk_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/disks/{self.name}"
        )


def request_from_params(params: dict) -> RestoreRequest:
    match = SNAPSHOT_ID.match(params.get("snapshot_id") or "")
    if not match:
        raise _bad(
            "snapshot_id must be a snapshot's resource ID, /subscriptions/<id>/resourceGroups/"
            "<group>/providers/Microsoft.Compute/snapshots/<name>."
        )
    name = params["name"]
    if not 1 <= len(name) <= 80 or not set(name) <= DISK_NAME_CHARS or name.endswith("."):
        raise _bad(f"name {name!r}: a disk name has 1-80 letters, digits, '_', '-' or '.'.")
    group = params.get("resource_group") or match.group("rg")
    if not RESOURCE_GROUP.fullmatch(group) or group.endswith("."):
        raise _bad(f"resource_group {group!r} is not a resource group name.")
    for option in ("timeout", "wait_timeout"):
        if not params[option] > 0:
            raise _bad(f"{option} is {params[option]}; it must be positive.")
    return RestoreRequest(
        snapshot_id=match.group(0),
        resource_group=group,
        name=name,
        settings=settings_from_params(params),
        location=params.get("location"),
        tags={str(k): str(v) for k, v in (params.get("tags") or {}).items()},
        sku=params.get("sku"),
        wait=params["wait"],
        timeout=params["timeout"],
        wait_timeout=params["wait_timeout"],
    )


class _Client:
    def __init__(self, request: RestoreRequest, deadline: float) -> None:
        settings = request.settings
        self.conn = ArmConnection(
            settings.endpoint,
            timeout=request.timeout,
            ssl_context=ssl_context_for(settings.ca_path),
        )
        self.deadline = deadline
        self.timeout = request.timeout
        self.token = settings.tokens.token(timeout=request.timeout, deadline=deadline)

    def call(self, method: str, target: str, body: dict | None = None) -> ArmResponse:
        try:
            return self.conn.request(
                method,
                _target(target),
                token=self.token,
                body=body,
                deadline=min(self.deadline, time.monotonic() + self.timeout),
            )
        except Exception as exc:
            raise VmSnapshotError(
                Status.error_http_failure,
                f"{method} {target} at {self.conn.origin} failed: {describe(exc)}.",
            ) from None

    def get(self, resource_id: str, what: str) -> dict | None:
        response = self.call("GET", resource_id)
        if response.status == 404:
            return None
        _raise_unless_ok(response, f"Could not read the {what} {resource_id}")
        return response.json()


def _raise_unless_ok(response: ArmResponse, doing: str) -> None:
    if not response.ok:
        raise VmSnapshotError(failure_status_for(response), f"{doing}: {response.error_text()}.")


def restore(request: RestoreRequest, *, check_mode: bool = False) -> dict:
    start = time.monotonic()
    client = _Client(request, start + request.wait_timeout)
    try:
        snapshot = client.get(request.snapshot_id, "snapshot")
        if snapshot is None:
            raise VmSnapshotError(
                Status.error_parameter, f"There is no snapshot {request.snapshot_id}."
            )
        location = request.location or snapshot.get("location")
        disk = client.get(request.disk_id, "disk")
        result = {
            "disk_id": request.disk_id,
            "snapshot_id": request.snapshot_id,
            "location": location,
            "consistency": (snapshot.get("tags") or {}).get(STAMP_LEVEL_KEY),
            "tags": (snapshot.get("tags") or {}),
        }
        if disk is not None:
            source = ((disk.get("properties") or {}).get("creationData") or {}).get(
                "sourceResourceId", ""
            )
            if source.lower() != request.snapshot_id.lower():
                raise VmSnapshotError(
                    Status.error_parameter,
                    f"The disk {request.disk_id} exists and was not made from this snapshot "
                    f"(its source is {source or 'none'}); choose another name.",
                )
            state = (disk.get("properties") or {}).get("provisioningState")
            return {**result, "changed": False, "action": "none", "provisioning_state": state}
        if check_mode:
            return {**result, "changed": True, "action": "create", "provisioning_state": None}
        body = {
            "location": location,
            "tags": {**result["tags"], **request.tags},
            "properties": {
                "creationData": {"createOption": "Copy", "sourceResourceId": request.snapshot_id}
            },
        }
        if request.sku:
            body["sku"] = {"name": request.sku}
        response = client.call("PUT", request.disk_id, body)
        _raise_unless_ok(response, f"Could not create the disk {request.disk_id}")
        state = (response.json().get("properties") or {}).get("provisioningState")
        operation = response.headers.get("azure-asyncoperation") or response.headers.get("location")
        if request.wait and operation and client.conn.same_origin(operation):
            state = _wait(client, operation, request.disk_id)
        result.update(
            changed=True,
            action="create",
            provisioning_state=state,
            duration_ms=int((time.monotonic() - start) * 1000),
        )
        return result
    finally:
        client.conn.close()


def _wait(client: _Client, operation_url: str, disk_id: str) -> str:
    while True:
        answer = client.call("GET", operation_url)
        status = answer.json().get("status") if answer.ok else None
        if status in TERMINAL:
            if status != "Succeeded":
                error = answer.json().get("error") or {}
                raise VmSnapshotError(
                    Status.error_http_failure,
                    f"Creating the disk {disk_id} ended {status}: "
                    f"{error.get('code', '')}: {error.get('message', '')}",
                )
            return status
        # A Retry-After beyond the poll interval (99999, a far date) still polls every 5 s.
        wait = min(answer.retry_after() or DEFAULT_POLL_SECONDS, 5.0)
        if time.monotonic() + wait >= client.deadline:
            raise VmSnapshotError(
                Status.error_http_failure,
                f"Creating the disk {disk_id} did not end within wait_timeout; it goes on in "
                "Azure.",
            )
        time.sleep(wait)
