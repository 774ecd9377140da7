# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""The record of a run between its pre-script and its post-script.

A run that dies there (SIGKILL, OOM, reboot) leaves the application quiesced. The run writes this
record before the pre-script and removes it after the post-script; the next run that finds it
runs the recorded configuration's post-scripts first. The record also names every script
process the run started (pid and start time), so that the next run first ends what is left of
them: a slow pre-script that outlived its run must not quiesce the application again after the
post-script released it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._atomic_file import (
    write_atomically,
)

PENDING_FILE_NAME = "post_script.pending"


@dataclass(frozen=True)
class PendingRun:
    pid: int
    task_id: str | None
    config_path: str
    host_config_path: str
    # [pid, start time in clock ticks] of every script attempt started so far.
    scripts: list[list[int]] = field(default_factory=list)


def pending_path(state_dir: str) -> str:
    return os.path.join(state_dir, PENDING_FILE_NAME)


def record(state_dir: str, run: PendingRun) -> None:
    """Raises OSError when the record cannot be written."""
    write_atomically(pending_path(state_dir), json.dumps(asdict(run)).encode())


def clear(state_dir: str) -> None:
    # Left behind, the record only makes the next run run the post-scripts once more.
    with contextlib.suppress(OSError):
        os.unlink(pending_path(state_dir))


def load(state_dir: str) -> PendingRun | None:
    """The record, or None when there is none; ValueError when it cannot be read."""
    try:
        with open(pending_path(state_dir), encoding="utf-8") as handle:
            data = json.load(handle)
        run = PendingRun(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError, TypeError) as exc:
        raise ValueError(str(exc)) from None
    if not (isinstance(run.config_path, str) and isinstance(run.host_config_path, str)):
        raise ValueError("the configuration paths are not text")
    if not isinstance(run.scripts, list) or not all(
        isinstance(entry, list)
        and len(entry) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in entry)
        for entry in run.scripts
    ):
        raise ValueError("the script processes are not [pid, start time] pairs")
    return run
