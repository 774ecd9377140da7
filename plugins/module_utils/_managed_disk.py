# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""Managed disks: incremental snapshots through Azure Resource Manager, driven like page blobs.

`ManagedDiskEndpoint` has the shape the snapshot run uses for a `BlobEndpoint`: `open()` before
the pre-script (the token, the connection, a GET of the disk for its location), `create_snapshot()`
inside the frozen window, `abort()`, `close()`; plus `follow_up()` after the thaw.

When to thaw. Microsoft's documentation of incremental snapshots
(https://learn.microsoft.com/azure/virtual-machines/disks-incremental-snapshots) says
"Incremental snapshots are point-in-time backups for managed disks that, when taken, consist
only of the changes since the last snapshot" and "Both full snapshots and incremental snapshots
can be used as soon as they're taken"; the REST reference of `Snapshots - Create Or Update`
describes `completionPercent` as the "Percentage complete for the background copy". So the
point in time is fixed when Resource Manager accepts the PUT (201/202, or 200): the freeze holds
exactly until that answer. The long-running operation's final state and `completionPercent`
(the background copy) are followed after the thaw, and a failure found then fails that disk.
"""

from __future__ import annotations

import dataclasses
import re
import string
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import quote, urlsplit

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._arm_rest import (
    DEFAULT_ARM_ENDPOINT,
    DEFAULT_POLL_SECONDS,
    DISK_API_VERSION,
    ArmConnection,
    ArmResponse,
    describe,
    failure_status_for,
    short,
    ssl_context_for,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._imds import (
    DEFAULT_IMDS_ENDPOINT,
    TokenSource,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

DISK_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.Compute/disks/(?P<name>[^/]+)$",
    re.IGNORECASE,
)
SNAPSHOT_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.Compute/snapshots/(?P<name>[^/]+)$",
    re.IGNORECASE,
)
# Snapshot names: a-z, A-Z, 0-9, _ and -, at most 80 (Snapshots - Create Or Update).
SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
RESOURCE_GROUP = re.compile(r"^[-\w._()]{1,90}$")
DEFAULT_NAME_PATTERN = "{disk}-{time}"
_NAME_FIELDS = ("disk", "time", "task_id")
# A name pattern longer than this cannot give a name of at most 80 characters anyway.
MAX_NAME_PATTERN = 200
MAX_TAGS = 50
# Azure's limits on tags: a name of at most 512 characters without < > % & \ ? /, a value of
# at most 256; neither may hold a control character (a NUL would end up in the request).
_TAG_NAME = re.compile(r"[^<>%&\\?/\x00-\x1f\x7f]{1,512}")
_TAG_VALUE = re.compile(r"[^\x00-\x1f\x7f]{0,256}")
# Not in a resource ID: what would end the request target's path or smuggle a control.
_NOT_IN_AN_ID = re.compile(r"[\x00-\x20\x7f?#%]")
TERMINAL = ("Succeeded", "Failed", "Canceled")


def _bad(message: str) -> VmSnapshotError:
    return VmSnapshotError(Status.error_parameter, message)


def _shown(value: str) -> str:
    """A value for an error message: quoted, at most 100 characters of it."""
    return repr(value) if len(value) <= 100 else f"{value[:100]!r}… ({len(value)} characters)"


def _name_from(pattern: str, values: dict[str, str]) -> str | None:
    """`pattern` with its fields filled, or None when it uses anything but plain {disk},
    {time}, {task_id}: str.format() would follow {disk.__class__} or {disk[0]}, and a width
    such as {disk:>99999999} builds a 100 MB string."""
    if len(pattern) > MAX_NAME_PATTERN:
        return None
    try:
        parts = list(string.Formatter().parse(pattern))
    except ValueError:
        return None
    name = []
    for literal, field_name, spec, conversion in parts:
        if field_name is not None and (field_name not in _NAME_FIELDS or spec or conversion):
            return None
        name.append(literal + (values[field_name] if field_name is not None else ""))
    return "".join(name)


@dataclass(frozen=True)
class ManagedDiskTarget:
    """One managed disk and where its snapshot goes (names resolved when the run starts)."""

    disk_id: str
    snapshot_resource_group: str
    snapshot_name: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def subscription(self) -> str:
        return DISK_ID.match(self.disk_id).group("sub")

    @property
    def snapshot_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.snapshot_resource_group}"
            f"/providers/Microsoft.Compute/snapshots/{self.snapshot_name}"
        )


@dataclass(frozen=True)
class ArmSettings:
    endpoint: str = DEFAULT_ARM_ENDPOINT
    imds_endpoint: str = DEFAULT_IMDS_ENDPOINT
    ca_path: str | None = None
    tokens: TokenSource | None = None


def targets_from_params(params: dict, *, now: datetime | None = None) -> list[ManagedDiskTarget]:
    """The `managed_disks` option, checked; `{disk}`, `{time}`, `{task_id}` in a name resolved."""
    now = now or datetime.now(timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    task_id = params.get("task_id") or stamp
    targets, names = [], set()
    for index, entry in enumerate(params.get("managed_disks") or []):
        what = f"managed_disks[{index}]"
        match = DISK_ID.match(str(entry.get("id") or ""))
        if not match or _NOT_IN_AN_ID.search(match.group(0)):
            raise _bad(
                f"{what}.id must be a managed disk's resource ID, /subscriptions/<id>/"
                "resourceGroups/<group>/providers/Microsoft.Compute/disks/<name>."
            )
        group = entry.get("snapshot_resource_group") or match.group("rg")
        if not RESOURCE_GROUP.fullmatch(group) or group.endswith("."):
            raise _bad(
                f"{what}.snapshot_resource_group {_shown(group)} is not a resource group name."
            )
        pattern = entry.get("snapshot_name") or DEFAULT_NAME_PATTERN
        fields = {"disk": match.group("name"), "time": stamp, "task_id": task_id}
        name = _name_from(pattern, fields)
        if name is None:
            raise _bad(
                f"{what}.snapshot_name {_shown(pattern)} may use only {{disk}}, {{time}} and "
                "{task_id}, without a format or conversion."
            )
        if not SNAPSHOT_NAME.fullmatch(name):
            raise _bad(
                f"{what}.snapshot_name gives {_shown(name)}: a snapshot name has 1-80 letters, "
                "digits, '_' or '-'."
            )
        if (group.lower(), name.lower()) in names:
            raise _bad(f"{what}: two disks would get the snapshot name {name!r} in {group}.")
        names.add((group.lower(), name.lower()))
        tags = _tags(entry.get("tags") or {}, what)
        targets.append(ManagedDiskTarget(match.group(0), group, name, tags))
    return targets


def _tags(given: dict, what: str) -> dict[str, str]:
    """Tags as Azure takes them: text names and scalar values, within Azure's limits."""
    if len(given) > MAX_TAGS - 4:
        raise _bad(f"{what}.tags: at most {MAX_TAGS - 4} tags (the run adds its own).")
    tags = {}
    for name, value in given.items():
        if isinstance(value, (dict, list, tuple, set)) or value is None:
            raise _bad(f"{what}.tags: the value of {_shown(str(name))} must be text or a number.")
        text = str(value)
        if (
            not isinstance(name, str)
            or not _TAG_NAME.fullmatch(name)
            or not _TAG_VALUE.fullmatch(text)
        ):
            raise _bad(
                f"{what}.tags: {_shown(str(name))} is not a valid tag (a name of 1-512 "
                "characters without < > % & \\ ? /, a value of at most 256, no control "
                "characters)."
            )
        tags[name] = text
    return tags


def settings_from_params(params: dict) -> ArmSettings:
    identity = params.get("managed_identity") or {}
    for option in ("arm_endpoint", "imds_endpoint"):
        parts = urlsplit(params.get(option) or "")
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
        ):
            raise _bad(
                f"{option} must be a URL such as https://host[:port], not {params.get(option)!r}."
            )
    if urlsplit(params["arm_endpoint"]).scheme != "https":
        raise _bad("arm_endpoint must be https: the bearer token is never sent in clear text.")
    given = [name for name in ("client_id", "object_id", "msi_res_id") if identity.get(name)]
    if len(given) > 1:
        raise _bad(f"managed_identity: give one of client_id, object_id, msi_res_id, not {given}.")
    return ArmSettings(
        endpoint=params["arm_endpoint"].rstrip("/"),
        imds_endpoint=params["imds_endpoint"].rstrip("/"),
        ca_path=params.get("ca_path"),
        tokens=TokenSource(
            access_token=params.get("access_token"),
            imds_endpoint=params["imds_endpoint"].rstrip("/"),
            client_id=identity.get("client_id"),
            object_id=identity.get("object_id"),
            msi_res_id=identity.get("msi_res_id"),
        ),
    )


