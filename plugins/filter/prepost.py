# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The configure_prepost role's plugin resolution; the logic is in module_utils/_prepost_plugins.py.

Documented in prepost_plugins.yml next to this file.
"""

from __future__ import annotations

from typing import Callable

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import _prepost_plugins


class FilterModule:
    def filters(self) -> dict[str, Callable]:
        return {"prepost_plugins": _prepost_plugins.check}
