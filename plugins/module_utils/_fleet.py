# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""What the roles' summaries compute, as pure functions (the filter plugin ``fleet`` wraps them).

Written in Python rather than Jinja so that they behave alike on every ansible-core version
(before 2.19 a template's result is text, so a number could arrive as a string) and can be
unit-tested. Error messages name the variable, never the value: the value may be a SAS URI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._consistency import (
    APPLICATION,
    CRASH,
    FILESYSTEM,
    NONE,
    RANK,
)

LEVELS = tuple(RANK)
# What an entry of the snapshot module's managed_disks takes.
MANAGED_DISK_KEYS = ("id", "snapshot_resource_group", "snapshot_name", "tags")
# What a summary row keeps of each disk: a page blob's snapshot, or a managed disk's.
_SNAPSHOT_ROW_KEYS = ("blob_url", "snapshot", "snapshot_url", "disk_id", "snapshot_id", "ok")
# The last characters of a script's stderr that a summary row carries.
STDERR_TAIL_CHARS = 240
# What marks a script that exited 0 as worth a look; scripts that only narrate (the examples log
# each step to stderr) stay out of the summary.
_ERROR_WORDS = re.compile(r"error|fail|fatal|denied|cannot|can't|unable|refused", re.I)


class FleetInputError(ValueError):
    """An input of the wrong shape; the message names the variable, never its value."""


def rank(level: Any) -> int:
    if level not in RANK:
        raise FleetInputError(f"unknown consistency level; expected one of {', '.join(LEVELS)}")
    return RANK[level]


def meets(level: Any, required: Any) -> bool:
    """Whether a result of consistency `level` satisfies the policy `required`."""
    return rank(level if level is not None else NONE) >= rank(required)


def _survey_list(value: Any, name: str, what: str) -> Sequence:
    """A list as it came, or from one comma-separated string or a JSON-string list."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise FleetInputError(f"{name} starts with '[' but is not a JSON list") from None
        else:
            value = text.split(",")
    if isinstance(value, Mapping) or not isinstance(value, Sequence):
        raise FleetInputError(
            f"{name} must be a list of {what}, one comma-separated string or a JSON list, "
            f"not a {type(value).__name__}"
        )
    return value


def uri_list(value: Any, name: str = "snapshot_disks") -> list[str]:
    """A list of URIs from a list, one comma-separated string or a JSON-string list."""
    value = _survey_list(value, name, "URIs")
    uris = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise FleetInputError(f"{name}[{index}] must be a string, not a {type(item).__name__}")
        if item.strip():
            uris.append(item.strip())
    return uris


def managed_disk_list(
    value: Any,
    snapshot_resource_group: Any = "",
    snapshot_name: Any = "",
    tags: Any = None,
    name: str = "snapshot_managed_disks",
) -> list[dict]:
    """The snapshot module's `managed_disks` from resource IDs or dicts (a list, one
    comma-separated string or a JSON-string list); an entry without its own snapshot resource
    group or name pattern takes the role's, and the role's tags go under the entry's own."""
    if not isinstance(tags or {}, Mapping):
        raise FleetInputError("snapshot_managed_snapshot_tags must be a dict")
    disks = []
    for index, item in enumerate(_survey_list(value, name, "resource IDs or dicts")):
        where = f"{name}[{index}]"
        if isinstance(item, str) and not item.strip():
            continue  # "a,,b" or a trailing comma
        entry = {"id": item} if isinstance(item, str) else item
        if not isinstance(entry, Mapping) or not str(entry.get("id") or "").strip():
            raise FleetInputError(f"{where} must be a resource ID or a dict with an id")
        unknown = sorted(set(entry) - set(MANAGED_DISK_KEYS))
        if unknown:
            raise FleetInputError(
                f"{where} has unknown keys {', '.join(map(str, unknown))};"
                f" it takes {', '.join(MANAGED_DISK_KEYS)}"
            )
        if not isinstance(entry.get("tags") or {}, Mapping):
            raise FleetInputError(f"{where}.tags must be a dict")
        disk = {"id": str(entry["id"]).strip()}
        group = entry.get("snapshot_resource_group") or snapshot_resource_group
        pattern = entry.get("snapshot_name") or snapshot_name
        merged = {**(tags or {}), **(entry.get("tags") or {})}
        if group:
            disk["snapshot_resource_group"] = str(group)
        if pattern:
            disk["snapshot_name"] = str(pattern)
        if merged:
            disk["tags"] = merged
        disks.append(disk)
    return disks


