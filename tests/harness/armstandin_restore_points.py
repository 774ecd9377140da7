"""Restore-point routes for the Resource Manager stand-in (`armstandin.py`).

Azure itself is never reached. The routes follow the published specification
(`Azure/azure-rest-api-specs`, `specification/compute/resource-manager/Microsoft.Compute/ComputeRP`,
`restorePoint.json` and `examples/restorePointExamples/`: `RestorePointCollections_CreateOrUpdate`,
`_Get` (with `$expand=restorePoints`), `RestorePoints_Create` (long-running, 201 then
`Azure-AsyncOperation`), `RestorePoints_Get` (with `$expand=instanceView`), `RestorePoints_Delete`;
and `VirtualMachines_Get` for the VM's disks). Each included disk of a restore point is a real
Azurite snapshot of the page blob behind the disk, when the disk has one.

What Azure would achieve is set per VM by the test (`POST /_standin/restore-point-outcomes`):
`{"vm": <name>, "consistency": "ApplicationConsistent" | "FileSystemConsistent" |
"CrashConsistent", "fail": {"code": ..., "message": ...}, "seconds": <LRO duration>}`. The real
Azure decides this from what the VM's extension reported; the fleet tests plant that on the host.
`POST /_standin/vms` registers a VM: `{"name", "resource_group", "subscription", "location",
"disks": [disk IDs, OS disk first]}`.
"""

from __future__ import annotations

import contextlib
import re
import uuid

from harness.armstandin import (
    _SEGMENT,
    DEFAULT_LOCATION,
    RG_PATH,
    ArmStandin,
    Request,
    Response,
    iso,
    key,
    utcnow,
)

COMPUTE = rf"{RG_PATH}/providers/Microsoft\.Compute"
_VM_ID = re.compile(
    r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Compute/"
    r"virtualMachines/([^/]+)$",
    re.IGNORECASE,
)
LEVELS = ("ApplicationConsistent", "FileSystemConsistent", "CrashConsistent")


def register_routes(server: ArmStandin) -> None:
    server.store.extra.setdefault("vms", {})
    server.store.extra.setdefault("collections", {})
    server.store.extra.setdefault("outcomes", {})
    add = server.add_route
    add("GET", rf"{COMPUTE}/virtualMachines/{_SEGMENT}", _get_vm)
    add("PUT", rf"{COMPUTE}/restorePointCollections/{_SEGMENT}", _put_collection)
    add("GET", rf"{COMPUTE}/restorePointCollections/{_SEGMENT}", _get_collection)
    point = rf"{COMPUTE}/restorePointCollections/{_SEGMENT}/restorePoints/{_SEGMENT}"
    add("PUT", point, _put_point)
    add("GET", point, _get_point)
    add("DELETE", point, _delete_point)
    add("POST", r"/_standin/vms", _admin_vm)
    add("POST", r"/_standin/restore-point-outcomes", _admin_outcome)


def _vm_id(sub: str, rg: str, name: str) -> str:
    return f"{_rg_id(sub, rg)}/providers/Microsoft.Compute/virtualMachines/{name}"


def _rg_id(sub: str, rg: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}"


def _not_found(server: ArmStandin, kind: str, name: str, rg: str) -> Response:
    return server.arm_error(
        404,
        "ResourceNotFound",
        f"The Resource 'Microsoft.Compute/{kind}/{name}' under resource group '{rg}' "
        "was not found.",
    )


def _get_vm(server: ArmStandin, request: Request, match) -> Response:
    sub, rg, name = match.groups()
    with server.store.lock:
        vm = server.store.extra["vms"].get(key(sub, rg, name))
    if not vm:
        return _not_found(server, "virtualMachines", name, rg)
    return Response(200, vm["resource"])


def _vm_resource(sub: str, rg: str, name: str, location: str, disks: list[str]) -> dict:
    def managed(disk_id: str) -> dict:
        return {"id": disk_id, "storageAccountType": "Standard_LRS"}

    names = [disk_id.rsplit("/", 1)[-1] for disk_id in disks]
    return {
        "id": _vm_id(sub, rg, name),
        "name": name,
        "type": "Microsoft.Compute/virtualMachines",
        "location": location,
        "properties": {
            "vmId": str(uuid.uuid4()),
            "hardwareProfile": {"vmSize": "Standard_B2s"},
            "provisioningState": "Succeeded",
            "storageProfile": {
                "osDisk": {
                    "osType": "Linux",
                    "name": names[0],
                    "createOption": "FromImage",
                    "caching": "ReadWrite",
                    "managedDisk": managed(disks[0]),
                },
                "dataDisks": [
                    {
                        "lun": lun,
                        "name": names[lun + 1],
                        "createOption": "Attach",
                        "caching": "None",
                        "managedDisk": managed(disk_id),
                    }
                    for lun, disk_id in enumerate(disks[1:])
                ],
            },
        },
    }


