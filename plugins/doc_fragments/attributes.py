# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The attribute descriptions every module of this collection shares (as community.crypto does).

A module lists ``appconsistent.vmsnapshot.attributes`` (and ``.attributes.posix`` for the
platform) in ``extends_documentation_fragment`` and gives only ``support`` and ``details``.
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description:
      Can run in check mode and return changed status prediction without modifying target.
  diff_mode:
    description:
      Will return details on what has changed (or possibly needs changing in check_mode),
      when in diff mode.
"""

    POSIX = r"""
options: {}
attributes:
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
"""
