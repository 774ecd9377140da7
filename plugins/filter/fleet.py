# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The filters the roles' and playbooks' summaries and input checks use; the logic is in
module_utils/_fleet.py and module_utils/_restore_point_summary.py.

Each filter is documented in the .yml file of its name next to this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

from ansible.errors import AnsibleFilterError

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import (
    _fleet,
    _restore_point_summary,
)


def _checked(function: Callable) -> Callable:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except _fleet.FleetInputError as exc:
            raise AnsibleFilterError(str(exc)) from None

    wrapper.__name__ = function.__name__
    wrapper.__doc__ = function.__doc__
    return wrapper


def _per_host(hostvars: Any, hosts: Any, key: str) -> dict:
    """Each host's fact `key`, or {} for a host without it (unreachable, later batch)."""
    results = {}
    for host in hosts or []:
        try:
            value = hostvars[host][key]
        except Exception:  # a missing host or fact raises differently on each ansible-core
            value = {}
        results[str(host)] = value if isinstance(value, Mapping) else {}
    return results


def snapshot_fleet(hostvars: Any, hosts: Any) -> dict:
    return _fleet.snapshot_fleet(_per_host(hostvars, hosts, "snapshot_result"))


def restore_point_fleet(hostvars: Any, hosts: Any) -> dict:
    return _restore_point_summary.restore_point_fleet(
        _per_host(hostvars, hosts, "restore_point_result")
    )


def configure_fleet(hostvars: Any, hosts: Any) -> dict:
    return _fleet.configure_fleet(_per_host(hostvars, hosts, "configure_prepost_result"))


def preflight_fleet(hostvars: Any, hosts: Any, fact: str = "snapshot_preflight") -> dict:
    return _fleet.preflight_fleet(_per_host(hostvars, hosts, fact))


class FilterModule:
    def filters(self) -> dict[str, Callable]:
        return {
            "consistency_rank": _checked(_fleet.rank),
            "consistency_meets": _checked(_fleet.meets),
            "uri_list": _checked(_fleet.uri_list),
            "settings_dict": _checked(_fleet.settings_dict),
            "managed_disk_list": _checked(_fleet.managed_disk_list),
            "snapshot_host_result": _checked(_fleet.host_result),
            "snapshot_fleet": _checked(snapshot_fleet),
            "snapshot_fleet_lines": _checked(_fleet.snapshot_fleet_lines),
            "extension_status": _checked(_restore_point_summary.extension_status),
            "restore_point_host_result": _checked(_restore_point_summary.host_result),
            "restore_point_fleet": _checked(restore_point_fleet),
            "configure_fleet": _checked(configure_fleet),
            "configure_fleet_line": _checked(_fleet.configure_fleet_line),
            "preflight_result": _checked(_fleet.preflight_result),
            "preflight_fleet": _checked(preflight_fleet),
            "preflight_lines": _checked(_fleet.preflight_lines),
        }