@dataclass(frozen=True)
class ManagedSnapshotResult:
    """One managed disk's snapshot outcome; `error` is short and scrubbed.

    The same interface as `_blob_rest.SnapshotResult` (`ok`, `status`, `as_dict()`,
    `snapshot_info()`), so `snapshot_status_for` and the status document take either.
    """

    disk_id: str
    snapshot_id: str | None
    ok: bool
    http_status: int | None
    error: str | None
    status: Status
    provisioning_state: str | None = None
    completion_percent: float | None = None

    @classmethod
    def failure(cls, disk_id: str, exc: VmSnapshotError) -> ManagedSnapshotResult:
        return cls(disk_id, None, False, None, short(exc.message), exc.status)

    @property
    def blob_url(self) -> str:  # what the run logs for a disk
        return self.disk_id

    def as_dict(self) -> dict:
        return {
            "disk_id": self.disk_id,
            "snapshot_id": self.snapshot_id,
            "ok": self.ok,
            "http_status": self.http_status,
            "error": self.error,
            "status_code": int(self.status),
            "status_name": self.status.name,
            "provisioning_state": self.provisioning_state,
            "completion_percent": self.completion_percent,
        }

    def snapshot_info(self) -> dict:
        """The reference's per-disk `snapshotInfo` entry: resource IDs in place of blob URIs."""
        return {
            "isSuccessful": self.ok,
            "snapshotUri": self.snapshot_id,
            "errorMessage": self.error or "",
            "blobUri": self.disk_id,
            "directDriveSnapshotIdentifier": None,
        }


