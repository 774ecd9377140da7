"""The host lock squatted by an unprivileged user.

The host lock is an abstract unix socket name (`_host_lock.HOST_LOCK_NAME`): it has no owner or
mode, so any local user could bind it first and every snapshot run was refused as "another run
holds the host lock" - backups stopped by `nobody`. A holder that is not root is not a run: the
run takes its place with a root-only file lock in /run and goes on; two runs under the squat
still exclude each other.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from fault_support import ModuleProcess, run_module_process, snapshot_args, summary

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._host_lock import (
    HOST_LOCK_NAME,
    SQUATTED_LOCK_PATH,
)
from harness.faultproxy import Rule, is_snapshot

DEADLINE = 3
ONE_PAIR = ["pre-start", "pre-end", "post-start", "post-end"]
SQUAT = (
    "import socket, sys, time\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
    "s.bind(bytes.fromhex(sys.argv[1]))\n"
    "print('bound', flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def squatter():
    """`nobody` holding the host lock's name in this network namespace."""
    process = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
         SQUAT, HOST_LOCK_NAME.hex()],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout.readline().strip() == "bound"
    yield process
    process.kill()
    process.wait()


def test_a_squatted_host_lock_does_not_stop_the_backup(
    figures, app, meter, blob_disks, azurite, loop_ext4, run_dirs, tmp_path, squatter
):
    scenario = figures.scenario(
        "host-lock-squatted", "concurrency",
        "an unprivileged process holding the host lock's name", deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case("nobody binds the name first") as case:
        disk = blob_disks(1)[0]
        args = snapshot_args([disk], app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
        result, process = run_module_process(args, tmp_path)
        case.module_output(process)
        case.frozen(meter, process.started, DEADLINE + 1.0)
        case.check(result and result.get("status_code") == 0, summary(result))
        case.check(app.entries() == ONE_PAIR, f"scripts: {app.entries()}")
        case.check(len(azurite.list_snapshots(disk.container, disk.name)) == 1, "no snapshot")
        case.check(squatter.poll() is None, "the squatter is gone (the test proves nothing)")


def test_two_runs_under_a_squatted_host_lock_exclude_each_other(
    figures, make_app, meter, proxy, proxied_disks, loop_ext4, tmp_path, squatter
):
    scenario = figures.scenario(
        "host-lock-squatted", "concurrency",
        "an unprivileged process holding the host lock's name", deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case("two runs, separate state directories") as case:
        proxy.rules[:] = [Rule(is_snapshot, delay=1.0)]
        apps = [make_app("app-a"), make_app("app-b")]
        runs = []
        for index, each in enumerate(apps):
            dirs = {"state_dir": str(tmp_path / f"state{index}"),
                    "log_dir": str(tmp_path / f"logs{index}")}  # fmt: skip
            args = snapshot_args(
                proxied_disks(1), each, dirs, [loop_ext4], max_freeze_seconds=DEADLINE
            )
            runs.append(ModuleProcess(args, tmp_path))
            time.sleep(0.2)
        results = [run.finish() for run in runs]
        for index, run in enumerate(runs):
            case.module_output(run, f"run{index}")
        codes = sorted(str((r or {}).get("status_code")) for r in results)
        locked = [r for r in results if r and SQUATTED_LOCK_PATH in r.get("msg", "")]
        case.check(codes == ["0", "2"] and len(locked) == 1, f"results: {codes} {results}")
        case.check(sorted(len(each.entries()) for each in apps) == [0, 4], "both ran scripts")
