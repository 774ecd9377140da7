# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""Azure VM restore points through azure-mgmt-compute: create, wait, report, keep the newest N.

The REST resources are `Microsoft.Compute/restorePointCollections/{collection}` and its
`restorePoints/{name}` (Azure/azure-rest-api-specs, ComputeRP `restorePoint.json`: operations
`RestorePointCollections_CreateOrUpdate`, `RestorePoints_Create` (long-running),
`RestorePoints_Get` with `$expand=instanceView`, `RestorePoints_Delete`). Application
consistency is what Azure does when `consistencyMode` is left out; the VM's own VMSnapshot Linux
extension then runs the pre/post scripts. Azure answers with the `consistencyMode` it achieved.

The Azure SDK is imported lazily in `sdk()`, so this file imports without it and the module
can tell the user which library is missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from . import _redact

ARM_ENDPOINT = "https://management.azure.com"
AUTHORITY_HOST = "https://login.microsoftonline.com"
# Azure's names for the consistency levels, and ours.
LEVELS = {
    "ApplicationConsistent": "application",
    "FileSystemConsistent": "filesystem",
    "CrashConsistent": "crash",
}
POLL_SECONDS = 1.0
RETRY_TOTAL = 4


class RestorePointError(Exception):
    """A restore point could not be made or read; the message names what and why."""

    def __init__(self, message: str, **facts: Any) -> None:
        super().__init__(message)
        self.facts = facts


def sdk() -> tuple[Any, Any, Any]:
    """(azure.mgmt.compute, its models, azure.core.exceptions); ImportError when missing."""
    from azure.core import exceptions
    from azure.mgmt import compute
    from azure.mgmt.compute import models

    return compute, models, exceptions


@dataclass
class Credentials:
    """Service principal (what AWX's Azure Resource Manager credential injects) or a token."""

    subscription_id: str
    tenant: str | None = None
    client_id: str | None = None
    secret: str | None = None
    access_token: str | None = None
    authority_host: str = AUTHORITY_HOST


@dataclass
class Request:
    resource_group: str
    vm_name: str
    name: str
    collection: str
    consistency_mode: str = "application"
    exclude_disks: list[str] = field(default_factory=list)
    timeout: float = 600.0
    keep: int = 0
    arm_endpoint: str = ARM_ENDPOINT
    ca_path: str | None = None