def settings_dict(value: Any, name: str = "snapshot_protected_settings") -> dict:
    """A dict from a dict or a JSON-string object; empty for nothing."""
    if value is None:
        return {}
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except ValueError:
            raise FleetInputError(f"{name} is a string but not a JSON object") from None
    if not isinstance(value, Mapping):
        raise FleetInputError(
            f"{name} must be a dict or a JSON object, not a {type(value).__name__}"
        )
    return dict(value)


def int_or_none(value: Any) -> int | None:
    if value is None or value == "" or value == "None":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float_or_none(value: Any) -> float | None:
    if value is None or value == "" or value == "None":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _script_notes(scripts: Mapping) -> list[dict]:
    """Every script that failed, timed out, or exited 0 with an error in its stderr (as
    Microsoft's MySQL sample does when its SQL fails), with the tail of that stderr."""
    notes = []
    for phase in ("recovered_post", "pre", "post"):
        result = scripts.get(phase) or {}
        for plugin in result.get("plugins") or []:
            script = (plugin or {}).get("script") or {}
            stderr = (script.get("stderr_tail") or "").strip()
            code = script.get("exit_code")
            if script and (code != 0 or script.get("timed_out") or _ERROR_WORDS.search(stderr)):
                notes.append(
                    {
                        "phase": phase,
                        "path": script.get("path"),
                        "exit_code": code,
                        "timed_out": bool(script.get("timed_out")),
                        "status_code": int_or_none((plugin or {}).get("status_code")),
                        "stderr_tail": stderr[-STDERR_TAIL_CHARS:],
                    }
                )
    return notes


def _snapshot_ids(snapshots: Sequence) -> list[dict]:
    """Per disk, for later jobs: a page blob's URL (no SAS), the snapshot time and the snapshot's
    URL; a managed disk's resource ID and its snapshot's."""
    ids = []
    for entry in snapshots or []:
        if "disk_id" in entry:
            ids.append({key: entry.get(key) for key in ("disk_id", "snapshot_id")})
        else:
            blob_url = entry.get("blob_url")
            stamp = entry.get("snapshot")
            ids.append(
                {
                    "blob_url": blob_url,
                    "snapshot": stamp,
                    "snapshot_url": f"{blob_url}?snapshot={stamp}" if blob_url and stamp else None,
                }
            )
        ids[-1].update(ok=bool(entry.get("ok")), error=entry.get("error"))
    return ids


def host_result(
    run: Any,
    failure: Any,
    required: str,
    check_mode: bool = False,
    host: str = "",
) -> dict:
    """One host's record from the module's result (`run`) or the rescued failure."""
    failure = dict(failure or {})
    run = dict(run or {}) if isinstance(run, Mapping) else {}
    ran = not failure and bool(run) and not run.get("skipped", False)
    out = run if ran else {}
    snapshots = _snapshot_ids(out.get("snapshots") or [])
    consistency = out.get("consistency") or NONE
    disk_errors = [
        f"disk {i}: {s['error']}" for i, s in enumerate(snapshots) if not s["ok"] and s["error"]
    ]
    message = out.get("message") or failure.get("message") or "The snapshot did not run."
    timings = dict(out.get("timings") or {})
    return {
        "host": host,
        "ran": ran,
        "failed": bool(failure),
        "check_mode": bool(check_mode),
        "changed": ran and bool(out.get("changed")),
        "consistency": consistency,
        "status_code": int_or_none(out.get("status_code", failure.get("status_code"))),
        "status_name": out.get("status_name") or failure.get("status_name") or None,
        "message": message,
        "reason": "; ".join([message, *disk_errors]),
        "snapshots": snapshots,
        "snapshots_taken": sum(1 for s in snapshots if s["ok"]),
        "frozen_mounts": list(out.get("frozen_mounts") or []),
        "frozen_window_ms": _float_or_none(timings.get("frozen_window_ms")),
        "thaw_forced": bool(out.get("thaw_forced")),
        "timings": timings,
        "scripts": dict(out.get("scripts") or {}),
        "script_notes": _script_notes(out.get("scripts") or {}),
        "status_file": out.get("status_file"),
        "required_consistency": required,
        "meets_policy": not failure and meets(consistency, required),
    }


