"""The second line of defence: whatever fails after the pre-scripts started, the post-scripts
still run, the status is written and a result with a code comes back (no real scripts or
filesystems here: the fault suite runs those)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import (
    _interrupted_run,
    _prepost,
    _snapshot_run,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._host_lock import HostLock
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._sas import parse_sas_uri
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
)

DISK = "https://acct.blob.core.windows.net/vhds/d.vhd?sv=2021-12-02&sr=b&sp=rw&sig=c2lnbmF0dXJl"


class FakePrecheck:
    status = Status.success
    message = "fine"
    warnings: list = []
    continue_on_failure = True
    fs_freeze_enabled = True
    plugins: list = []

    def close(self) -> None:
        pass


def phase(name: str, calls: list):
    def run(precheck, on_start=None):
        calls.append(name)
        return _prepost.PhaseResult(name, Status.success, f"{name} ran", True, [])

    return run


@pytest.mark.parametrize(
    "failure",
    [RuntimeError("boom \ud800"), _snapshot_run.RunInterrupted("SIGINT"), KeyError("x")],
    ids=["error", "interrupted", "key error"],
)
def test_a_failure_after_the_pre_script_still_runs_the_post_script(tmp_path, monkeypatch, failure):
    calls: list = []
    monkeypatch.setattr(_prepost, "precheck", lambda *args: FakePrecheck())
    monkeypatch.setattr(_prepost, "run_pre", phase("pre", calls))
    monkeypatch.setattr(_prepost, "run_post", phase("post", calls))
    monkeypatch.setattr(
        _snapshot_run.SnapshotRun,
        "_open_endpoints",
        lambda self: _snapshot_run.Connections([], [], 0.0),
    )
    monkeypatch.setattr(_snapshot_run.SnapshotRun, "_mount_points", lambda self, enabled: [])

    def explode(self, *args, **kwargs):
        raise failure

    monkeypatch.setattr(_snapshot_run.SnapshotRun, "_freeze_and_snapshot", explode)
    # A lock name of this test's own: real runs on this machine hold the real one.
    name = b"\0appconsistent.vmsnapshot.test-" + str(tmp_path).encode()
    monkeypatch.setattr(_snapshot_run, "HostLock", lambda state_dir: HostLock(state_dir, name))
    request = _snapshot_run.SnapshotRequest(
        disks=[parse_sas_uri(DISK, what="disk")],
        state_dir=str(tmp_path / "state"),
        log_dir=str(tmp_path / "log"),
    )
    result = _snapshot_run.SnapshotRun(request).run()
    assert calls == ["pre", "post"]
    assert result["status_code"] == int(Status.error)
    assert result["consistency"] == "none"
    assert "post-scripts ran" in result["message"]
    result["message"].encode("utf-8")  # printable whatever the exception held
    status = json.loads((tmp_path / "state" / "status" / "last.status").read_text())
    assert status
    assert _interrupted_run.load(str(tmp_path / "state")) is None
