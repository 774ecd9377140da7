"""The fault suite's invariants for managed disks (the Resource Manager stand-in, not Azure).

SIGKILL of the module while frozen on a managed-disk snapshot call that hangs: the filesystem is
writable again within the deadline plus one second, and the next run takes its snapshot. No
bearer token (given as `access_token`, or issued by the metadata service) appears in any output,
log, status document or error, at `-vvv` too, even when the server echoes it back.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from fault_support import ModuleProcess, run_module_process, wait_for
from system.snapshot_support import writable_within

from harness.modules import run_playbook
from harness.scriptset import write_prepost

DEADLINE = 2  # max_freeze_seconds of these runs
BOUND = DEADLINE + 1.0


@pytest.fixture
def standin(arm_standin):
    arm_standin.clear_faults()
    yield arm_standin
    arm_standin.clear_faults()


def managed_args(standin, disk_id: str, tmp_path: Path, **extra) -> dict:
    prepost = write_prepost(tmp_path / "scripts")
    return {
        "managed_disks": [{"id": disk_id}],
        "arm_endpoint": standin.arm_endpoint,
        "imds_endpoint": standin.imds_endpoint,
        "ca_path": standin.ca_file,
        "config_path": str(prepost.config_path),
        "state_dir": str(tmp_path / "state"),
        "log_dir": str(tmp_path / "logs"),
        "max_freeze_seconds": DEADLINE,
        **extra,
    }


def snapshot_puts(standin, disk_name: str) -> list[dict]:
    return [
        r
        for r in standin.requests()
        if r["method"] == "PUT" and f"/snapshots/{disk_name}-" in r["path"]
    ]


def test_sigkill_while_frozen_on_a_hanging_snapshot_call_thaws(standin, loop_ext4, tmp_path):
    name = f"killed-{time.monotonic_ns()}"
    disk_id = standin.add_disk(name, size_bytes=64 * 1024)
    standin.set_faults({"method": "PUT", "path": f"/snapshots/{name}-", "delay": 30, "times": 1})
    args = managed_args(standin, disk_id, tmp_path, freeze_mounts=[loop_ext4.mount_point])
    run = ModuleProcess(args, tmp_path)
    try:
        assert wait_for(lambda: bool(snapshot_puts(standin, name)), 30), "no snapshot call came"
        run.kill()
        killed = time.monotonic()
        assert writable_within(loop_ext4.mount_point, BOUND), "still frozen after the deadline"
        assert time.monotonic() - killed <= BOUND + 0.5
    finally:
        run.kill()
        run.finish(30)
    result, _output = run_module_process(
        {**args, "freeze_mounts": [loop_ext4.mount_point]}, tmp_path, timeout=120
    )
    assert result and result["status_code"] == 0, result


def _spellings(token: str) -> list[str]:
    """The token and pieces of it, raw and base64: none may appear anywhere."""
    pieces = [token, token[-40:], token[10:40]]
    return [*pieces, base64.b64encode(token.encode()).decode()[4:40]]


def _scan(texts: dict, token: str) -> list[str]:
    return [
        f"{where}: {piece[:8]}…"
        for where, text in texts.items()
        for piece in _spellings(token)
        if piece in text
    ]


def test_no_token_in_any_output_even_echoed_back(standin, loop_ext4, tmp_path):
    name = f"secret-{time.monotonic_ns()}"
    disk_id = standin.add_disk(name, size_bytes=64 * 1024)
    token = standin.token("awx-credential")
    # A server that echoes the token in its error (as a misbehaving proxy might).
    standin.set_faults(
        {
            "method": "PUT",
            "path": f"/snapshots/{name}-",
            "status": 403,
            "code": "AuthorizationFailed",
            "message": f"The client with token Bearer {token} ({token}) has no authorization.",
        }
    )
    args = managed_args(
        standin, disk_id, tmp_path, access_token=token, freeze_mounts=[loop_ext4.mount_point]
    )
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
        "    - appconsistent.vmsnapshot.snapshot: '{{ snapshot_args }}'\n"
        "      register: run\n    - ansible.builtin.debug:\n        var: run\n"
    )
    done = run_playbook(str(playbook), extra_vars={"snapshot_args": args}, options=("-vvv",))
    assert "AuthorizationFailed" in done.stdout, done.stdout[-3000:]
    assert writable_within(loop_ext4.mount_point, 2.0)
    texts = {"stdout": done.stdout, "stderr": done.stderr}
    for path in [*Path(tmp_path, "logs").rglob("*"), *Path(tmp_path, "state").rglob("*")]:
        if path.is_file():
            texts[str(path.relative_to(tmp_path))] = path.read_text(errors="replace")
    assert len(texts) >= 4, sorted(texts)
    assert not _scan(texts, token)


def test_no_imds_token_in_any_output(standin, loop_ext4, tmp_path):
    name = f"imds-{time.monotonic_ns()}"
    disk_id = standin.add_disk(name, size_bytes=64 * 1024)
    before = set(standin.issued_tokens())
    args = managed_args(standin, disk_id, tmp_path, freeze_mounts=[loop_ext4.mount_point])
    result, process = run_module_process(args, tmp_path)
    assert result and result["status_code"] == 0, result
    [token] = set(standin.issued_tokens()) - before  # the one IMDS gave this run
    texts = {"stdout": process.stdout, "stderr": process.stderr}
    for path in Path(tmp_path).rglob("*"):
        if path.is_file():
            texts[str(path.relative_to(tmp_path))] = path.read_text(errors="replace")
    assert not _scan(texts, token)