class _StaticToken:
    """A credential over a token someone else obtained (an AWX credential, `az account`)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 3600)


def credential(creds: Credentials, ca_path: str | None) -> Any:
    for secret in (creds.secret, creds.access_token):
        _redact.register(secret)
    if creds.access_token:
        return _StaticToken(creds.access_token)
    if creds.tenant and creds.client_id and creds.secret:
        from azure.identity import ClientSecretCredential

        options: dict[str, Any] = {"authority": creds.authority_host}
        if creds.authority_host.rstrip("/") != AUTHORITY_HOST:
            # A sovereign cloud or a stand-in: no discovery call to Azure's public cloud.
            options["disable_instance_discovery"] = True
        if ca_path:
            options["connection_verify"] = ca_path
        return ClientSecretCredential(creds.tenant, creds.client_id, creds.secret, **options)
    raise RestorePointError(
        "No Azure credentials: give client_id, secret and tenant (AWX's Microsoft Azure Resource "
        "Manager credential sets AZURE_CLIENT_ID, AZURE_SECRET and AZURE_TENANT) or access_token."
    )


def client(creds: Credentials, request: Request) -> Any:
    compute = sdk()[0]
    if not request.arm_endpoint.startswith("https://"):
        raise RestorePointError(
            f"arm_endpoint {request.arm_endpoint!r} is not HTTPS; the bearer token must not go "
            "in clear text."
        )
    options: dict[str, Any] = {
        "base_url": request.arm_endpoint,
        "credential_scopes": [ARM_ENDPOINT + "/.default"],
        "retry_total": RETRY_TOTAL,
        "connection_timeout": 10,
        "read_timeout": 60,
    }
    if request.ca_path:
        options["connection_verify"] = request.ca_path
    return compute.ComputeManagementClient(
        credential(creds, request.ca_path), creds.subscription_id, **options
    )


def level(mode: str | None) -> str:
    # The SDK gives an enum member (a str subclass) or, for values it does not know, a str.
    return LEVELS.get(str(getattr(mode, "value", mode) or ""), "none")


def _vm_disks(vm: Any) -> list[dict]:
    profile = vm.storage_profile
    disks = []
    if profile and profile.os_disk and profile.os_disk.managed_disk:
        disks.append({"id": profile.os_disk.managed_disk.id, "name": profile.os_disk.name})
    for data in (profile.data_disks if profile else None) or []:
        if data.managed_disk:
            disks.append({"id": data.managed_disk.id, "name": data.name, "lun": data.lun})
    return disks


def _excluded_ids(request: Request, disks: list[dict]) -> list[str]:
    by_name = {d["name"].lower(): d["id"] for d in disks if d.get("name")}
    ids = {d["id"].lower(): d["id"] for d in disks}
    found = []
    for wanted in request.exclude_disks:
        match = ids.get(wanted.lower()) or by_name.get(wanted.lower())
        if not match:
            raise RestorePointError(
                f"exclude_disks names {wanted!r}, which is not a managed disk of VM "
                f"{request.vm_name!r} (its disks: {', '.join(sorted(by_name)) or 'none'})."
            )
        found.append(match)
    return found


def describe(point: Any, disks: list[dict], excluded: list[str]) -> dict:
    """The restore point as the module returns it, with each disk's consistency."""
    consistency = (
        level(point.consistency_mode) if point.provisioning_state == "Succeeded" else "none"
    )
    views = {}
    instance = point.instance_view
    for view in (instance.disk_restore_points if instance else None) or []:
        views[view.id.lower()] = view
    metadata = point.source_metadata
    sources = {}
    storage = metadata.storage_profile if metadata else None
    for disk in ([storage.os_disk] if storage and storage.os_disk else []) + list(
        (storage.data_disks if storage else None) or []
    ):
        if disk.managed_disk and disk.disk_restore_point:
            sources[disk.managed_disk.id.lower()] = disk.disk_restore_point.id
    excluded_lower = {e.lower() for e in excluded}
    per_disk = []
    for disk in disks:
        is_excluded = disk["id"].lower() in excluded_lower
        rp_id = sources.get(disk["id"].lower())
        view = views.get((rp_id or "").lower())
        status = view.replication_status.status if view and view.replication_status else None
        per_disk.append(
            {
                "id": disk["id"],
                "name": disk.get("name"),
                "excluded": is_excluded,
                # ARM reports one consistency per restore point: every included disk shares it.
                "consistency": "excluded" if is_excluded else (consistency if rp_id else "none"),
                "disk_restore_point_id": rp_id,
                "snapshot_access_state": view.snapshot_access_state if view else None,
                "replication_status": status.display_status if status else None,
            }
        )
    return {
        "id": point.id,
        "name": point.name,
        "provisioning_state": point.provisioning_state,
        "consistency_mode": str(
            getattr(point.consistency_mode, "value", point.consistency_mode) or ""
        )
        or None,
        "consistency": consistency,
        "time_created": point.time_created.isoformat() if point.time_created else None,
        "disks": per_disk,
    }


def _azure_error(exc: Any, doing: str) -> RestorePointError:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or getattr(exc, "reason", None) or type(exc).__name__
    message = getattr(error, "message", None) or str(exc).splitlines()[0]
    status = getattr(exc, "status_code", None)
    if status == 429:
        text = f"Azure throttled {doing} (429, {code}) beyond {RETRY_TOTAL} retries: {message}"
    else:
        text = f"Azure refused {doing}: {code}: {message}"
    return RestorePointError(_redact.scrub(text), azure_code=code, http_status=status)


