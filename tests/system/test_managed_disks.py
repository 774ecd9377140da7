"""Managed disks end to end: the snapshot module and managed_disk_restore against the stand-in.

Azure itself is not reached. The Resource Manager, IMDS and AAD stand-in
(`tests/harness/armstandin.py`) follows the published REST specification, and its managed disks
are page blobs in a real Azurite: a snapshot is a real blob snapshot, a restored disk a real copy.
Each case checks the system's state (the bytes a snapshot holds, the tags, the filesystem of a
restored disk, whether the frozen filesystem is writable again), not only the module's word.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_document import (
    parse_status_document,
)
from harness.blobdisk import attach_blob_disk
from harness.modules import run_module
from harness.scriptset import write_prepost
from snapshot_support import writable_within

pytestmark = pytest.mark.root


@pytest.fixture
def run_dirs(tmp_path):
    return {"state_dir": str(tmp_path / "state"), "log_dir": str(tmp_path / "logs")}


@pytest.fixture
def standin(arm_standin):
    arm_standin.clear_faults()
    yield arm_standin
    arm_standin.clear_faults()


def arm_args(standin, disk_ids, **extra) -> dict:
    return {
        "managed_disks": [{"id": disk_id} for disk_id in disk_ids],
        "arm_endpoint": standin.arm_endpoint,
        "imds_endpoint": standin.imds_endpoint,
        "ca_path": standin.ca_file,
        **extra,
    }


def new_disks(standin, count: int, tag: str) -> list[str]:
    return [
        standin.add_disk(f"{tag}-d{i}-{time.monotonic_ns()}", size_bytes=64 * 1024)
        for i in range(count)
    ]


def write_durably(path: Path, text: str) -> None:
    """Write and fsync one file (never a global sync: other filesystems may be frozen)."""
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def test_snapshot_of_a_blob_backed_disk_under_freeze_restores_to_the_bytes_of_before(
    azurite,
    standin,
    blob_disk_factory,
    tmp_path,
    run_dirs,
):
    container = azurite.create_container()
    azurite.create_page_blob("os.vhd", 32 * 1024 * 1024, container=container)
    disk = blob_disk_factory(
        azurite.blob_sas(container, "os.vhd"), mkfs="ext4", mount=True, base_dir=str(tmp_path)
    )
    disk_id = standin.add_disk("vm1-data", container=container, blob="os.vhd")
    data = Path(disk.mount_point, "ledger.txt")
    write_durably(data, "before the freeze\n")
    prepost = write_prepost(tmp_path / "scripts", pre=f"echo quiesced > {disk.mount_point}/q")

    result = run_module(
        "snapshot",
        {
            **arm_args(standin, [disk_id]),
            "config_path": str(prepost.config_path),
            "freeze_mounts": [disk.mount_point],
            "task_id": "task-md-1",
            "backup_metadata": {"backupJob": "nightly"},
            **run_dirs,
        },
    )
    # Written after the run: the snapshot must not hold it.
    write_durably(data, "after the thaw\n")

    assert result["status_code"] == 0 and result["consistency"] == "application", result
    assert result["frozen_mounts"] == [disk.mount_point] and not result["thaw_forced"]
    assert writable_within(disk.mount_point, 2.0)
    assert prepost.entries() == ["pre", "post"]
    [taken] = result["snapshots"]
    assert taken["ok"] and taken["disk_id"] == disk_id
    assert taken["snapshot_id"].endswith("/snapshots/vm1-data-" + taken["snapshot_id"][-16:])
    # Followed after the thaw: the operation ended and the background copy is complete.
    assert taken["provisioning_state"] == "Succeeded" and taken["completion_percent"] == 100.0
    assert result["timings"]["follow_up_ms"] > 0
    calls = [
        r for r in standin.requests() if "vm1-data" in r["path"] or "DiskOperations" in r["path"]
    ]
    put = next(i for i, r in enumerate(calls) if r["method"] == "PUT")
    # Inside the window only the PUT; the operation is polled after it (after the thaw).
    assert calls[put]["status"] == 202
    assert any("DiskOperations" in r["path"] for r in calls[put + 1 :])
    resource = standin.backing(taken["snapshot_id"])["resource"]
    assert resource["properties"]["incremental"] is True
    assert resource["properties"]["creationData"] == {
        "createOption": "Copy",
        "sourceResourceId": disk_id,
        "sourceUniqueId": resource["properties"]["creationData"]["sourceUniqueId"],
    }
    assert resource["tags"]["appconsistentLevel"] == "application"
    assert resource["tags"]["backupJob"] == "nightly"
    status = parse_status_document(Path(result["status_file"]).read_text())
    assert status["blob"]["snapshots"][0]["snapshotUri"] == taken["snapshot_id"]

    # Restore: a new managed disk from the snapshot, attached, checked, mounted.
    restore_args = {
        "snapshot_id": taken["snapshot_id"],
        "name": "vm1-data-restored",
        "arm_endpoint": standin.arm_endpoint,
        "imds_endpoint": standin.imds_endpoint,
        "ca_path": standin.ca_file,
    }
    planned = run_module("managed_disk_restore", restore_args, check_mode=True)
    assert planned["changed"] is True and planned["action"] == "create", planned
    restored = run_module("managed_disk_restore", restore_args)
    assert restored["changed"] is True and restored["provisioning_state"] == "Succeeded", restored
    assert restored["consistency"] == "application"
    again = run_module("managed_disk_restore", restore_args)
    assert again["changed"] is False and again["action"] == "none", again

    backing = standin.backing(restored["disk_id"])
    copy = attach_blob_disk(
        azurite.blob_sas(backing["container"], backing["blob"]), base_dir=str(tmp_path)
    )
    try:
        fsck = subprocess.run(
            ["fsck.ext4", "-fn", copy.device], capture_output=True, text=True, check=False
        )
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        copy.mount()
        assert Path(copy.mount_point, "ledger.txt").read_text() == "before the freeze\n"
        assert Path(copy.mount_point, "q").read_text() == "quiesced\n"
    finally:
        copy.teardown()


def test_a_disk_made_from_another_source_is_never_overwritten(azurite, standin, tmp_path):
    [disk_id] = new_disks(standin, 1, "other")
    base = {
        "arm_endpoint": standin.arm_endpoint,
        "imds_endpoint": standin.imds_endpoint,
        "ca_path": standin.ca_file,
    }
    # The disk itself exists with no snapshot as its source.
    name = disk_id.rsplit("/", 1)[1]
    token = standin.token()
    snap = disk_id.replace("/disks/", "/snapshots/") + "-s"
    status, _body = standin.call(
        "PUT",
        f"{snap}?api-version=2024-03-02",
        {
            "location": "westeurope",
            "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": disk_id}},
        },
        token=token,
    )
    assert status == 202
    result = run_module("managed_disk_restore", {**base, "snapshot_id": snap, "name": name})
    assert result["failed"] and result["status_code"] == 11, result
    assert "was not made from this snapshot" in result["msg"]


def test_a_restore_polls_through_a_far_retry_after(azurite, standin, tmp_path):
    """An operation answering Retry-After: 99999 is polled every few seconds until it ends,
    not given up at once as if it had outlived wait_timeout."""
    [disk_id] = new_disks(standin, 1, "far")
    snap = disk_id.replace("/disks/", "/snapshots/") + "-s"
    status, _body = standin.call(
        "PUT",
        f"{snap}?api-version=2024-03-02",
        {
            "location": "westeurope",
            "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": disk_id}},
        },
        token=standin.token(),
    )
    assert status == 202
    standin.set_faults({"method": "GET", "path": "/DiskOperations/", "retry_after": 99999})
    try:
        result = run_module(
            "managed_disk_restore",
            {
                "snapshot_id": snap,
                "name": "far-restored",
                "arm_endpoint": standin.arm_endpoint,
                "imds_endpoint": standin.imds_endpoint,
                "ca_path": standin.ca_file,
            },
        )
    finally:
        standin.clear_faults()
    assert result.get("provisioning_state") == "Succeeded", result
    polls = [r for r in standin.requests() if "/DiskOperations/" in r["path"]]
    assert polls and all(r["status"] == 200 for r in polls), polls


def run_with(standin, disk_ids, tmp_path, run_dirs, **extra):
    prepost = write_prepost(tmp_path / "scripts")
    result = run_module(
        "snapshot",
        {**arm_args(standin, disk_ids, **extra), "config_path": str(prepost.config_path),
         "freeze_mounts": [], **run_dirs},
    )  # fmt: skip
    return result, prepost


def health(result) -> int:
    return parse_status_document(Path(result["status_file"]).read_text())["blob"]["health_code"]


@pytest.mark.parametrize(
    ("rule", "per_disk", "code"),
    [
        ({"status": 403, "code": "AuthorizationFailed"}, 15, 76),
        ({"status": 401, "code": "InvalidAuthenticationToken"}, 15, 76),
        ({"status": 409, "code": "Conflict"}, 15, 76),
        ({"status": 429, "code": "TooManyRequests", "retry_after": 3600}, 173, 173),
        ({"lro": "fail", "code": "InternalExecutionError"}, 15, 76),
    ],
    ids=["403", "401", "409", "429-beyond-deadline", "accepted-then-failed"],
)
def test_snapshot_call_failures_are_results(
    azurite, standin, loop_ext4, tmp_path, run_dirs, rule, per_disk, code
):
    disk_ids = new_disks(standin, 1, "fail")
    standin.set_faults({"method": "PUT", "path": "/snapshots/", **rule})
    prepost = write_prepost(tmp_path / "scripts")
    result = run_module(
        "snapshot",
        {**arm_args(standin, disk_ids), "config_path": str(prepost.config_path),
         "freeze_mounts": [loop_ext4.mount_point], **run_dirs},
    )  # fmt: skip
    assert result["status_code"] == code and result["consistency"] == "none", result
    [disk] = result["snapshots"]
    assert not disk["ok"] and disk["status_code"] == per_disk, disk
    assert prepost.entries() == ["pre", "post"]
    assert result["frozen_mounts"] == [loop_ext4.mount_point]
    assert writable_within(loop_ext4.mount_point, 2.0)


def test_throttling_within_the_deadline_is_retried(azurite, standin, loop_ext4, tmp_path, run_dirs):
    disk_ids = new_disks(standin, 1, "throttled")
    standin.set_faults(
        {"method": "PUT", "path": "/snapshots/", "status": 429, "retry_after": 1, "times": 1}
    )
    result, _output = run_with(standin, disk_ids, tmp_path, run_dirs)
    assert result["status_code"] == 0 and result["snapshots"][0]["ok"], result
    puts = [r for r in standin.requests() if r["method"] == "PUT" and "/snapshots/" in r["path"]]
    assert [r["status"] for r in puts[-2:]] == [429, 202]
    assert puts[-1]["time"] - puts[-2]["time"] >= 0.9


def test_one_disk_of_several_failing_is_761(azurite, standin, tmp_path, run_dirs):
    disk_ids = new_disks(standin, 3, "several")
    failing = disk_ids[2].rsplit("/", 1)[1]
    standin.set_faults({"method": "PUT", "path": f"/snapshots/{failing}-", "status": 500})
    result, _output = run_with(standin, disk_ids, tmp_path, run_dirs)
    assert result["status_code"] == 76 and health(result) == 761, result
    assert [s["ok"] for s in result["snapshots"]] == [True, True, False]


def test_one_disk_failing_after_acceptance_is_761(azurite, standin, tmp_path, run_dirs):
    disk_ids = new_disks(standin, 2, "late")
    failing = disk_ids[1].rsplit("/", 1)[1]
    standin.set_faults({"method": "PUT", "path": f"/snapshots/{failing}-", "lro": "fail"})
    result, _output = run_with(standin, disk_ids, tmp_path, run_dirs)
    assert result["status_code"] == 76 and health(result) == 761, result
    late = result["snapshots"][1]
    assert not late["ok"] and late["provisioning_state"] == "Failed", late
    assert "InternalExecutionError" in late["error"]


def test_metadata_service_unreachable_stops_before_the_pre_script(
    azurite, standin, tmp_path, run_dirs
):
    disk_ids = new_disks(standin, 2, "noimds")
    with socket_nobody_listens_on() as port:
        result, prepost = run_with(
            standin, disk_ids, tmp_path, run_dirs, imds_endpoint=f"http://127.0.0.1:{port}"
        )
    assert result["status_code"] == 76, result
    assert [s["status_code"] for s in result["snapshots"]] == [15, 15]
    assert "instance metadata service" in result["snapshots"][0]["error"]
    assert prepost.entries() == []


def test_a_refused_access_token_stops_before_the_pre_script(azurite, standin, tmp_path, run_dirs):
    disk_ids = new_disks(standin, 1, "badtoken")
    token = "eyJ0eXAiOiJKV1QifQ.refused-token-" + "x" * 40
    result, prepost = run_with(standin, disk_ids, tmp_path, run_dirs, access_token=token)
    assert result["status_code"] == 76 and prepost.entries() == [], result
    assert "401" in result["snapshots"][0]["error"]
    everything = str(result) + Path(run_dirs["log_dir"], "extension.log").read_text()
    everything += Path(result["status_file"]).read_text()
    assert token not in everything and token[20:40] not in everything


def test_check_mode_reads_the_disks_and_takes_nothing(azurite, standin, tmp_path, run_dirs):
    disk_ids = new_disks(standin, 1, "check")
    prepost = write_prepost(tmp_path / "scripts")
    result = run_module(
        "snapshot",
        {**arm_args(standin, disk_ids), "config_path": str(prepost.config_path), **run_dirs},
        check_mode=True,
    )
    assert result["changed"] is True and prepost.entries() == [], result
    assert not [r for r in standin.requests() if r["method"] == "PUT" and disk_ids[0] in r["path"]]


def test_bad_managed_disk_input_is_a_clear_error(standin, run_dirs):
    result = run_module("snapshot", {**arm_args(standin, ["/subscriptions/x/disks/y"]), **run_dirs})
    assert result["failed"] and result["status_code"] == 11, result
    assert "managed_disks[0].id" in result["msg"]
    result = run_module(
        "snapshot",
        {**arm_args(standin, []), "arm_endpoint": "http://127.0.0.1:1",
         "managed_disks": [{"id": "/subscriptions/s/resourceGroups/g/providers/"
                            "Microsoft.Compute/disks/d"}], **run_dirs},
    )  # fmt: skip
    assert result["failed"] and "https" in result["msg"], result


class socket_nobody_listens_on:
    """A loopback port that refuses connections (bound, never listening)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()


