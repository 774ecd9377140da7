"""The restore_point playbook on a fleet: Azure's answer per VM, and the VM's own reason why.

Azure itself is NOT reached: the restore points are made by the Resource Manager stand-in
(`tests/harness/armstandin.py` + `armstandin_restore_points.py`, built from the published REST
specification, over HTTPS), which the real `azure-mgmt-compute` SDK talks to from the controller
with a service principal from the environment, as AWX's Azure credential injects it. What the
stand-in says Azure achieved is set per VM, as Azure would decide it from what the VM's extension
reported; the host side is real: three ssh hosts in network namespaces (tests/harness/fleet.py)
with the configuration and scripts rolled out by the `configure` playbook.

- h01: good configuration and scripts: application-consistent.
- h02: its pre-script fails (exit 3); Azure fell back to file-system consistency. The VM has the
  extension's status file and log as the VMSnapshot Linux extension writes them (planted here:
  there is no Azure extension on these hosts); the summary quotes its code and message.
- h03: its pre-script has mode 0755 (drift after the rollout); Azure fell back to file-system
  consistency and `prepost_info` on the VM says 306.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from scan_secrets import scan_text

from harness.armstandin import StandinProcess, start_standin
from harness.armstandin_restore_points import add_vm, set_outcome
from harness.fleet import Fleet, running_fleet

HOSTS = 3
GOOD, BROKEN_SCRIPT, BAD_MODE = "acvs-h01", "acvs-h02", "acvs-h03"
SUB = "00000000-0000-0000-0000-0000000000f1"
RG = "rg-fleet"
SECRET = "fleet-sp-secret-9dQ2vXw7Lk"
PRE_SCRIPT = "etc/azure/pre-script.sh"
EXTENSION = "Microsoft.Azure.RecoveryServices.VMSnapshotLinux"
STATUS_DIR = f"var/lib/waagent/{EXTENSION}-1.0.9184.0/status"
LOG_DIR = f"var/log/azure/{EXTENSION}"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
OUTPUT = Path(__file__).resolve().parents[1] / "output" / "fleet"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, loop devices)"),
    pytest.mark.skipif(shutil.which("sshd", path="/usr/sbin") is None, reason="needs sshd"),
]


def script(phase: str, tail: str = "") -> str:
    return f'#!/bin/sh\necho "{phase} $(date +%s%N)" >> /root/prepost.journal\n{tail}\n'


def extension_status(code: str, message: str, consistency: int) -> str:
    """A local status file as the extension writes it (Azure/azure-linux-extensions, VMBackup
    main/Utils/HandlerUtil.py do_status_report/write_to_status_file): the status document as a
    JSON string in substatus[0].name, the outer status forced to success for ARM VMs."""
    inner_message = json.dumps(
        {
            "messageStr": message,
            "snapshotConsistency": consistency,
            "jobMessage": "",
            "isSizeComputationFailed": False,
        }
    )
    inner = [
        {
            "version": "1.0.9184.0",
            "timestampUTC": "\\/Date(1764633600000)\\/",
            "status": {
                "name": EXTENSION,
                "operation": "Enable",
                "status": "error",
                "code": code,
                "formattedMessage": {"lang": "en-US", "message": inner_message},
                "substatus": [],
            },
        }
    ]
    outer = [
        {
            "version": "1.0.9184.0",
            "timestampUTC": "\\/Date(1764633600000)\\/",
            "status": {
                "name": EXTENSION,
                "operation": "Enable",
                "status": "success",
                "code": code,
                "formattedMessage": {"lang": "en-US", "message": inner_message},
                "substatus": [
                    {
                        "code": "0",
                        "name": json.dumps(inner),
                        "status": "success",
                        "formattedMessage": None,
                    }
                ],
            },
        }
    ]
    return json.dumps(outer)


@pytest.fixture(scope="module")
def fleet3() -> Iterator[Fleet]:
    with running_fleet(HOSTS, azurite=True) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def standin(fleet3: Fleet, tmp_path_factory) -> Iterator[StandinProcess]:
    standin = start_standin(fleet3.azurite, tmp_path_factory.mktemp("rp-standin"))
    yield standin
    standin.stop()


@pytest.fixture(scope="module")
def vars_inventory(fleet3: Fleet, standin: StandinProcess, tmp_path_factory) -> Path:
    for name in fleet3.names:
        disks = [
            standin.add_disk(f"{name}-{d}", subscription=SUB, resource_group=RG)
            for d in ("os", "data")
        ]
        add_vm(standin, name, disks, subscription=SUB, resource_group=RG)
    set_outcome(standin, BROKEN_SCRIPT, consistency="FileSystemConsistent")
    set_outcome(standin, BAD_MODE, consistency="FileSystemConsistent")
    group_vars = {
        "configure_prepost_pre_script_content": script("pre"),
        "configure_prepost_post_script_content": script("post"),
        "configure_prepost_timeout_seconds": 20,
        "restore_point_resource_group": RG,
        "restore_point_arm_endpoint": standin.arm_endpoint,
        "restore_point_authority_host": standin.aad_endpoint,
        "restore_point_ca_path": standin.ca_file,
        "restore_point_timeout": 60,
        "restore_point_keep": 2,
        "snapshot_required_consistency": "application",
    }
    hosts = {BROKEN_SCRIPT: {"configure_prepost_pre_script_content": script("pre", "exit 3")}}
    path = tmp_path_factory.mktemp("rp-vars") / "vars.yml"
    path.write_text(
        yaml.safe_dump({"all": {"children": {"fleet": {"hosts": hosts, "vars": group_vars}}}})
    )
    return path


def run_playbook(
    fleet: Fleet, extra: Path, playbook: str, log: str, *args: str
) -> subprocess.CompletedProcess:
    command = [str(ANSIBLE_PLAYBOOK), "-i", fleet.inventory, "-i", str(extra), *args]
    command += [f"appconsistent.vmsnapshot.{playbook}", "-e", "target_hosts=fleet", "-f", "3"]
    env = {
        **fleet.env(),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_SHOW_CUSTOM_STATS": "1",
        "AZURE_SUBSCRIPTION_ID": SUB,
        "AZURE_TENANT": "fleet-tenant",
        "AZURE_CLIENT_ID": "awx-service-principal",
        "AZURE_SECRET": SECRET,
    }
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=300, check=False
    )
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / f"{log}.log").write_text(done.stdout + done.stderr)
    assert scan_text(done.stdout + done.stderr) == [], "a secret in the playbook's output"
    assert SECRET not in done.stdout + done.stderr
    return done


def custom_stats(done: subprocess.CompletedProcess) -> dict:
    """The set_stats data the default callback prints at the end (what AWX stores as artifacts)."""
    text = done.stdout.split("CUSTOM STATS:", 1)[1]
    start = text.index("{")
    return json.JSONDecoder().raw_decode(text[start:])[0]


@pytest.fixture(scope="module")
def run(fleet3: Fleet, vars_inventory: Path) -> subprocess.CompletedProcess:
    rollout = run_playbook(fleet3, vars_inventory, "configure", "rp-configure")
    assert rollout.returncode == 0, rollout.stdout[-3000:]
    # Drift on h03: its pre-script becomes group/other readable and executable.
    os.chmod(fleet3.host(BAD_MODE).root / PRE_SCRIPT, 0o755)
    # What the extension left on h02 after its pre-script failed (no Azure extension runs here).
    root = fleet3.host(BROKEN_SCRIPT).root
    (root / STATUS_DIR).mkdir(parents=True, exist_ok=True)
    (root / STATUS_DIR / "2.status").write_text(
        extension_status(
            "300", "Pre-script failed with exit code 3. StatusCode.FailedPrepostPreScriptFailed,", 1
        )
    )
    (root / LOG_DIR).mkdir(parents=True, exist_ok=True)
    (root / LOG_DIR / "extension.log").write_text(
        "2026-12-02T00:00:01Z INFO Starting pre-script\n"
        "2026-12-02T00:00:02Z ERROR Pre-script /etc/azure/pre-script.sh exited with 3\n"
        "2026-12-02T00:00:02Z INFO continueBackupOnFailure is true: file-system consistent\n"
    )
    return run_playbook(fleet3, vars_inventory, "restore_point", "rp-run")


def test_summary_says_per_vm_what_azure_achieved_and_why(run, standin):
    stats = custom_stats(run)["restore_point_fleet"]
    hosts = stats["hosts"]
    assert stats["total"] == 3 and stats["ok"] == 1
    assert stats["consistency"] == {"application": 1, "filesystem": 2, "crash": 0, "none": 0}

    good = hosts[GOOD]
    assert good["consistency"] == "application" and good["outcome"] == "ok"
    assert good["snapshots_taken"] == 2
    assert (
        f"/restorePointCollections/{GOOD}-restore-points/restorePoints/rp-"
        in (good["restore_point_id"])
    )

    broken = hosts[BROKEN_SCRIPT]
    assert broken["consistency"] == "filesystem" and broken["outcome"] == "below application"
    assert str(broken["status_code"]) == "300"
    assert "Pre-script failed with exit code 3" in broken["message"]
    assert f"{EXTENSION}-1.0.9184.0/status/2.status" in broken["message"]
    assert "exited with 3" in broken["message"]  # the log excerpt

    bad_mode = hosts[BAD_MODE]
    assert bad_mode["consistency"] == "filesystem"
    assert str(bad_mode["status_code"]) == "306"
    assert bad_mode["status_name"] == "FailedPrepostPreScriptPermissionError"
    assert "0755" in bad_mode["message"]


def test_required_consistency_fails_exactly_the_short_vms(run):
    recap = {
        m[1]: int(m[2]) for m in re.finditer(r"^(acvs-h\d+)\s+:.*failed=(\d+)", run.stdout, re.M)
    }
    assert recap == {GOOD: 0, BROKEN_SCRIPT: 1, BAD_MODE: 1}, run.stdout[-3000:]
    assert run.returncode != 0


def test_azure_state_holds_one_restore_point_per_vm(run, standin):
    token = standin.token()
    for name in (GOOD, BROKEN_SCRIPT, BAD_MODE):
        status, body = standin.call(
            "GET",
            f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/"
            f"restorePointCollections/{name}-restore-points?api-version=2024-11-01"
            "&$expand=restorePoints",
            token=token,
        )
        assert status == 200
        points = body["properties"]["restorePoints"]
        assert len(points) == 1 and points[0]["properties"]["provisioningState"] == "Succeeded"


def test_rerun_with_the_same_name_changes_nothing(run, fleet3, vars_inventory, standin):
    first = custom_stats(run)["restore_point_fleet"]["hosts"]
    name = first[GOOD]["restore_point_id"].rsplit("/", 1)[-1]
    puts_before = [r for r in standin.requests() if r["method"] == "PUT"]
    again = run_playbook(
        fleet3, vars_inventory, "restore_point", "rp-rerun", "-e", f"restore_point_name={name}"
    )
    hosts = custom_stats(again)["restore_point_fleet"]["hosts"]
    assert {h: row["restore_point_id"] for h, row in hosts.items()} == {
        h: row["restore_point_id"] for h, row in first.items()
    }
    assert hosts[BROKEN_SCRIPT]["status_code"] == first[BROKEN_SCRIPT]["status_code"]
    assert [r for r in standin.requests() if r["method"] == "PUT"] == puts_before
    assert re.search(r"^acvs-h01\s+:.*changed=0", again.stdout, re.M), again.stdout[-2000:]