@dataclass(frozen=True)
class _Named:
    """What the run reads as `endpoint.sas`: a name to log (never a secret here)."""

    blob_url: str

    @property
    def redacted(self) -> str:
        return self.blob_url


class ManagedDiskEndpoint:
    """One managed disk over one persistent connection to Resource Manager."""

    def __init__(self, target: ManagedDiskTarget, settings: ArmSettings, *, timeout: float) -> None:
        self.target = target
        self.settings = settings
        self.timeout = timeout
        self.sas = _Named(target.disk_id)
        self.location: str | None = None
        self.result: ManagedSnapshotResult | None = None
        self._operation_url: str | None = None
        self._conn = ArmConnection(
            settings.endpoint, timeout=timeout, ssl_context=ssl_context_for(settings.ca_path)
        )

    def __repr__(self) -> str:
        return f"ManagedDiskEndpoint({self.target.disk_id!r})"

    def _token(self, deadline: float | None) -> str:
        return self.settings.tokens.token(timeout=self.timeout, deadline=deadline)

    def open(self, *, deadline: float | None = None) -> dict:
        """Token, connection and a GET of the disk (its location); raise VmSnapshotError."""
        token = self._token(deadline)
        disk = self._checked("GET", self.target.disk_id, token, None, deadline, "read the disk")
        location = disk.get("location")
        self.location = location if isinstance(location, str) else None
        if not self.location:
            raise VmSnapshotError(
                Status.error_http_failure, f"The disk {self.target.disk_id} has no location."
            )
        return disk

    def create_snapshot(
        self, metadata: dict[str, str], *, deadline: float | None = None
    ) -> ManagedSnapshotResult:
        """PUT the incremental snapshot; returns when Resource Manager accepted it (the point in
        time) or refused it. Never raises: failures are results."""
        target = self.target
        body = {
            "location": self.location,
            "tags": {**target.tags, **metadata},
            "properties": {
                "creationData": {"createOption": "Copy", "sourceResourceId": target.disk_id},
                "incremental": True,
            },
        }
        try:
            token = self._token(deadline)
            response = self._conn.request(
                "PUT", _target(target.snapshot_id), token=token, body=body, deadline=deadline
            )
        except VmSnapshotError as exc:
            self.result = ManagedSnapshotResult.failure(target.disk_id, exc)
            return self.result
        except Exception as exc:  # while frozen, every failure is this disk's result
            self.result = ManagedSnapshotResult(
                target.disk_id,
                None,
                False,
                None,
                f"no response: {describe(exc)}",
                Status.error_http_failure,
            )
            return self.result
        if response.ok:
            self._operation_url = response.headers.get("azure-asyncoperation") or (
                response.headers.get("location")
            )
            state = _state(_properties_of(response).get("provisioningState"))
            self.result = ManagedSnapshotResult(
                target.disk_id,
                target.snapshot_id,
                True,
                response.status,
                None,
                Status.success,
                state,
            )
        else:
            self.result = ManagedSnapshotResult(
                target.disk_id,
                None,
                False,
                response.status,
                response.error_text(),
                failure_status_for(response),
            )
        return self.result

    def follow_up(self, *, deadline: float) -> ManagedSnapshotResult | None:
        """After the thaw: the operation's final state, then the snapshot's completionPercent.

        An operation that failed fails the disk (15, or 173 when throttled); one still running
        at the deadline stays a success (Azure took the snapshot; the copy goes on).
        """
        result = self.result
        if result is None or not result.ok:
            return result
        state, error = result.provisioning_state, None
        try:
            token = self._token(deadline)
            url = self._operation_url
            while url and self._conn.same_origin(url) and time.monotonic() < deadline:
                answer = self._conn.request("GET", _target(url), token=token, deadline=deadline)
                status = answer.json().get("status") if answer.ok else None
                if status in TERMINAL:
                    state = status
                    if status != "Succeeded":
                        error = answer
                    break
                wait = answer.retry_after()
                wait = DEFAULT_POLL_SECONDS if wait is None else min(wait, DEFAULT_POLL_SECONDS)
                if time.monotonic() + wait >= deadline:
                    break
                time.sleep(wait)
            snapshot = self._conn.request(
                "GET", _target(self.target.snapshot_id), token=token, deadline=deadline
            )
        except Exception as exc:  # after the thaw: the snapshot stands, we could not look
            self.result = _replace(result, error=f"not followed: {describe(exc)}")
            return self.result
        properties = _properties_of(snapshot) if snapshot.ok else {}
        percent = _percent(properties.get("completionPercent"))
        state = _state(properties.get("provisioningState")) or state
        if error is not None or state in ("Failed", "Canceled"):
            message, status = _operation_error(error, state)
            self.result = ManagedSnapshotResult(
                result.disk_id,
                result.snapshot_id,
                False,
                result.http_status,
                message,
                status,
                state,
                percent,
            )
        else:
            self.result = _replace(result, provisioning_state=state, completion_percent=percent)
        return self.result

    def abort(self) -> None:
        self._conn.abort()

    def close(self) -> None:
        self._conn.close()

    def _checked(self, method, resource_id, token, body, deadline, doing: str) -> dict:
        try:
            response = self._conn.request(
                method, _target(resource_id), token=token, body=body, deadline=deadline
            )
        except Exception as exc:
            raise VmSnapshotError(
                Status.error_http_failure,
                f"Could not {doing} {resource_id} at {self._conn.origin}: {describe(exc)}.",
            ) from None
        if not response.ok:
            raise VmSnapshotError(
                failure_status_for(response),
                f"Could not {doing} {resource_id}: {response.error_text()}.",
            )
        return response.json()