def _outcome(result: Mapping) -> str:
    if not result:
        return "no result"
    if result.get("failed"):
        return "failed"
    if not result.get("ran"):
        return "check mode" if result.get("check_mode") else "not run"
    if result.get("meets_policy"):
        return "ok"
    return f"below {result.get('required_consistency')}"


def snapshot_fleet(results: Mapping[str, Any]) -> dict:
    """The fleet summary from every host's `snapshot_result` (empty for a host without one)."""
    hosts = {}
    for host, result in results.items():
        result = result if isinstance(result, Mapping) else {}
        snapshots = list(result.get("snapshots") or [])
        hosts[host] = {
            "consistency": result.get("consistency") or NONE,
            "status_code": int_or_none(result.get("status_code")),
            "status_name": result.get("status_name") or None,
            "message": result.get("message") or "No result: unreachable, or not run yet.",
            "reason": result.get("reason")
            or result.get("message")
            or "No result: unreachable, or not run yet.",
            "frozen_window_ms": _float_or_none(result.get("frozen_window_ms")),
            "snapshots_taken": sum(1 for s in snapshots if s.get("ok")),
            "snapshots_total": len(snapshots),
            "snapshots": [
                {key: value for key, value in s.items() if key in _SNAPSHOT_ROW_KEYS}
                for s in snapshots
            ],
            "script_notes": list(result.get("script_notes") or []),
            "thaw_forced": bool(result.get("thaw_forced")),
            "check_mode": bool(result.get("check_mode")),
            "outcome": _outcome(result),
        }
    levels = [row["consistency"] for row in hosts.values()]
    return {
        "hosts": hosts,
        "total": len(hosts),
        "ok": sum(1 for row in hosts.values() if row["outcome"] == "ok"),
        "consistency": {level: levels.count(level) for level in reversed(LEVELS)},
    }


def _dash(value: Any) -> Any:
    return "-" if value is None else value


def snapshot_fleet_lines(fleet: Mapping) -> list[str]:
    row_format = "%-28s %-12s %5s %-38s %9s %9s  %s"
    lines = [
        row_format % ("HOST", "CONSISTENCY", "CODE", "STATUS", "FROZEN_MS", "SNAPSHOTS", "OUTCOME")
    ]
    for host, row in fleet.get("hosts", {}).items():
        window = _float_or_none(row.get("frozen_window_ms"))
        outcome = row.get("outcome", "no result")
        if row.get("thaw_forced"):
            outcome += " (thaw forced)"
        if row.get("check_mode"):
            outcome += " (check mode)"
        lines.append(
            row_format
            % (
                host,
                row.get("consistency", NONE),
                _dash(row.get("status_code")),
                _dash(row.get("status_name")),
                "-" if window is None else f"{window:.1f}",
                f"{row.get('snapshots_taken', 0)}/{row.get('snapshots_total', 0)}",
                outcome,
            )
        )
        # Why, for every host short of the policy or of application consistency.
        if outcome != "ok" or row.get("consistency") != APPLICATION:
            lines.append(f"  {host}: {row.get('reason') or row.get('message')}")
        for note in row.get("script_notes") or []:
            code = "timed out" if note.get("timed_out") else f"exit {note.get('exit_code')}"
            stderr = note.get("stderr_tail") or ""
            lines.append(
                f"  {host}: {note.get('phase')}-script {note.get('path')} {code}; stderr: {stderr}"
            )
    counts = fleet.get("consistency", {})
    lines.append(
        f"{fleet.get('ok', 0)} of {fleet.get('total', 0)} hosts ok;"
        f" application {counts.get(APPLICATION, 0)}, filesystem {counts.get(FILESYSTEM, 0)},"
        f" crash {counts.get(CRASH, 0)}, none {counts.get(NONE, 0)}"
    )
    return lines