def _collection_body(entry: dict, with_points: bool) -> dict:
    body = dict(entry["resource"])
    if with_points:
        body = {**body, "properties": dict(body["properties"])}
        body["properties"]["restorePoints"] = [p["resource"] for p in entry["points"].values()]
    return body


def _put_collection(server: ArmStandin, request: Request, match) -> Response:
    sub, rg, name = match.groups()
    if not server.resource_group_exists(sub, rg):
        return server.arm_error(
            404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found."
        )
    body = request.json()
    source = ((body.get("properties") or {}).get("source") or {}).get("id", "")
    location = body.get("location")
    if not location or not source:
        return server.arm_error(
            400, "InvalidParameter", "location and properties.source.id are required."
        )
    parsed = _VM_ID.match(source)
    with server.store.lock:
        vm = parsed and server.store.extra["vms"].get(key(*parsed.groups()))
        if not vm:
            return server.arm_error(404, "NotFound", f"The source VM {source} was not found.")
        if vm["resource"]["location"].lower() != location.lower():
            return server.arm_error(
                400, "InvalidParameter", "The collection must be in the location of its VM."
            )
        existing = server.store.extra["collections"].get(key(sub, rg, name))
        if existing:
            if existing["resource"]["properties"]["source"]["id"].lower() != source.lower():
                return server.arm_error(
                    409, "PropertyChangeNotAllowed", "Changing property 'source.id' is not allowed."
                )
            existing["resource"]["tags"] = body.get("tags", existing["resource"]["tags"])
            return Response(200, _collection_body(existing, False))
        resource = {
            "id": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute"
            f"/restorePointCollections/{name}",
            "name": name,
            "type": "Microsoft.Compute/restorePointCollections",
            "location": location,
            "tags": body.get("tags") or {},
            "properties": {
                "source": {"id": vm["resource"]["id"], "location": location},
                "restorePointCollectionId": str(uuid.uuid4()),
                "provisioningState": "Succeeded",
            },
        }
        entry = {"resource": resource, "points": {}, "vm": vm}
        server.store.extra["collections"][key(sub, rg, name)] = entry
    return Response(201, _collection_body(entry, False))


def _get_collection(server: ArmStandin, request: Request, match) -> Response:
    sub, rg, name = match.groups()
    with server.store.lock:
        entry = server.store.extra["collections"].get(key(sub, rg, name))
        if not entry:
            return _not_found(server, "restorePointCollections", name, rg)
        return Response(200, _collection_body(entry, request.arg("$expand") == "restorePoints"))


def _collection(server: ArmStandin, sub: str, rg: str, name: str) -> dict | None:
    return server.store.extra["collections"].get(key(sub, rg, name))


def _put_point(server: ArmStandin, request: Request, match) -> Response:
    sub, rg, coll, name = match.groups()
    body = request.json()
    properties = body.get("properties") or {}
    mode = properties.get("consistencyMode")
    if mode not in (None, "CrashConsistent"):
        return server.arm_error(
            400,
            "InvalidParameter",
            "Only CrashConsistent is accepted as consistencyMode input; "
            "omit it for application consistency.",
        )
    excluded = {(d.get("id") or "").lower() for d in properties.get("excludeDisks") or []}
    with server.store.lock:
        entry = _collection(server, sub, rg, coll)
        if not entry:
            return _not_found(server, "restorePointCollections", coll, rg)
        if name in entry["points"]:
            return server.arm_error(
                409,
                "OperationNotAllowed",
                "Updating properties of an existing restore point is not allowed.",
            )
        vm = entry["vm"]["resource"]
        outcome = dict(server.store.extra["outcomes"].get(vm["name"].lower()) or {})
    storage = vm["properties"]["storageProfile"]
    base = entry["resource"]["id"] + f"/restorePoints/{name}"
    disks, views = [], []
    for disk in [storage["osDisk"], *storage["dataDisks"]]:
        if disk["managedDisk"]["id"].lower() in excluded:
            continue
        rp_id = f"{base}/diskRestorePoints/{disk['name']}_{uuid.uuid4()}"
        backing = server.disk_for(disk["managedDisk"]["id"])
        if backing and not outcome.get("fail"):
            # The disk's point in time: a real snapshot of the blob behind it.
            container, blob = backing["blob"]
            with contextlib.suppress(Exception):
                server.blob_client(container, blob).create_snapshot()
        disks.append({**disk, "diskRestorePoint": {"id": rp_id}})
        views.append({"id": rp_id, "snapshotAccessState": "Available"})
    requested = "CrashConsistent" if mode else "ApplicationConsistent"
    achieved = outcome.get("consistency") or requested
    if requested == "CrashConsistent":
        achieved = "CrashConsistent"
    resource = {
        "id": base,
        "name": name,
        "type": "Microsoft.Compute/restorePointCollections/restorePoints",
        "properties": {
            "excludeDisks": properties.get("excludeDisks") or [],
            "sourceMetadata": {
                "vmId": vm["properties"]["vmId"],
                "hardwareProfile": vm["properties"]["hardwareProfile"],
                "storageProfile": {
                    "osDisk": disks[0] if disks and disks[0].get("osType") else None,
                    "dataDisks": [d for d in disks if "lun" in d],
                },
                "location": vm["location"],
            },
            "provisioningState": "Creating",
            "consistencyMode": requested,
            "timeCreated": iso(utcnow()),
        },
    }
    point = {"resource": resource, "views": views}
    with server.store.lock:
        entry["points"][name] = point

    def done() -> None:
        resource["properties"]["provisioningState"] = "Succeeded"
        resource["properties"]["consistencyMode"] = achieved
        for view in views:
            view["replicationStatus"] = {
                "status": {
                    "code": "ReplicationState/succeeded",
                    "level": "Info",
                    "displayStatus": "Succeeded",
                },
                "completionPercent": 100,
            }

    def failed(error: dict) -> None:
        resource["properties"]["provisioningState"] = "Failed"

    fault = getattr(request, "fault", None) or {}
    fail = outcome.get("fail")
    if fault.get("lro") == "fail":
        fail = {
            "code": fault.get("code", "InternalError"),
            "message": fault.get("message", "failed"),
        }
    headers = server.start_operation(
        sub,
        vm["location"] or DEFAULT_LOCATION,
        on_success=done,
        on_failure=failed,
        fail=fail,
        seconds=outcome.get("seconds"),
    )
    headers.pop("Location", None)
    # A GET of the restore point settles its operation too, as a rerun after a timeout reads it.
    point["operation"] = headers["Azure-AsyncOperation"].rsplit("/", 1)[-1].split("?")[0]
    return Response(201, resource, headers)


