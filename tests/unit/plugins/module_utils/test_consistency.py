"""The reference's failure table and consistency fallbacks, row by row.

See docs/reference-behaviour.md §2.4 and §6.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._consistency import (
    Outcome,
    final_outcome,
    predicted_consistency,
    snapshot_allowed,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import Status

T, F = True, False
NOT_ENABLED = [304, 305, 313, 314, 316]
SCRIPT_CHECKS = [302, 303, 306, 307]


@pytest.mark.parametrize(
    ("precheck", "pre", "cof", "freeze", "allowed"),
    [
        (1, None, F, F, T),  # precheck passed, no pre-script attempted (yet)
        (1, 1, F, F, T),
        *[(code, None, cof, T, T) for code in NOT_ENABLED for cof in (T, F)],
        (317, None, F, T, T),  # the flag is not even read: the JSON was not parsed
        (317, None, F, F, T),
        *[(code, None, T, T, T) for code in SCRIPT_CHECKS],
        *[(code, None, F, T, F) for code in SCRIPT_CHECKS],
        (1, 300, T, T, T),
        (1, 308, T, T, T),
        (1, 300, F, T, F),
        (1, 308, F, T, F),
        (1, 310, F, T, T),  # the host-level timeout carries continueBackup=True
        (1, 300, T, F, F),  # freeze disabled: any pre-script failure stops the snapshot
        (1, 310, T, F, F),
    ],
)
def test_snapshot_allowed(precheck, pre, cof, freeze, allowed):
    pre_status = None if pre is None else Status(pre)
    assert snapshot_allowed(Status(precheck), pre_status, cof, freeze) is allowed


def outcome(precheck, pre, post, cof, freeze, snapshot, ok=1, total=1, crash=F):
    return final_outcome(
        precheck_status=Status(precheck),
        pre_status=None if pre is None else Status(pre),
        post_status=None if post is None else Status(post),
        continue_on_failure=cof,
        fs_freeze_enabled=freeze,
        snapshot_status=None if snapshot is None else Status(snapshot),
        snapshots_ok=ok,
        snapshots_total=total,
        crash_fallback_allowed=crash,
    )


ROWS = [
    # (row, precheck, pre, post, cof, freeze, snapshot, ok, total, crash) -> status, level, health
    ("all scripts ok", (1, 1, 1, T, T, 1), (0, "application", 0)),
    ("all ok, freeze off is still app", (1, 1, 1, T, F, 1), (0, "application", 0)),
    *[
        (f"{code} not enabled cof={cof}", (code, None, None, cof, T, 1), (1, "filesystem", 1))
        for code in NOT_ENABLED
        for cof in (T, F)
    ],
    ("316 with freeze off is labelled fs", (316, None, None, T, F, 1), (1, "filesystem", 1)),
    ("317 cof true", (317, None, None, T, T, 1), (1, "filesystem", 317)),
    ("317 cof false", (317, None, None, F, T, 1), (1, "filesystem", 317)),
    *[
        (f"{code} cof true", (code, None, None, T, T, 1), (1, "filesystem", code))
        for code in SCRIPT_CHECKS
    ],
    *[
        (f"{code} cof false", (code, None, None, F, T, None, 0), (code, "none", code))
        for code in SCRIPT_CHECKS
    ],
    ("300 cof true", (1, 300, 1, T, T, 1), (1, "filesystem", 300)),
    ("308 cof true", (1, 308, 1, T, T, 1), (1, "filesystem", 308)),
    ("300 cof false", (1, 300, 1, F, T, None, 0), (300, "none", 300)),
    ("308 cof false", (1, 308, 1, F, T, None, 0), (308, "none", 308)),
    ("pre and post fail: first wins", (1, 300, 301, F, T, None, 0), (300, "none", 300)),
    ("301 cof true", (1, 1, 301, T, T, 1), (1, "filesystem", 301)),
    ("309 cof true", (1, 1, 309, T, T, 1), (1, "filesystem", 309)),
    ("301 cof false: taken but error", (1, 1, 301, F, T, 1), (301, "filesystem", 301)),
    ("309 cof false: taken but error", (1, 1, 309, F, T, 1), (309, "filesystem", 309)),
    ("freeze off + pre failure", (1, 300, 1, T, F, None, 0), (300, "none", 300)),
    ("freeze off + post failure", (1, 1, 301, T, F, 1), (301, "filesystem", 301)),
    ("310 cof false continues", (1, 310, 1, F, T, 1), (1, "filesystem", 310)),
    ("311 cof false continues", (1, 1, 311, F, T, 1), (1, "filesystem", 311)),
    ("310 freeze off stops", (1, 310, 1, T, F, None, 0), (310, "none", 310)),
    ("311 freeze off fails", (1, 1, 311, T, F, 1), (311, "filesystem", 311)),
    # §6 and the snapshot stage
    ("freeze failed", (1, 1, 1, T, T, 121, 0), (121, "none", 121)),
    ("crash fallback", (1, 1, 1, T, T, 121, 1, 1, T), (1, "crash", 121)),
    ("crash fallback, not configured", (316, None, None, T, T, 122, 1, 1, T), (1, "crash", 122)),
    ("fallback not allowed", (1, 1, 1, T, T, 122, 1, 1, F), (122, "none", 122)),
    ("fallback needs one disk", (1, 1, 1, T, T, 121, 1, 2, T), (121, "none", 121)),
    (
        "fallback never overrides a skipped pre",
        (1, 300, 1, F, T, None, 0, 1, T),
        (300, "none", 300),
    ),
    ("all disks failed", (1, 1, 1, T, T, 76, 0, 2), (76, "none", 76)),
    ("some disks failed", (1, 1, 1, T, T, 76, 1, 2), (76, "none", 761)),
    ("some disks failed, reported 761", (1, 1, 1, T, T, 761, 1, 3), (76, "none", 761)),
    ("snapshot limit", (1, 1, 1, T, T, 85, 0), (85, "none", 85)),
    ("command too late", (316, None, None, T, T, 402, 0), (402, "none", 402)),
    ("forced thaw", (1, 1, 1, T, T, 2), (2, "none", 2)),
    ("sticky health: script first", (1, 300, 1, T, T, 76, 0), (76, "none", 300)),
    (
        "not configured leaves health to the snapshot",
        (316, None, None, T, T, 173, 0),
        (173, "none", 173),
    ),
    ("precheck ok but nothing ran", (1, None, None, T, T, 76, 0), (76, "none", 76)),
    ("precheck ok, no scripts, snapshot ok", (1, None, None, T, T, 1), (1, "filesystem", 1)),
    ("allowed but nothing attempted", (1, 1, 1, T, T, None, 0), (2, "none", 2)),
]


@pytest.mark.parametrize(("args", "expected"), [row[1:] for row in ROWS], ids=[r[0] for r in ROWS])
def test_final_outcome(args, expected):
    result = outcome(*args)
    assert isinstance(result, Outcome)
    assert (int(result.status), result.consistency, int(result.health_status)) == expected
    assert result.message.endswith(".")


def test_messages_name_the_codes():
    result = outcome(1, 300, 1, F, T, None, 0)
    assert "300 FailedPrepostPreScriptFailed" in result.message
    assert "No snapshot was taken" in result.message
    result = outcome(316, None, None, T, F, 1)
    assert "316 FailedPrepostPluginConfigNotFound" in result.message
    assert "not frozen" in result.message
    assert "crash-consistent fallback after 121" in outcome(1, 1, 1, T, T, 121, 1, 1, T).message


@pytest.mark.parametrize(
    ("status", "cof", "freeze", "level"),
    [
        (1, T, T, "application"),
        (1, F, F, "application"),
        (316, F, T, "filesystem"),
        (305, F, T, "filesystem"),
        (317, F, T, "filesystem"),
        (302, T, T, "filesystem"),
        (302, F, T, "none"),
        (307, F, F, "none"),
    ],
)
def test_predicted_consistency(status, cof, freeze, level):
    precheck = SimpleNamespace(
        status=Status(status), continue_on_failure=cof, fs_freeze_enabled=freeze
    )
    assert predicted_consistency(precheck) == level


def test_a_freeze_failure_says_why():
    reason = "Not frozen: after 3 rounds of flushing, writing left would outlast the deadline."
    result = final_outcome(
        precheck_status=Status(1),
        pre_status=Status(1),
        post_status=Status(1),
        continue_on_failure=T,
        fs_freeze_enabled=T,
        snapshot_status=Status.FailedRetryableFsFreezeTimeout,
        snapshots_ok=0,
        snapshots_total=1,
        crash_fallback_allowed=F,
        freeze_failure=reason,
    )
    assert result.message == (
        "The snapshot failed: 122 FailedRetryableFsFreezeTimeout (0/1 disks); " + reason
    )