def _target(resource_or_url: str) -> str:
    """The request target: a resource ID with the API version, or an operation URL's path."""
    if resource_or_url.startswith("/"):
        return f"{quote(resource_or_url, safe='/')}?api-version={DISK_API_VERSION}"
    parts = urlsplit(resource_or_url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def _properties_of(response: ArmResponse) -> dict:
    """The answer's `properties`, or {} when it is missing or not an object."""
    properties = response.json().get("properties")
    return properties if isinstance(properties, dict) else {}


def _state(value: object) -> str | None:
    """A provisioning state as Resource Manager spells one (a short word), else None: the
    answer goes into the result and both status documents."""
    return value if isinstance(value, str) and re.fullmatch(r"[A-Za-z]{1,40}", value) else None


def _percent(value: object) -> float | None:
    """completionPercent when it is a number from 0 to 100 (not NaN, which is not JSON)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 <= value <= 100 else None


def _replace(result: ManagedSnapshotResult, **changes) -> ManagedSnapshotResult:
    values = {**result.__dict__, **changes}
    return ManagedSnapshotResult(**values)


def _operation_error(answer: ArmResponse | None, state: str | None) -> tuple:
    error = answer.json().get("error") if answer is not None else None
    code = str(error.get("code", "")) if isinstance(error, dict) else ""
    text = str(error.get("message", "")) if isinstance(error, dict) else ""
    message = short(f"the snapshot operation ended {state}: {code}: {text}".rstrip(": "))
    throttled = code in ("TooManyRequests", "OperationThrottled")
    return message, Status.FailedRetryableSnapshotRateExceeded if throttled else (
        Status.error_http_failure
    )


# The module options every managed-disk module shares (documented in doc_fragments/azure_arm).
ARM_ARGUMENT_SPEC = dict(
    arm_endpoint=dict(type="str", default=DEFAULT_ARM_ENDPOINT),
    imds_endpoint=dict(type="str", default=DEFAULT_IMDS_ENDPOINT),
    access_token=dict(type="str", no_log=True),
    managed_identity=dict(
        type="dict",
        options=dict(
            client_id=dict(type="str"),
            object_id=dict(type="str"),
            msi_res_id=dict(type="str"),
        ),
    ),
    ca_path=dict(type="path"),
)


def with_managed_disks(request, params: dict):
    """The snapshot run's request with the `managed_disks` option and its connection added."""
    if not params.get("managed_disks"):
        return request
    # The settings first: they register the access token, which a disk's ID or name in an
    # error message could hold.
    settings = settings_from_params(params)
    return dataclasses.replace(request, managed_disks=targets_from_params(params), arm=settings)