def run(arm: Any, request: Request, *, check_mode: bool) -> dict:
    """Create the restore point (and its collection) unless it exists; keep the newest N."""
    models, exceptions = sdk()[1:]
    rg, coll = request.resource_group, request.collection
    result: dict[str, Any] = {
        "changed": False,
        "created_collection": False,
        "timed_out": False,
        "deleted": [],
        "requested_consistency": request.consistency_mode,
    }
    doing = f"reading VM {request.vm_name!r} in resource group {rg!r}"
    try:
        vm = arm.virtual_machines.get(rg, request.vm_name)
        disks = _vm_disks(vm)
        excluded = _excluded_ids(request, disks)
        doing = f"reading restore point collection {coll!r}"
        try:
            collection = arm.restore_point_collections.get(rg, coll)
        except exceptions.ResourceNotFoundError:
            collection = None
        if collection is not None:
            source = collection.source.id if collection.source else ""
            if (source or "").lower() != vm.id.lower():
                raise RestorePointError(
                    f"Restore point collection {coll!r} belongs to {source!r}, not to VM "
                    f"{request.vm_name!r}; give another collection name."
                )
        result["collection_id"] = collection.id if collection else None
        existing = None
        if collection is not None:
            doing = f"reading restore point {request.name!r}"
            try:
                existing = arm.restore_points.get(rg, coll, request.name, expand="instanceView")
            except exceptions.ResourceNotFoundError:
                existing = None
        if existing is not None:
            # A rerun with the same name: report what is there, change nothing.
            result["restore_point"] = describe(existing, disks, excluded)
            return result
        result["changed"] = True
        result["created_collection"] = collection is None
        if check_mode:
            result["restore_point"] = None
            return result
        if collection is None:
            doing = f"creating restore point collection {coll!r}"
            collection = arm.restore_point_collections.create_or_update(
                rg,
                coll,
                models.RestorePointCollection(
                    location=vm.location,
                    source=models.RestorePointCollectionSourceProperties(id=vm.id),
                ),
            )
            result["collection_id"] = collection.id
        body = models.RestorePoint(
            exclude_disks=[models.ApiEntityReference(id=d) for d in excluded] or None
        )
        if request.consistency_mode == "crash":
            # The only mode the API takes as input; leaving it out asks for application.
            body.consistency_mode = "CrashConsistent"
        doing = f"creating restore point {request.name!r} of VM {request.vm_name!r}"
        started = time.monotonic()
        poller = arm.restore_points.begin_create(
            rg, coll, request.name, body, polling_interval=POLL_SECONDS
        )
        poller.wait(max(0.0, request.timeout - (time.monotonic() - started)))
        result["wait_seconds"] = round(time.monotonic() - started, 3)
        if not poller.done():
            result["timed_out"] = True
            raise RestorePointError(
                f"Restore point {request.name!r} of VM {request.vm_name!r} was not done within "
                f"{request.timeout:g} s; Azure goes on with it. Rerun later with the same name "
                "to read its result.",
                **result,
            )
        doing = f"reading restore point {request.name!r}"
        point = arm.restore_points.get(rg, coll, request.name, expand="instanceView")
        result["restore_point"] = describe(point, disks, excluded)
        if point.provisioning_state == "Succeeded" and request.keep > 0:
            doing = f"applying retention to collection {coll!r}"
            result["deleted"] = _retain(arm, request, point.id)
        return result
    except RestorePointError as exc:
        exc.facts = {**result, **exc.facts}
        raise
    except exceptions.AzureError as exc:
        error = _azure_error(exc, doing)
        error.facts = {**result, **error.facts}
        raise error from None


def _retain(arm: Any, request: Request, newest_id: str) -> list[str]:
    """Delete all but the newest `keep` succeeded restore points (the new one is among them)."""
    collection = arm.restore_point_collections.get(
        request.resource_group, request.collection, expand="restorePoints"
    )
    points = [p for p in (collection.restore_points or []) if p.time_created]
    points.sort(key=lambda p: p.time_created, reverse=True)
    keep = {p.id.lower() for p in points[: request.keep]} | {newest_id.lower()}
    deleted = []
    for point in points:
        if point.id.lower() in keep:
            continue
        arm.restore_points.begin_delete(
            request.resource_group, request.collection, point.name, polling_interval=POLL_SECONDS
        ).result(timeout=request.timeout)
        deleted.append(point.id)
    return deleted
