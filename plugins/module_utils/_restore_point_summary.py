# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""What the restore_point playbook reports per VM: what Azure achieved and, when it is short of
application consistency, why, from what the VM itself says (the filter plugin ``fleet`` wraps
these). The fleet summary has the shape of the snapshot playbook's (``_fleet.snapshot_fleet``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._consistency import NONE
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._fleet import (
    int_or_none,
    meets,
    snapshot_fleet,
)

# prepost_info's codes that say the framework is fine: success and success_appconsistent.
_PREPOST_FINE = (0, 1)
# How many of the log's last lines the reason quotes.
LOG_LINES_IN_REASON = 3


def _mapping(value: Any) -> dict:
    return dict(value) if isinstance(value, Mapping) else {}


def _json(text: Any, opening: str) -> Any:
    """`text` parsed as JSON when it starts (after blanks) with `opening`, else None."""
    if not isinstance(text, str) or not text.lstrip().startswith(opening):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def extension_status(slurped: Any, path: str) -> dict:
    """The extension's local status file (as ansible.builtin.slurp returns it) reduced to its
    code, status, message and snapshot consistency; {} when there is none.

    The file keeps the whole status document as a JSON string in substatus[0].name
    (Azure/azure-linux-extensions, VMBackup/main/Utils/HandlerUtil.py, do_status_report and
    write_to_status_file), and its message as JSON in formattedMessage.message.
    """
    content = _mapping(slurped).get("content")
    if not content:
        return {}
    try:
        outer = json.loads(base64.b64decode(content))[0]["status"]
    except (binascii.Error, ValueError, LookupError, TypeError):
        return {
            "file": path,
            "code": None,
            "status": None,
            "message": "the status file is not the extension's JSON",
            "snapshot_consistency": None,
        }
    substatus = outer.get("substatus") or []
    nested = _json(_mapping(substatus[0]).get("name"), "[") if substatus else None
    inner = _mapping(_mapping(nested[0]).get("status")) if nested else _mapping(outer)
    text = _mapping(inner.get("formattedMessage")).get("message") or ""
    message = _mapping(_json(text, "{"))
    return {
        "file": path,
        "code": inner.get("code"),
        "status": inner.get("status"),
        "message": message.get("messageStr", text),
        "snapshot_consistency": message.get("snapshotConsistency"),
    }


def _reason(why: Mapping, prepost: Mapping, prepost_bad: bool) -> str:
    parts = []
    if "error" in why:
        parts.append(f"the VM could not be asked: {why['error']}")
    if prepost_bad:
        parts.append(
            f"prepost_info: {prepost.get('status_code')} ({prepost.get('status_name')}): "
            f"{prepost.get('message')}"
        )
    status = _mapping(why.get("status"))
    if status:
        parts.append(
            f"extension status {status.get('file')}: code {status.get('code')}: "
            f"{status.get('message')}"
        )
    log = _mapping(why.get("log"))
    if log:
        tail = list(log.get("tail") or [])[-LOG_LINES_IN_REASON:]
        parts.append(f"extension log {log.get('file')}: {' | '.join(tail)}")
    if not parts and why:
        parts.append(
            "the VM reports no failure (pre/post checks pass; no extension status or log found)"
        )
    return "; ".join(parts)


def host_result(
    run: Any,
    failure: Any,
    why: Any,
    required: str,
    check_mode: bool = False,
    host: str = "",
) -> dict:
    """One VM's record: the restore_point module's result (`run`), what the rescue kept when it
    failed (`failure`), and what the VM said (`why`: prepost_info, the extension's status and
    log, or the error that kept the VM from answering)."""
    run, failure, why = _mapping(run), _mapping(failure), _mapping(why)
    point = _mapping(run.get("restore_point"))
    prepost = _mapping(why.get("prepost_info"))
    prepost_code = int_or_none(prepost.get("status_code"))
    prepost_bad = "prepost_info" in why and (prepost_code or 0) not in _PREPOST_FINE
    status = _mapping(why.get("status"))
    status_code = int_or_none(status.get("code"))
    code = status_code if status_code is not None else (prepost_code if prepost_bad else None)
    name_fits = status_code is None or status_code == prepost_code
    consistency = point.get("consistency") or NONE
    reason = _reason(why, prepost, prepost_bad)
    message = failure.get("message") or reason or "Application-consistent."
    disks = [_mapping(disk) for disk in point.get("disks") or []]
    return {
        "host": host,
        "ran": not failure and bool(point),
        "failed": bool(failure),
        "check_mode": bool(check_mode),
        "changed": bool(run.get("changed")),
        "restore_point_id": point.get("id"),
        "consistency": consistency,
        "disks": disks,
        # Per disk, in the snapshot summary's terms: the disk and its disk restore point.
        "snapshots": [
            {
                "disk_id": disk.get("id"),
                "snapshot_id": disk.get("disk_restore_point_id"),
                "ok": not disk.get("excluded") and bool(disk.get("disk_restore_point_id")),
            }
            for disk in disks
        ],
        "deleted": list(run.get("deleted") or []),
        "azure_code": failure.get("azure_code") or None,
        "status_code": code,
        "status_name": prepost.get("status_name") if prepost_bad and name_fits else None,
        "message": message,
        "reason": message,
        "why": why,
        "required_consistency": required,
        "meets_policy": not failure and not check_mode and meets(consistency, required),
    }


def restore_point_fleet(results: Mapping[str, Any]) -> dict:
    """The snapshot playbook's fleet summary, plus per VM its restore point, Azure's error code
    and what the VM said."""
    fleet = snapshot_fleet(results)
    for host, row in fleet["hosts"].items():
        result = _mapping(results.get(host))
        row["restore_point_id"] = result.get("restore_point_id")
        row["azure_code"] = result.get("azure_code")
        row["why"] = _mapping(result.get("why"))
    return fleet
