# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""The reference's failure policy as pure functions, no I/O.

See docs/reference-behaviour.md §2.3, §2.4 and §6.

* A precheck that finds no usable configuration (304, 305, 313, 314, 316) never blocks the
  snapshot and leaves the health green; 317 never blocks it but turns the health yellow; a
  missing or unsafe script (302/303/306/307) blocks it only with continueBackupOnFailure=false.
* A failed or timed-out pre-script blocks the snapshot with continueBackupOnFailure=false;
  the plugin host's own timeout (310) never does. With fsFreezeEnabled=false any pre-script
  failure blocks it.
* The post-script runs whenever the pre-script was attempted. Its failure fails the job
  (after the snapshot) with continueBackupOnFailure=false or fsFreezeEnabled=false, except the
  host timeout (311).
* A snapshot that succeeded after a failed or skipped script is file-system-consistent, also
  with fsFreezeEnabled=false (the reference's label). The single-disk fallback turns a freeze or
  snapshot failure with one good snapshot into a crash-consistent success.
* The health code is the first error of precheck, pre, post, snapshot (``vmHealthStatusCode``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
)

APPLICATION = "application"
FILESYSTEM = "filesystem"
CRASH = "crash"
NONE = "none"
# The order of the levels, the one table every comparison reads: a result meets a policy when
# it ranks at least as high.
RANK = {NONE: 0, CRASH: 1, FILESYSTEM: 2, APPLICATION: 3}

# The consistency stamp on every snapshot (blob metadata or resource tags): the level reached and
# the host that reached it.
STAMP_LEVEL_KEY = "appconsistentLevel"
STAMP_HOST_KEY = "appconsistentHost"

_OK = (Status.success, Status.success_appconsistent)
# The reference does not even count these as "app-consistent backup enabled".
_NOT_ENABLED = (
    Status.FailedPrepostPluginhostConfigParsing,
    Status.FailedPrepostPluginConfigParsing,
    Status.FailedPrepostPluginhostConfigNotFound,
    Status.FailedPrepostPluginhostConfigPermissionError,
    Status.FailedPrepostPluginConfigNotFound,
)
_HOST_TIMEOUTS = (
    Status.FailedPrepostPluginhostPreTimeout,
    Status.FailedPrepostPluginhostPostTimeout,
)
_PARTIAL = (
    Status.FailedRetryableSnapshotFailedNoNetwork,
    Status.FailedRetryableSnapshotFailedRestrictedNetwork,
)


@dataclass(frozen=True)
class Outcome:
    status: Status
    consistency: str
    health_status: Status
    message: str


def _ok(status: Status | None) -> bool:
    return status is None or status in _OK


def _failed(status: Status | None) -> bool:
    return not _ok(status)


def snapshot_allowed(
    precheck_status: Status,
    pre_status: Status | None,
    continue_on_failure: bool,
    fs_freeze_enabled: bool,
) -> bool:
    """May the snapshot be taken? `pre_status` is None when no pre-script was attempted."""
    if _failed(precheck_status):
        if precheck_status in _NOT_ENABLED or (
            precheck_status == Status.FailedPrepostPluginConfigPermissionError
        ):
            return True
        return continue_on_failure
    if _ok(pre_status):
        return True
    if not fs_freeze_enabled:
        return False
    return pre_status in _HOST_TIMEOUTS or continue_on_failure


def _name(status: Status) -> str:
    return f"{int(status)} {status.name}"


def final_outcome(
    *,
    precheck_status: Status,
    pre_status: Status | None,
    post_status: Status | None,
    continue_on_failure: bool,
    fs_freeze_enabled: bool,
    snapshot_status: Status | None,
    snapshots_ok: int,
    snapshots_total: int,
    crash_fallback_allowed: bool,
    freeze_failure: str | None = None,
) -> Outcome:
    """The job status, the consistency obtained and the sticky health code of a whole run.

    `pre_status`/`post_status` are None when that phase did not run; `snapshot_status` is None
    when no snapshot was attempted, Status.success when all succeeded, else the freeze or
    snapshot failure code; `freeze_failure` says why the freeze failed, when it did (the code
    alone does not: a refused flush and a FIFREEZE past the deadline are both 122).
    """
    dobackup = snapshot_allowed(precheck_status, pre_status, continue_on_failure, fs_freeze_enabled)
    if _failed(post_status) and (
        not fs_freeze_enabled or (post_status not in _HOST_TIMEOUTS and not continue_on_failure)
    ):
        dobackup = False

    scripts = [precheck_status, pre_status, post_status]
    if precheck_status in _NOT_ENABLED:
        scripts = []  # the reference sets no health code for an unconfigured framework
    health: Status | None = next((s for s in scripts if _failed(s)), None)
    script_error = next((s for s in (precheck_status, pre_status, post_status) if _failed(s)), None)
    notes = []
    if script_error is not None:
        notes.append(f"pre/post-script framework: {_name(script_error)}")
    if not fs_freeze_enabled:
        notes.append("file systems not frozen (fsFreezeEnabled is false)")
    if freeze_failure:
        notes.append(freeze_failure.rstrip("."))

    taken = snapshot_status is not None and snapshots_ok > 0
    run = Status.success if snapshot_status is None or _ok(snapshot_status) else snapshot_status
    crash = False
    if _failed(run) and crash_fallback_allowed and snapshots_total == 1 and snapshots_ok == 1:
        health = health or run
        notes.append(f"single-disk crash-consistent fallback after {_name(run)}")
        run, crash = Status.success, True
    if _failed(run) and run in _PARTIAL and 0 < snapshots_ok < snapshots_total:
        health = health or Status.FailedRetryableSnapshotFailedRestrictedNetwork
        run = Status.FailedRetryableSnapshotFailedNoNetwork

    if _failed(run):
        message = f"The snapshot failed: {_name(run)} ({snapshots_ok}/{snapshots_total} disks)."
        return Outcome(run, NONE, health or run, _with(message, notes))
    if not dobackup:
        status = script_error or Status.error
        if taken:
            consistency = CRASH if crash else FILESYSTEM
            message = f"The snapshot was taken, but the job fails with {_name(status)}."
        else:
            consistency = NONE
            message = f"No snapshot was taken: {_name(status)}."
        return Outcome(status, consistency, health or status, _with(message, notes))
    if snapshot_status is None:
        message = "No snapshot was attempted."
        return Outcome(Status.error, NONE, health or Status.error, _with(message, notes))
    if crash:
        status, consistency = Status.success, CRASH
    elif script_error is None and pre_status is not None and post_status is not None:
        status, consistency = Status.success_appconsistent, APPLICATION
    else:
        status, consistency = Status.success, FILESYSTEM
    message = f"The snapshot is {consistency}-consistent."
    return Outcome(status, consistency, health or status, _with(message, notes))


def _with(message: str, notes: list) -> str:
    return f"{message[:-1]}; {'; '.join(notes)}." if notes else message


def predicted_consistency(precheck: Any) -> str:
    """What the next snapshot gets if every script succeeds, from a Precheck (or look-alike)."""
    if _ok(precheck.status):
        return APPLICATION
    if snapshot_allowed(
        precheck.status, None, precheck.continue_on_failure, precheck.fs_freeze_enabled
    ):
        return FILESYSTEM
    return NONE
