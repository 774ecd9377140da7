# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""The snapshot module's options, checked and turned into a SnapshotRequest.

Either plain `disks` (a list, one comma-separated string or a JSON-string list) or the extension
settings as Azure sends them; explicit options win over what the settings carry. Every error
names the option and never shows a SAS signature.

Everything is refused here, before the run takes the host lock, that could only fail later:
strings that are not valid text (a lone surrogate that JSON can spell, in any option or in the
settings) and numbers outside their documented ranges (a huge ``snapshot_timeout`` overflows
date arithmetic after the snapshot).
"""

from __future__ import annotations

import math
import os
import unicodedata

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._fleet import (
    FleetInputError,
    uri_list,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._prepost_config import (
    unencodable,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._sas import parse_sas_uri
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._settings import (
    blob_metadata_entry,
    parse_extension_settings,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._snapshot_run import (
    SnapshotRequest,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

MAX_FREEZE_SECONDS_LIMIT = 600
MAX_SNAPSHOT_TIMEOUT = 600.0
# The task id goes into both status documents, the log and the result: a line of text.
MAX_TASK_ID_LENGTH = 256


def _bad(message: str) -> VmSnapshotError:
    return VmSnapshotError(Status.error_parameter, message)


def _disk_uris(value: object) -> list[str]:
    """`disks` in any shape a survey or a credential gives: a list, one comma-separated string
    or a JSON-string list (the option is raw, so that no_log masks the value as it came)."""
    try:
        return uri_list(value, "disks")
    except FleetInputError as exc:
        raise _bad(f"{exc}.") from None


def _metadata(value: dict) -> dict[str, str]:
    return dict(blob_metadata_entry(name, item, "backup_metadata") for name, item in value.items())


def _text_only(value: object, what: str) -> None:
    where = unencodable(value, what)
    if where is not None:
        raise _bad(
            f"{where} is not valid text (it holds a lone surrogate or another "
            "character that cannot be encoded)."
        )


def _one_line(text: str) -> bool:
    """Short, and no control character or line break (other Unicode is a valid task id)."""
    return len(text) <= MAX_TASK_ID_LENGTH and not any(
        unicodedata.category(char) == "Cc" or char in "\u2028\u2029" for char in text
    )


def request_from_params(params: dict) -> SnapshotRequest:
    for option, value in params.items():
        _text_only(value, f"option {option}")
    settings = None
    if params.get("settings") is not None or params.get("protected_settings") is not None:
        settings = parse_extension_settings(
            params.get("settings"), params.get("protected_settings")
        )
        disks = list(settings.disks)
    else:
        disks = [
            parse_sas_uri(uri, what=f"disks[{index}]")
            for index, uri in enumerate(_disk_uris(params["disks"]))
        ]
    if not disks and not params.get("managed_disks"):
        raise _bad("No disk to snapshot: give at least one blob SAS URI or managed disk.")

    max_freeze = params["max_freeze_seconds"]
    if not 1 <= max_freeze <= MAX_FREEZE_SECONDS_LIMIT:
        raise _bad(
            f"max_freeze_seconds is {max_freeze}; it must be between 1 and "
            f"{MAX_FREEZE_SECONDS_LIMIT}."
        )
    timeout = params["snapshot_timeout"]
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_SNAPSHOT_TIMEOUT):  # also NaN
        raise _bad(
            f"snapshot_timeout is {timeout}; it must be a number above 0 and at most "
            f"{MAX_SNAPSHOT_TIMEOUT:g}."
        )
    for option in ("state_dir", "log_dir"):
        # A relative path depends on the module's working directory: two runs would not share
        # the host lock.
        if not os.path.isabs(params[option]):
            raise _bad(f"{option} is {params[option]!r}; it must be an absolute path.")
        if "\x00" in params[option]:
            raise _bad(f"{option} holds a NUL character; no path can.")

    def blob(option: str, from_settings):
        uri = params.get(option)
        return parse_sas_uri(uri, what=option) if uri else from_settings

    metadata = dict(settings.backup_metadata) if settings else {}
    metadata.update(_metadata(params["backup_metadata"] or {}))
    if settings is not None:  # what the settings' base64 documents carried
        _text_only(
            [settings.task_id, settings.command_start_ticks, settings.vm_type, metadata],
            "a value in the settings",
        )
        _text_only([(sas.blob_url, sorted(sas.query.items())) for sas in disks], "a disk URI")
    task_id = params.get("task_id") or (settings.task_id if settings else None)
    if task_id is not None and not _one_line(task_id):
        raise _bad(
            f"task_id must be at most {MAX_TASK_ID_LENGTH} characters, without control "
            "characters or line breaks."
        )
    return SnapshotRequest(
        disks=disks,
        config_path=params["config_path"],
        host_config_path=params["host_config_path"],
        status_blob=blob("status_blob_uri", settings.status_blob if settings else None),
        logs_blob=blob("logs_blob_uri", settings.logs_blob if settings else None),
        task_id=task_id,
        command_start_ticks=settings.command_start_ticks if settings else None,
        backup_metadata=_metadata(metadata),
        freeze_mounts=params.get("freeze_mounts"),
        mounts_to_skip=params.get("mounts_to_skip") or [],
        max_freeze_seconds=max_freeze,
        snapshot_timeout=params["snapshot_timeout"],
        crash_fallback_allowed=bool(settings and settings.crash_fallback_allowed),
        expedite_freeze=bool(params.get("expedite_freeze", True)),
        vm_type=settings.vm_type if settings else None,
        log_dir=params["log_dir"],
        state_dir=params["state_dir"],
    )