def _get_point(server: ArmStandin, request: Request, match) -> Response:
    sub, rg, coll, name = match.groups()
    with server.store.lock:
        entry = _collection(server, sub, rg, coll)
        point = entry and entry["points"].get(name)
        if not point:
            return _not_found(server, "restorePointCollections/restorePoints", name, rg)
        operation = server.store.operations.get(point.get("operation", ""))
        if operation:
            server.settle(operation)
        body = {**point["resource"], "properties": dict(point["resource"]["properties"])}
        if request.arg("$expand") == "instanceView":
            state = body["properties"]["provisioningState"]
            body["properties"]["instanceView"] = {
                "diskRestorePoints": [dict(v) for v in point["views"]],
                "statuses": [
                    {
                        "code": f"ProvisioningState/{state.lower()}",
                        "level": "Info" if state != "Failed" else "Error",
                        "displayStatus": state,
                    }
                ],
            }
    return Response(200, body)


def _delete_point(server: ArmStandin, request: Request, match) -> Response:
    sub, rg, coll, name = match.groups()
    with server.store.lock:
        entry = _collection(server, sub, rg, coll)
        point = entry and entry["points"].pop(name, None)
    if not point:
        return Response(204)
    headers = server.start_operation(sub, entry["resource"]["location"])
    return Response(202, None, headers)


def _admin_vm(server: ArmStandin, request: Request, match) -> Response:
    body = request.json()
    sub = body.get("subscription", "00000000-0000-0000-0000-000000000001")
    rg, name = body.get("resource_group", "rg-vm"), body["name"]
    location = body.get("location", DEFAULT_LOCATION)
    disks = list(body.get("disks") or [])
    if not disks:
        return server.arm_error(400, "InvalidParameter", "disks: at least the OS disk's ID")
    resource = _vm_resource(sub, rg, name, location, disks)
    with server.store.lock:
        server.store.resource_groups.setdefault(key(sub, rg), {"name": rg, "location": location})
        server.store.extra["vms"][key(sub, rg, name)] = {"resource": resource}
    return Response(201, resource)


def _admin_outcome(server: ArmStandin, request: Request, match) -> Response:
    body = request.json()
    consistency = body.get("consistency")
    if consistency is not None and consistency not in LEVELS:
        return server.arm_error(400, "InvalidParameter", f"consistency: one of {LEVELS}")
    with server.store.lock:
        server.store.extra["outcomes"][body["vm"].lower()] = {
            k: body[k] for k in ("consistency", "fail", "seconds") if body.get(k) is not None
        }
    return Response(200, {"vm": body["vm"]})


def add_vm(standin, name: str, disks: list[str], **options) -> str:
    """Register a VM with these managed disks (OS disk first) on a running stand-in; its ID."""
    return standin._admin("POST", "vms", {"name": name, "disks": disks, **options})["id"]


def set_outcome(standin, vm: str, **outcome) -> None:
    """What Azure achieves for the VM's next restore points (see the module docstring)."""
    standin._admin("POST", "restore-point-outcomes", {"vm": vm, **outcome})
