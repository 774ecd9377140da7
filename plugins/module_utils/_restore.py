# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""Restore a disk from a blob snapshot: Copy Blob from the snapshot into a destination blob.

The destination is a new blob or an existing one (the snapshot's own base blob included: that
puts the disk back as it was) when `overwrite` allows it. A destination that already holds this
very snapshot, unmodified since the copy, is left alone (the idempotent rerun). The copy is
waited for; one that does not finish in time is aborted. Both URIs are SAS URIs: only their
redacted or SAS-free forms appear in results and messages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import quote

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._blob_rest import (
    BlobEndpoint,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._consistency import (
    STAMP_LEVEL_KEY,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._sas import (
    SasUri,
    parse_sas_uri,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

# A pending (asynchronous) copy is looked at after 0.5 s, then ever less often, at most every 5 s.
FIRST_POLL_SECONDS = 0.5
MAX_POLL_SECONDS = 5.0


@dataclass(frozen=True)
class RestoreRequest:
    source: SasUri
    snapshot: str
    destination: SasUri
    overwrite: bool
    force: bool
    timeout: float
    wait_timeout: float

    @property
    def snapshot_url(self) -> str:
        """The snapshot's URL without a SAS: what the destination records as its copy source."""
        return f"{self.source.blob_url}?snapshot={self.snapshot}"

    @property
    def source_url(self) -> str:
        """The full source SAS URL the service reads (a secret)."""
        return f"{self.source.blob_url}?{self.source.query_string}"


def request_from_params(params: dict) -> RestoreRequest:
    """Validate the module's options (see the module documentation for each)."""
    uri = params["snapshot_uri"]
    source = parse_sas_uri(uri, what="snapshot_uri")
    in_uri, given = source.query.get("snapshot"), params.get("snapshot")
    if in_uri and given and in_uri != given:
        raise VmSnapshotError(
            Status.error_parameter,
            f"The snapshot option ({given}) and the snapshot in snapshot_uri ({in_uri}) differ.",
        )
    if not (in_uri or given):
        raise VmSnapshotError(
            Status.error_parameter,
            f"snapshot_uri {source.redacted} names no snapshot: give its time in the snapshot "
            "option or as snapshot= in the URI.",
        )
    if not in_uri:
        source = parse_sas_uri(
            f"{uri.strip()}&snapshot={quote(given, safe='')}", what="snapshot_uri"
        )
    if source.permissions and "r" not in source.permissions:
        raise VmSnapshotError(
            Status.error_parameter,
            f"The SAS of snapshot_uri {source.redacted} cannot read (sp={source.permissions}): "
            "a copy source needs the read (r) permission.",
        )
    destination = parse_sas_uri(params["destination_uri"], what="destination_uri")
    if "snapshot" in destination.query:
        raise VmSnapshotError(
            Status.error_parameter,
            f"destination_uri {destination.redacted} names a snapshot; a restore writes a blob.",
        )
    permissions = destination.permissions
    if permissions and not ("r" in permissions and set(permissions) & set("cw")):
        raise VmSnapshotError(
            Status.error_parameter,
            f"The SAS of destination_uri {destination.redacted} has sp={permissions}: a restore "
            "needs read (r) and write (w) or, for a new blob, create (c).",
        )
    for name in ("timeout", "wait_timeout"):
        if params[name] <= 0:
            raise VmSnapshotError(
                Status.error_parameter, f"{name} must be positive, not {params[name]}."
            )
    return RestoreRequest(
        source=source,
        snapshot=source.query["snapshot"],
        destination=destination,
        overwrite=params["overwrite"],
        force=params["force"],
        timeout=float(params["timeout"]),
        wait_timeout=float(params["wait_timeout"]),
    )


def holds_snapshot(properties: dict, snapshot_url: str) -> bool:
    """The blob is a finished copy of `snapshot_url` and was not written since the copy."""
    if properties.get("copy_source") != snapshot_url or properties.get("copy_status") != "success":
        return False
    try:
        modified = parsedate_to_datetime(properties["last_modified"])
        copied = parsedate_to_datetime(properties["copy_completion_time"])
    except (KeyError, TypeError, ValueError):
        return False
    return modified <= copied


def plan(request: RestoreRequest, source: dict, destination: dict | None) -> str:
    """What to do: `create`, `overwrite` or `none` (already restored); raise when refused."""
    if destination is None:
        return "create"
    shown = request.destination.blob_url
    if destination["blob_type"] != source["blob_type"]:
        raise VmSnapshotError(
            Status.error_parameter,
            f"The destination {shown} is a {destination['blob_type']}; a snapshot of a "
            f"{source['blob_type']} can only be restored over a blob of that type.",
        )
    if holds_snapshot(destination, request.snapshot_url) and not request.force:
        return "none"
    if not request.overwrite:
        raise VmSnapshotError(
            Status.error_parameter,
            f"The destination {shown} exists and does not hold snapshot {request.snapshot}: set "
            "overwrite to replace its content.",
        )
    return "overwrite"


def wait_for_copy(endpoint: BlobEndpoint, copy_id: str, status: str, deadline: float) -> dict:
    """Follow a copy until it is no longer pending; abort it at the deadline. Raise on failure."""
    shown = endpoint.sas.blob_url
    properties: dict = {"copy_status": status, "copy_status_description": ""}
    interval = FIRST_POLL_SECONDS
    while properties["copy_status"] == "pending":
        left = deadline - time.monotonic()
        if left <= 0:
            endpoint.abort_copy(copy_id)
            raise VmSnapshotError(
                Status.error,
                f"The copy into {shown} did not finish within wait_timeout "
                f"(at {properties.get('copy_progress') or 'an unknown point'}); it was aborted.",
            )
        time.sleep(min(interval, left))
        interval = min(interval * 2, MAX_POLL_SECONDS)
        properties = endpoint.get_properties()
        if properties["copy_id"] != copy_id:
            raise VmSnapshotError(
                Status.error,
                f"Another copy ({properties['copy_id']}) replaced this restore's copy into "
                f"{shown}.",
            )
    if properties["copy_status"] != "success":
        raise VmSnapshotError(
            Status.error,
            f"The copy into {shown} ended {properties['copy_status']}: "
            f"{properties['copy_status_description'] or 'no reason given'}.",
        )
    return properties


def _read_source(request: RestoreRequest, endpoint: BlobEndpoint) -> dict:
    try:
        return endpoint.get_properties()
    except VmSnapshotError as exc:
        raise VmSnapshotError(
            exc.status, f"Snapshot {request.snapshot} cannot be read: {exc.message}"
        ) from None


def restore(request: RestoreRequest, *, check_mode: bool) -> dict:
    """Restore (or, in check mode, plan) one disk; the result's keys are the module's RETURN."""
    started = time.monotonic()
    source_endpoint = BlobEndpoint(request.source, timeout=request.timeout)
    destination_endpoint = BlobEndpoint(request.destination, timeout=request.timeout)
    try:
        source = _read_source(request, source_endpoint)
        before = destination_endpoint.find_properties()
        action = plan(request, source, before)
        copy_id = before["copy_id"] if action == "none" else None
        if action != "none" and not check_mode:
            copy = destination_endpoint.start_copy(request.source_url)
            copy_id = copy["copy_id"]
            deadline = started + request.wait_timeout
            wait_for_copy(destination_endpoint, copy_id, copy["copy_status"], deadline)
    finally:
        source_endpoint.close()
        destination_endpoint.close()
    metadata = source["metadata"]
    return {
        "changed": action != "none",
        "action": action,
        "snapshot": request.snapshot,
        "source": request.snapshot_url,
        "destination": request.destination.blob_url,
        "blob_type": source["blob_type"],
        "content_length": source["content_length"],
        "copy_id": copy_id,
        "metadata": metadata,
        # HTTP header names, so metadata names, are case-insensitive.
        "consistency": {name.lower(): value for name, value in metadata.items()}.get(
            STAMP_LEVEL_KEY.lower()
        ),
        "duration_ms": int((time.monotonic() - started) * 1000),
    }