def configure_fleet(results: Mapping[str, Any]) -> dict:
    """The configure playbook's summary from every targeted host's `configure_prepost_result`
    (empty for a host that was unreachable or failed before its configuration was checked)."""
    hosts = {}
    for host, result in results.items():
        if not isinstance(result, Mapping) or not result:
            hosts[host] = {
                "result": "no result",
                "consistency": "unknown",
                "message": "No result: the host was unreachable, or failed before its"
                " configuration was checked.",
            }
            continue
        changed = result.get("changed")
        hosts[host] = {
            "result": "changed" if changed is True or str(changed).lower() == "true" else "ok",
            "consistency": result.get("consistency"),
            "status_code": int_or_none(result.get("status_code")),
            "status_name": result.get("status_name"),
            "message": result.get("message"),
        }
    rows = list(hosts.values())
    return {
        "hosts": hosts,
        "total": len(rows),
        "application": sum(1 for row in rows if row["consistency"] == APPLICATION),
        "no_result": sum(1 for row in rows if row["result"] == "no result"),
    }


def configure_fleet_line(fleet: Mapping) -> str:
    silent = [host for host, row in fleet.get("hosts", {}).items() if row["result"] == "no result"]
    return (
        f"{fleet.get('application', 0)} of {fleet.get('total', 0)} hosts would get an"
        f" application-consistent snapshot; {len(silent)} gave no result"
        + (f": {', '.join(silent)}." if silent else ".")
    )


def preflight_result(info: Any, required: str) -> dict:
    """One host's preflight record from prepost_info's result, or the rescued failure
    (``{"failed": true, "msg": ...}``)."""
    info = dict(info) if isinstance(info, Mapping) else {}
    failed = bool(info.get("failed"))
    consistency = info.get("consistency") or NONE
    return {
        "failed": failed,
        "configured": bool(info.get("configured")),
        "consistency": consistency,
        "status_code": int_or_none(info.get("status_code")),
        "status_name": info.get("status_name") or None,
        "status_aliases": list(info.get("status_aliases") or []),
        "message": info.get("message") or info.get("msg") or "The check failed without a message.",
        "meets_policy": not failed and meets(consistency, required),
    }


def preflight_fleet(results: Mapping[str, Any]) -> dict:
    """The preflight table's data from every host's `snapshot_preflight`."""
    hosts = {}
    for host, result in results.items():
        result = result if isinstance(result, Mapping) else {}
        consistency = result.get("consistency") or NONE
        hosts[host] = {
            "consistency": consistency,
            "status_code": int_or_none(result.get("status_code")),
            "status_name": result.get("status_name") or None,
            "message": result.get("message") or "No result: the host is unreachable.",
            "application_consistent": consistency == APPLICATION,
        }
    return {
        "hosts": hosts,
        "total": len(hosts),
        "application": sum(1 for row in hosts.values() if row["application_consistent"]),
    }


def preflight_lines(fleet: Mapping) -> list[str]:
    row_format = "%-28s %-12s %5s %-44s %s"
    lines = [row_format % ("HOST", "NEXT", "CODE", "STATUS", "WHY")]
    for host, row in fleet.get("hosts", {}).items():
        lines.append(
            row_format
            % (
                host,
                row.get("consistency", NONE),
                _dash(row.get("status_code")),
                _dash(row.get("status_name")),
                row.get("message", ""),
            )
        )
    lines.append(
        f"{fleet.get('application', 0)} of {fleet.get('total', 0)} hosts would get an"
        " application-consistent snapshot"
    )
    return lines