def test_nothing_is_imported_while_frozen(azurite, standin, loop_ext4, tmp_path, monkeypatch):
    """In process: the managed-disk calls, a 429 retry and a refused disk import nothing."""
    import sys

    from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import (
        _managed_disk,
        _snapshot_run,
    )

    disk_ids = new_disks(standin, 3, "imports")
    refused = disk_ids[2].rsplit("/", 1)[1]
    standin.set_faults(
        {"method": "PUT", "path": "/snapshots/", "status": 429, "retry_after": 0.2, "times": 1},
        {"method": "PUT", "path": f"/snapshots/{refused}-", "status": 409, "code": "Conflict"},
    )
    prepost = write_prepost(tmp_path / "scripts")
    frozen = {"now": False, "imports": []}

    def watch(event, args):
        if frozen["now"] and event == "import":
            frozen["imports"].append(args[0])

    sys.addaudithook(watch)
    guardian = _snapshot_run.Guardian
    real_freeze, real_thaw = guardian.freeze, guardian.thaw

    def freeze(self):
        real_freeze(self)
        frozen["now"] = True

    def thaw(self):
        frozen["now"] = False
        return real_thaw(self)

    monkeypatch.setattr(guardian, "freeze", freeze)
    monkeypatch.setattr(guardian, "thaw", thaw)
    params = arm_args(standin, disk_ids)
    request = _snapshot_run.SnapshotRequest(
        disks=[],
        config_path=str(prepost.config_path),
        freeze_mounts=[loop_ext4.mount_point],
        state_dir=str(tmp_path / "state"),
        log_dir=str(tmp_path / "log"),
        managed_disks=_managed_disk.targets_from_params(params),
        arm=_managed_disk.settings_from_params(params),
    )
    result = _snapshot_run.run_snapshot(request)
    frozen["now"] = False
    assert [s["ok"] for s in result["snapshots"]] == [True, True, False], result
    assert result["frozen_mounts"] == [loop_ext4.mount_point]
    assert frozen["imports"] == []
