"""The snapshot module end to end: real scripts, real loop filesystems, a real Azurite.

Every row of the reference's failure table is a case here, and each case checks the system's
state (the snapshots in the blob service, the bytes they hold, the scripts' journal, whether the
filesystems are writable again), not only the module's word.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_document import (
    parse_status_document,
)
from harness.faultproxy import FaultProxy, Rule, is_snapshot
from harness.modules import module_command, module_env, run_module, write_args
from harness.scriptset import write_prepost
from snapshot_support import start_writer, writable_within, writer_report

pytestmark = pytest.mark.root


@pytest.fixture
def run_dirs(tmp_path):
    state = tmp_path / "state"
    logs = tmp_path / "logs"
    return {"state_dir": str(state), "log_dir": str(logs)}


def snapshot_args(disks, prepost, run_dirs, mounts, **extra):
    args = {
        "disks": [disk.sas for disk in disks],
        "config_path": str(prepost.config_path) if prepost else "/nonexistent/config.json",
        "freeze_mounts": [fs.mount_point for fs in mounts],
        **run_dirs,
    }
    args.update(extra)
    return args


def snapshots_in_service(azurite, disk):
    return azurite.list_snapshots(disk.container, disk.name)


def test_application_consistent_snapshot_holds_the_bytes_of_before_the_freeze(
    azurite, blob_disks, loop_ext4, loop_xfs, tmp_path, run_dirs
):
    disks = blob_disks(2)
    prepost = write_prepost(tmp_path / "scripts")
    writers = [
        (
            start_writer(fs.mount_point, tmp_path / f"writer-{i}.json", 3.0),
            tmp_path / f"writer-{i}.json",
        )
        for i, fs in enumerate((loop_ext4, loop_xfs))
    ]
    time.sleep(0.5)
    result = run_module("snapshot", snapshot_args(disks, prepost, run_dirs, [loop_ext4, loop_xfs]))

    assert result["status_code"] == 0, result
    assert (result["status_name"], result["consistency"]) == (
        "success_appconsistent",
        "application",
    )
    assert result["changed"] is True and result["thaw_forced"] is False
    assert sorted(result["frozen_mounts"]) == sorted([loop_ext4.mount_point, loop_xfs.mount_point])
    assert prepost.entries() == ["pre", "post"]
    for disk, reported in zip(disks, result["snapshots"]):
        assert reported["ok"] and reported["blob_url"] == disk.sas.split("?")[0]
        taken = snapshots_in_service(azurite, disk)
        assert [s["snapshot"] for s in taken] == [reported["snapshot"]]
        assert taken[0]["metadata"]["appconsistentLevel"] == "application"
        # Overwrite the disk: the snapshot must still hold what the disk held before.
        azurite.write_pages(disk.container, disk.name, b"\xff" * 512)
        assert (
            azurite.read_snapshot(disk.container, disk.name, reported["snapshot"]) == disk.content
        )

    window = result["timings"]["frozen_window_ms"]
    for process, report in writers:
        stats = writer_report(process, report)
        # The writers kept going, and no write waited much longer than the frozen window.
        assert stats["writes"] > 100
        assert stats["max_gap_ms"] < window + 250, (stats, window)
    for fs in (loop_ext4, loop_xfs):
        assert writable_within(fs.mount_point, 2.0)


FAILING = "exit 1"
HANGING = "sleep 30"

# (pre, post, continueBackupOnFailure, fsFreezeEnabled) -> (status, consistency, snapshot taken)
FAILURE_TABLE = [
    pytest.param(FAILING, "exit 0", True, True, 1, "filesystem", True, id="pre-fails-continue"),
    pytest.param(FAILING, "exit 0", False, True, 300, "none", False, id="pre-fails-stop"),
    pytest.param(HANGING, "exit 0", True, True, 1, "filesystem", True, id="pre-timeout-continue"),
    pytest.param(HANGING, "exit 0", False, True, 308, "none", False, id="pre-timeout-stop"),
    pytest.param("exit 0", FAILING, True, True, 1, "filesystem", True, id="post-fails-continue"),
    pytest.param("exit 0", FAILING, False, True, 301, "filesystem", True, id="post-fails-stop"),
    pytest.param("exit 0", HANGING, True, True, 1, "filesystem", True, id="post-timeout-continue"),
    pytest.param("exit 0", HANGING, False, True, 309, "filesystem", True, id="post-timeout-stop"),
    pytest.param("exit 0", "exit 0", True, False, 0, "application", True, id="freeze-disabled"),
    pytest.param(
        FAILING, "exit 0", True, False, 300, "none", False, id="freeze-disabled-pre-fails"
    ),
]


@pytest.mark.parametrize(
    ("pre", "post", "keep_going", "freeze", "code", "consistency", "taken"), FAILURE_TABLE
)
def test_failure_table(
    azurite, blob_disks, loop_ext4, tmp_path, run_dirs,
    pre, post, keep_going, freeze, code, consistency, taken,
):  # fmt: skip
    disks = blob_disks(1)
    prepost = write_prepost(
        tmp_path / "scripts", pre=pre, post=post, timeout=1,
        continue_on_failure=keep_going, freeze=freeze,
    )  # fmt: skip
    result = run_module("snapshot", snapshot_args(disks, prepost, run_dirs, [loop_ext4]))

    assert (result["status_code"], result["consistency"]) == (code, consistency), result
    # The post-script runs whenever the pre-script was attempted.
    assert prepost.entries() == ["pre", "post"]
    assert bool(snapshots_in_service(azurite, disks[0])) is taken
    assert result["frozen_mounts"] == ([loop_ext4.mount_point] if freeze and taken else [])
    assert writable_within(loop_ext4.mount_point, 2.0)


def test_not_configured_is_filesystem_consistent(azurite, blob_disks, loop_ext4, run_dirs):
    disks = blob_disks(1)
    result = run_module("snapshot", snapshot_args(disks, None, run_dirs, [loop_ext4]))
    assert (result["status_code"], result["consistency"]) == (1, "filesystem"), result
    assert len(snapshots_in_service(azurite, disks[0])) == 1


def test_freeze_failure_takes_no_snapshot_and_leaves_a_foreign_freeze_alone(
    azurite, blob_disks, loop_ext4, tmp_path, run_dirs
):
    disks = blob_disks(1)
    prepost = write_prepost(tmp_path / "scripts")
    subprocess.run(["fsfreeze", "-f", loop_ext4.mount_point], check=True)
    try:
        result = run_module("snapshot", snapshot_args(disks, prepost, run_dirs, [loop_ext4]))
        assert (result["status_code"], result["consistency"]) == (121, "none"), result
        assert snapshots_in_service(azurite, disks[0]) == []
        assert prepost.entries() == ["pre", "post"]
        # Someone else's freeze is theirs to undo.
        assert not writable_within(loop_ext4.mount_point, 0.5)
    finally:
        subprocess.run(["fsfreeze", "-u", loop_ext4.mount_point], check=False)
    assert writable_within(loop_ext4.mount_point, 2.0)


def test_read_only_sas_is_refused_before_anything_is_quiesced(
    azurite, blob_disks, loop_ext4, tmp_path, run_dirs
):
    disks = blob_disks(1, permissions="r")
    prepost = write_prepost(tmp_path / "scripts")
    result = run_module("snapshot", snapshot_args(disks, prepost, run_dirs, [loop_ext4]))
    assert result["status_code"] == 76 and result["consistency"] == "none", result
    assert result["snapshots"][0]["ok"] is False and "read-only" in result["snapshots"][0]["error"]
    assert "sig=" not in json.dumps(result).replace("sig=REDACTED", "")
    assert snapshots_in_service(azurite, disks[0]) == []
    assert prepost.entries() == [] and result["frozen_mounts"] == []


def test_snapshot_refused_by_the_service_while_frozen_thaws_and_reports(
    azurite, blob_disks, loop_ext4, tmp_path, run_dirs
):
    disk = blob_disks(1)[0]
    proxy = FaultProxy(azurite.host, azurite.port)
    try:
        proxy.rules.append(Rule(is_snapshot, status=403, body=b"AuthorizationPermissionMismatch"))
        disk = dataclasses.replace(disk, sas=proxy.url_for(disk.sas))
        prepost = write_prepost(tmp_path / "scripts")
        result = run_module("snapshot", snapshot_args([disk], prepost, run_dirs, [loop_ext4]))
    finally:
        proxy.close()
    assert result["status_code"] == 76 and result["consistency"] == "none", result
    assert "403" in result["snapshots"][0]["error"]
    assert result["frozen_mounts"] == [loop_ext4.mount_point] and not result["thaw_forced"]
    assert prepost.entries() == ["pre", "post"]
    assert writable_within(loop_ext4.mount_point, 2.0)


def test_expired_sas_fails_before_anything_is_quiesced(
    azurite, blob_disks, loop_ext4, tmp_path, run_dirs
):
    disk = blob_disks(1)[0]
    disk = dataclasses.replace(
        disk,
        sas=azurite.blob_sas(
            disk.container, disk.name, expiry=datetime.now(timezone.utc) - timedelta(hours=1)
        ),
    )
    prepost = write_prepost(tmp_path / "scripts")
    result = run_module("snapshot", snapshot_args([disk], prepost, run_dirs, [loop_ext4]))
    assert result["status_code"] == 76 and result["frozen_mounts"] == [], result
    assert prepost.entries() == []  # the application was never touched


def test_dead_endpoint_fails_fast(blob_disks, loop_ext4, tmp_path, run_dirs):
    disk = blob_disks(1)[0]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    disk = dataclasses.replace(
        disk, sas=disk.sas.replace(disk.sas.split("/")[2], f"127.0.0.1:{dead_port}")
    )
    prepost = write_prepost(tmp_path / "scripts")
    start = time.monotonic()
    result = run_module("snapshot", snapshot_args([disk], prepost, run_dirs, [loop_ext4]))
    assert time.monotonic() - start < 10
    assert result["status_code"] == 76 and result["consistency"] == "none", result
    assert prepost.entries() == []


def test_one_disk_of_several_failing_is_761(azurite, blob_disks, loop_ext4, tmp_path, run_dirs):
    disks = blob_disks(3)
    proxy = FaultProxy(azurite.host, azurite.port)
    try:
        proxy.rules.append(
            Rule(
                lambda method, target: is_snapshot(method, target) and "disk2" in target, status=500
            )
        )
        disks = [dataclasses.replace(d, sas=proxy.url_for(d.sas)) for d in disks]
        prepost = write_prepost(tmp_path / "scripts")
        result = run_module("snapshot", snapshot_args(disks, prepost, run_dirs, [loop_ext4]))
    finally:
        proxy.close()
    # The reference's run result for a partial failure is 76; its health code says 761.
    assert result["status_code"] == 76 and result["consistency"] == "none", result
    assert [s["ok"] for s in result["snapshots"]] == [True, True, False]
    local = parse_status_document(Path(result["status_file"]).read_text())
    assert local["blob"]["health_code"] == 761
    assert [len(snapshots_in_service(azurite, d)) for d in disks] == [1, 1, 0]


def test_one_disk_of_several_not_answering_stops_before_quiescing(
    azurite, blob_disks, loop_ext4, tmp_path, run_dirs
):
    disks = blob_disks(2) + blob_disks(1, permissions="r")
    prepost = write_prepost(tmp_path / "scripts")
    result = run_module("snapshot", snapshot_args(disks, prepost, run_dirs, [loop_ext4]))
    assert result["status_code"] == 76 and result["consistency"] == "none", result
    assert [s["ok"] for s in result["snapshots"]] == [False, False, False]
    assert prepost.entries() == [] and result["frozen_mounts"] == []


def test_status_document_round_trips_through_the_status_blob(
    azurite, blob_disks, loop_ext4, tmp_path, run_dirs
):
    disks = blob_disks(2)
    prepost = write_prepost(tmp_path / "scripts")
    status_sas = azurite.status_blob_sas(container=azurite.create_container())
    log_sas = azurite.log_blob_sas(container=azurite.create_container())
    args = snapshot_args(
        disks, prepost, run_dirs, [loop_ext4],
        status_blob_uri=status_sas, logs_blob_uri=log_sas, task_id="task-42",
    )  # fmt: skip
    result = run_module("snapshot", args)
    assert result["status_code"] == 0, result

    container, name = status_sas.split("?")[0].split("/")[-2:]
    text = azurite.read_blob(container, name).decode()
    status = parse_status_document(text)
    assert (status["code"], status["task_id"], status["consistency"]) == (
        0,
        "task-42",
        "application",
    )
    assert status["message"]["snapshotConsistency"] == 2
    assert [i["isSuccessful"] for i in status["snapshots"]] == [True, True]
    log_container, log_name = log_sas.split("?")[0].split("/")[-2:]
    log_text = azurite.read_blob(log_container, log_name).decode()
    local = (tmp_path / "state" / "status" / "last.status").read_text()
    for written in (json.dumps(result), log_text, local, text):
        assert "sig=" not in written.replace("sig=REDACTED", "")
    # The same taskId again: reported, not done twice.
    again = run_module("snapshot", args)
    assert again["status_code"] == 3 and again["changed"] is False
    assert len(snapshots_in_service(azurite, disks[0])) == 1


def test_check_mode_runs_prechecks_only(azurite, blob_disks, loop_ext4, tmp_path, run_dirs):
    disks = blob_disks(1)
    prepost = write_prepost(tmp_path / "scripts")
    result = run_module(
        "snapshot", snapshot_args(disks, prepost, run_dirs, [loop_ext4]), check_mode=True
    )
    assert result["consistency"] == "application" and result["changed"] is True, result
    assert prepost.entries() == [] and snapshots_in_service(azurite, disks[0]) == []
    assert not (tmp_path / "state").exists()


def test_sigkill_while_frozen_leaves_nothing_frozen(
    azurite, blob_disks, loop_ext4, tmp_path, run_dirs
):
    disk = blob_disks(1)[0]
    proxy = FaultProxy(azurite.host, azurite.port)
    try:
        proxy.rules.append(Rule(is_snapshot, delay=20))
        disk = dataclasses.replace(disk, sas=proxy.url_for(disk.sas))
        args = snapshot_args([disk], None, run_dirs, [loop_ext4], max_freeze_seconds=40)
        process = subprocess.Popen(
            module_command("snapshot", write_args(args, str(tmp_path))),
            env=module_env(),
            stdout=subprocess.DEVNULL,
        )
        assert proxy.snapshot_seen.wait(30), "the module never reached the snapshot call"
        assert not writable_within(loop_ext4.mount_point, 0.3), "not frozen during the call?"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        killed_at = time.monotonic()
        assert writable_within(loop_ext4.mount_point, 1.0)
        assert time.monotonic() - killed_at < 1.0
    finally:
        proxy.close()
