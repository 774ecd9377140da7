# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""The same taskId is not done twice: the last task's id is kept in the state directory.

As in the reference, the id is recorded when the run starts, so a task that failed is not
retried under the same id either; the service sends a new id for a retry.
"""

from __future__ import annotations

import os

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._atomic_file import (
    write_atomically,
)

TASK_FILE_NAME = "task_identity"


def task_file(state_dir: str) -> str:
    return os.path.join(state_dir, TASK_FILE_NAME)


def already_done(state_dir: str, task_id: str) -> bool:
    try:
        with open(task_file(state_dir), encoding="utf-8") as handle:
            return handle.read().strip() == task_id
    except FileNotFoundError:
        return False


def record(state_dir: str, task_id: str) -> None:
    write_atomically(task_file(state_dir), f"{task_id}\n".encode())
