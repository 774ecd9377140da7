# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""The result of one snapshot run and its status document, built from what the run recorded.

Every way a run ends (check mode, an early end, the decided outcome, an unexpected failure)
is an `Outcome` and goes through `build_result`; the status file and blob hold
`status_document`. Both are pure: `_snapshot_run` publishes what they build.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._blob_rest import (
    SnapshotResult,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._consistency import (
    NONE,
    Outcome,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._guardian import (
    ThawReport,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._managed_disk import (
    ManagedSnapshotResult,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._prepost import (
    PhaseResult,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._sas import redact
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    describe,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_document import (
    build_status_document,
)

EXTENSION_VERSION = "0.1.0"


@dataclass(frozen=True)
class PhaseRun:
    """One pre- or post-script phase as the run ran it."""

    name: str  # "pre", "post" or "recovered_post"
    result: PhaseResult
    ms: float


@dataclass(frozen=True)
class Taken:
    """One round of snapshot calls: a result per disk, in order, and how long the calls took."""

    snapshots: list[SnapshotResult | ManagedSnapshotResult]
    ms: float


@dataclass
class RunFacts:
    """What the run has done so far; every result and status document is built from it.

    The run records each step's value here as the step returns (the freeze step as it goes),
    so that whatever fails next, the result still tells what was done before.
    """

    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    scripts: dict[str, dict] = field(default_factory=dict)
    snapshots: list[SnapshotResult | ManagedSnapshotResult] = field(default_factory=list)
    thaw: ThawReport | None = None
    # How the freeze was done: expedited or why not, which thaw backstop was armed.
    freeze: dict[str, object] = field(default_factory=dict)
    freeze_failure: str | None = None  # why the freeze failed, when it did

    def add_phase(self, phase: PhaseRun) -> None:
        self.timings[f"{phase.name}_ms"] = phase.ms
        self.scripts[phase.name] = phase.result.as_dict()
        self.warnings.extend(phase.result.warnings)

    def add_taken(self, taken: Taken) -> None:
        self.snapshots = taken.snapshots
        self.timings["snapshot_ms"] = taken.ms

    @property
    def any_taken(self) -> bool:
        return any(snapshot.ok for snapshot in self.snapshots)


def result_message(outcome: Outcome) -> str:
    """The outcome's sentence (the code's own when it has none), scrubbed of secrets."""
    return redact(outcome.message or describe(outcome.status).message)


def build_result(
    outcome: Outcome, facts: RunFacts, *, check_mode: bool, status_file: str | None
) -> dict:
    """The module's result; `status_file` is None in check mode, which writes nothing.

    A real run changed something when a snapshot was taken; check mode when one would be.
    """
    thaw = facts.thaw
    result = {
        "changed": outcome.consistency != NONE if check_mode else facts.any_taken,
        "consistency": outcome.consistency,
        "status_code": int(outcome.status),
        "status_name": outcome.status.name,
        "message": result_message(outcome),
        "snapshots": [snapshot.as_dict() for snapshot in facts.snapshots],
        "frozen_mounts": thaw.frozen_mounts if thaw else [],
        "thaw_forced": bool(thaw and thaw.thaw_forced),
        "forced_reason": thaw.forced_reason if thaw else None,
        **facts.freeze,
        "timings": facts.timings,
        "scripts": facts.scripts,
    }
    if status_file is not None:
        result["status_file"] = status_file
    result["warnings"] = facts.warnings
    return result


def unpublished_result(outcome: Outcome, facts: RunFacts, failure: BaseException) -> dict:
    """The last resort when building or publishing the result failed: the fields that cannot."""
    return {
        "changed": facts.any_taken,
        "consistency": NONE,
        "status_code": int(outcome.status),
        "status_name": outcome.status.name,
        "message": redact(
            f"{outcome.message} The status could not be written ({type(failure).__name__})."
        ),
        "warnings": facts.warnings,
    }


def status_document(
    outcome: Outcome, facts: RunFacts, *, task_id: str | None, command_start_ticks: str | None
) -> list:
    """The reference's status document of the outcome (the status file's and blob's content)."""
    timings = facts.timings
    return build_status_document(
        task_id=task_id,
        status=outcome.status,
        status_text="success"
        if outcome.status in (Status.success_appconsistent, Status.success)
        else "error",
        message=result_message(outcome),
        consistency=outcome.consistency,
        snapshots=[snapshot.snapshot_info() for snapshot in facts.snapshots],
        health_status=outcome.health_status,
        command_start_ticks=command_start_ticks,
        telemetry={
            "FreezeTime": timings.get("freeze_ms"),
            "ThawTime": timings.get("thaw_ms"),
            "snapshotTimeTaken": timings.get("snapshot_ms"),
            "frozenWindowMs": timings.get("frozen_window_ms"),
            "consistencyType": outcome.consistency,
        },
        unique_machine_id=platform.node(),
        extension_version=EXTENSION_VERSION,
    )
