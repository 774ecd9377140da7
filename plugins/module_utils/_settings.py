# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""Azure extension settings: the public `settings` and the decrypted `protected_settings`.

Read as the reference's ParameterParser reads them (docs/reference-behaviour.md §5.1): the disks
come from the protected `objectStr` (base64 JSON `{"blobSASUri": [...]}`), the backup metadata from
the public `objectStr`. Bad input is code 11 (error_parameter), no settings at all is 16; messages
never show a SAS signature (they name the setting, not its value).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._sas import (
    SasUri,
    parse_sas_uri,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

# The reference refuses to snapshot this long after the service issued the command (402).
COMMAND_MAX_AGE_MINUTES = 140
# .NET ticks: 100 ns units since 0001-01-01T00:00:00 UTC.
_TICKS_EPOCH = datetime(1, 1, 1, tzinfo=timezone.utc)
# Metadata becomes x-ms-meta-<name> headers: C# identifiers, printable ASCII values.
_METADATA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_VALUE = re.compile(r"^[\x20-\x7e]*$")


@dataclass(frozen=True)
class ExtensionSettings:
    task_id: str | None
    command_start_ticks: str | None
    disks: list[SasUri]  # in blobSASUri order: disk i is snapshotInfo[i]
    status_blob: SasUri | None
    logs_blob: SasUri | None
    backup_metadata: dict[str, str]
    crash_fallback_allowed: bool
    vm_type: str | None


def _bad(message: str) -> VmSnapshotError:
    return VmSnapshotError(Status.error_parameter, message)


def _json_error(exc: Exception) -> str:
    """Why json.loads() refused a text: also too deep (RecursionError) or too many digits."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at position {exc.pos}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


def _as_mapping(value: str | Mapping | None, what: str) -> dict[str, Any]:
    """Settings arrive as a mapping, or as its JSON text."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise _bad(f"{what} is not valid JSON ({_json_error(exc)}).") from None
    if not isinstance(value, Mapping):
        raise _bad(f"{what} must be a JSON object, not {type(value).__name__}.")
    return dict(value)


def _decode_object_str(value: Any, what: str) -> dict[str, Any]:
    """`objectStr`: base64 of a JSON object."""
    if not isinstance(value, str):
        raise _bad(f"{what} must be a base64 string, not {type(value).__name__}.")
    try:
        raw = base64.b64decode("".join(value.split()), validate=True)
        text = raw.decode("utf-8-sig")
    except (binascii.Error, ValueError):
        raise _bad(f"{what} is not valid base64 of UTF-8 text.") from None
    try:
        decoded = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _bad(f"{what} does not decode to JSON ({_json_error(exc)}).") from None
    if not isinstance(decoded, dict):
        raise _bad(f"{what} must decode to a JSON object, not {type(decoded).__name__}.")
    return decoded


def _backup_metadata(value: Any) -> dict[str, str]:
    what = "settings objectStr backupMetadata"
    if not isinstance(value, list):
        raise _bad(f"{what} must be a list of {{Key, Value}} objects.")
    metadata = {}
    for index, item in enumerate(value):
        if not isinstance(item, dict) or "Key" not in item or "Value" not in item:
            raise _bad(f"{what}[{index}] must be an object with Key and Value.")
        name, text = blob_metadata_entry(item["Key"], item["Value"], f"{what}[{index}]")
        metadata[name] = text
    return metadata


def blob_metadata_entry(name: object, value: object, where: str) -> tuple[str, str]:
    """One metadata entry as text, checked now: it becomes an x-ms-meta-<name> HTTP header, and
    a header the service refuses must not be found out while the filesystems are frozen."""
    if value is None or isinstance(value, (dict, list, tuple)):
        raise _bad(f"{where} value for {name!r} must be a string, a number or a boolean.")
    name, value = str(name), str(value)
    if not _METADATA_NAME.fullmatch(name):
        raise _bad(
            f"{where} key {name!r} is not a valid blob metadata name "
            "(letters, digits and underscores, not starting with a digit)."
        )
    if not _HEADER_VALUE.fullmatch(value):
        raise _bad(f"{where} value for {name!r} must be printable ASCII.")
    return name, value


def _flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _bad(f"{what} must be true or false.")


def _crash_fallback_allowed(custom: dict[str, Any], disk_count: int) -> bool:
    """Managed VM, allowed by the service, a service retry, exactly one disk.

    See docs/reference-behaviour.md §6.
    """
    retry = custom.get("backupRetryCount", 0)
    if isinstance(retry, bool) or not str(retry).isdigit():
        raise _bad("customSettings backupRetryCount must be a non-negative integer.")
    return (
        _flag(custom.get("isManagedVm", False), "customSettings isManagedVm")
        and _flag(
            custom.get("canTakeCrashConsistentSnapshot", False),
            "customSettings canTakeCrashConsistentSnapshot",
        )
        and int(retry) > 0
        and disk_count == 1
    )


def _disks(protected: dict[str, Any]) -> list[SasUri]:
    if "objectStr" not in protected:
        return []
    decoded = _decode_object_str(protected["objectStr"], "protected_settings objectStr")
    uris = decoded.get("blobSASUri")
    if not isinstance(uris, list):
        raise _bad("protected_settings objectStr must hold a blobSASUri list.")
    return [parse_sas_uri(uri, what=f"disk {index}") for index, uri in enumerate(uris)]


def _optional_blob(public, protected, key: str) -> SasUri | None:
    uri = public.get(key) or protected.get(key)
    return parse_sas_uri(uri, what=key) if uri else None


def parse_extension_settings(
    settings: str | Mapping | None, protected_settings: str | Mapping | None
) -> ExtensionSettings:
    """Parse and check both settings; raise VmSnapshotError (16, 11) on bad input."""
    public = _as_mapping(settings, "settings")
    protected = _as_mapping(protected_settings, "protected_settings")
    if not public and not protected:
        raise VmSnapshotError(
            Status.FailedHandlerGuestAgentCertificateNotFound,
            "Neither settings nor protected_settings were given (the reference reports this "
            "when it cannot decrypt them).",
        )
    requested = str(public.get("commandToExecute") or "").lower()
    if "install" in requested:
        command = "install"
    elif "snapshot" in requested:
        command = "snapshot"
    else:
        raise _bad(
            "settings commandToExecute must contain 'snapshot' or 'install' "
            "(the command is not correct)."
        )
    metadata: dict[str, str] = {}
    if command == "snapshot":
        if "objectStr" not in public:
            raise _bad("settings objectStr (with backupMetadata) is required for a snapshot.")
        decoded = _decode_object_str(public["objectStr"], "settings objectStr")
        if "backupMetadata" not in decoded:
            raise _bad("settings objectStr has no backupMetadata.")
        metadata = _backup_metadata(decoded["backupMetadata"])
    ticks = public.get("commandStartTimeUTCTicks")
    if ticks not in (None, ""):
        ticks = str(ticks)
        ticks_to_datetime(ticks)
    disks = _disks(protected)
    custom_value = public.get("customSettings") or protected.get("customSettings")
    custom = _as_mapping(custom_value, "customSettings")
    task_id = public.get("taskId")
    return ExtensionSettings(
        task_id=str(task_id) if task_id not in (None, "") else None,
        command_start_ticks=ticks or None,
        disks=disks,
        status_blob=_optional_blob(public, protected, "statusBlobUri"),
        logs_blob=_optional_blob(public, protected, "logsBlobUri"),
        backup_metadata=metadata,
        crash_fallback_allowed=_crash_fallback_allowed(custom, len(disks)),
        vm_type=public.get("vmType"),
    )


def ticks_to_datetime(ticks: int | str) -> datetime:
    """.NET ticks (100 ns since 0001-01-01 UTC) as an aware UTC datetime."""
    text = str(ticks).strip()
    if not text.isdigit():
        raise _bad(f"commandStartTimeUTCTicks {text[:40]!r} is not a number of .NET ticks.")
    try:
        return _TICKS_EPOCH + timedelta(microseconds=int(text) // 10)
    except OverflowError:
        raise _bad(f"commandStartTimeUTCTicks {text[:40]!r} is out of range.") from None


def command_too_late(
    ticks: int | str | None,
    now: datetime | None = None,
    max_minutes: int = COMMAND_MAX_AGE_MINUTES,
) -> bool:
    """The 402 guard: more than `max_minutes` since commandStartTimeUTCTicks (None: never)."""
    if ticks is None or ticks == "":
        return False
    now = now or datetime.now(timezone.utc)
    return now - ticks_to_datetime(ticks) > timedelta(minutes=max_minutes)
