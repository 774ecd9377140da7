"""The collection's playbooks on one ansible-core version, end to end on localhost.

The `versions` stage of scripts/test.sh runs this file once per ansible-core minor the collection
claims (meta/runtime.yml), with VMSNAPSHOT_ANSIBLE_BIN naming that version's bin directory; by
default it is the checkout's .venv. Real parts: a loop-mounted ext4 made for the test (the only
filesystem frozen), page blobs in Azurite, the example pre/post-scripts, ansible-playbook.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import ansible_runner
import pytest
from scan_secrets import scan_text

from harness.modules import COLLECTIONS, REPO_ROOT

BIN = Path(os.environ.get("VMSNAPSHOT_ANSIBLE_BIN", REPO_ROOT / ".venv" / "bin"))


def ansible_playbook(
    playbook: str, extra_vars: dict, tmp_path: Path, *options: str
) -> subprocess.CompletedProcess:
    vars_file = tmp_path / f"vars-{len(list(tmp_path.glob('vars-*')))}.json"
    vars_file.write_text(json.dumps(extra_vars))
    command = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", playbook]
    command += ["-e", f"@{vars_file}", *options]
    env = dict(
        os.environ,
        LANG="C.UTF-8",
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
        ANSIBLE_PYTHON_INTERPRETER=str(BIN / "python"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_SHOW_CUSTOM_STATS="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
    )
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=300, check=False
    )


def snapshot_when_host_is_free(extra_vars: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    """The snapshot playbook; again while another test's run holds this machine's host lock."""
    deadline = time.monotonic() + 180
    while True:
        done = ansible_playbook("appconsistent.vmsnapshot.snapshot", extra_vars, tmp_path)
        if "holds the host lock" not in done.stdout or time.monotonic() > deadline:
            return done
        time.sleep(3)


def output(done: subprocess.CompletedProcess) -> str:
    return f"rc={done.returncode}\n{done.stdout}\n--- stderr ---\n{done.stderr}"


def test_ansible_core_version_is_the_one_asked_for():
    done = subprocess.run(
        [str(BIN / "ansible"), "--version"], capture_output=True, text=True, check=True
    )
    wanted = os.environ.get("VMSNAPSHOT_ANSIBLE_CORE")
    if wanted:
        assert f"[core {wanted}" in done.stdout, done.stdout


def test_configure_preflight_snapshot_restore(tmp_path, azurite, blob_disks, loop_ext4):
    config_dir = tmp_path / "etc-azure"
    state_file = tmp_path / "example.quiesced"
    common = {"target_hosts": "localhost", "vmsnapshot_become": False}
    configure = {
        **common,
        "configure_prepost_config_dir": str(config_dir),
        "configure_prepost_pre_script_src": "examples/pre-script.sh",
        "configure_prepost_post_script_src": "examples/post-script.sh",
        "configure_prepost_pre_script_params": [str(state_file)],
        "configure_prepost_post_script_params": [str(state_file)],
    }
    done = ansible_playbook("appconsistent.vmsnapshot.configure", configure, tmp_path)
    assert done.returncode == 0, output(done)
    assert (config_dir / "VMSnapshotScriptPluginConfig.json").is_file()

    # The same path for the preflight and the snapshot, as the playbooks' docs ask.
    paths = {"snapshot_config_path": str(config_dir / "VMSnapshotScriptPluginConfig.json")}
    done = ansible_playbook(
        "appconsistent.vmsnapshot.preflight",
        {**common, **paths, "snapshot_preflight_required_consistency": "application"},
        tmp_path,
    )
    assert done.returncode == 0, output(done)
    assert "1 of 1 hosts would get an application-consistent snapshot" in done.stdout, output(done)

    disks = blob_disks(2)
    Path(loop_ext4.mount_point, "data").write_bytes(b"before")
    snapshot = {
        **common,
        **paths,
        # One comma-separated string, as a survey or a credential injector delivers it.
        "snapshot_disks": ",".join(disk.sas for disk in disks),
        "snapshot_freeze_mounts": [loop_ext4.mount_point],
        "snapshot_max_freeze_seconds": 20,
        "snapshot_log_dir": str(tmp_path / "log"),
        "snapshot_state_dir": str(tmp_path / "state"),
        "snapshot_required_consistency": "application",
    }
    done = snapshot_when_host_is_free(snapshot, tmp_path)
    assert done.returncode == 0, output(done)
    assert "1 of 1 hosts ok; application 1, filesystem 0, crash 0, none 0" in done.stdout, output(
        done
    )
    for disk in disks:
        assert disk.sas.split("?", 1)[1] not in done.stdout
    # The blob service's own word: one application-consistent snapshot per disk, and the
    # summary published for AWX names it.
    taken = []
    for disk in disks:
        snapshots = azurite.list_snapshots(disk.container, disk.name)
        assert len(snapshots) == 1, snapshots
        assert snapshots[0]["metadata"]["appconsistentLevel"] == "application"
        assert (
            azurite.read_snapshot(disk.container, disk.name, snapshots[0]["snapshot"])
            == disk.content
        )
        taken.append(snapshots[0]["snapshot"])
        assert f"?snapshot={snapshots[0]['snapshot']}" in done.stdout, output(done)
    assert Path(loop_ext4.mount_point, "data").read_bytes() == b"before"
    assert not state_file.exists()  # the post-script ran

    destination = azurite.blob_sas(disks[0].container, "restored.vhd", permissions="rcw")
    source = azurite.blob_sas(disks[0].container, disks[0].name, permissions="r", snapshot=taken[0])
    restore = {
        "target_hosts": "localhost",
        "restore_disks": [{"snapshot_uri": source, "destination_uri": destination}],
        "restore_wait_timeout": 60,
    }
    done = ansible_playbook("appconsistent.vmsnapshot.restore", restore, tmp_path)
    assert done.returncode == 0, output(done)
    assert azurite.read_blob(disks[0].container, "restored.vhd") == disks[0].content


@pytest.mark.parametrize(
    ("extra_vars", "names"),
    [
        ({"target_hosts": "databsaes"}, "target_hosts"),
        ({"target_hosts": "localhost", "vmsnapshot_serial": "abc"}, "vmsnapshot_serial"),
        (
            {
                "target_hosts": "localhost",
                "vmsnapshot_become": False,
                "snapshot_freeze_mounts": "/mnt/a",
            },
            "snapshot_freeze_mounts",
        ),
        (
            {
                "target_hosts": "localhost",
                "vmsnapshot_become": False,
                "snapshot_disks": '["https://a/b?sig=x"',
            },
            "snapshot_disks",
        ),
    ],
    ids=["no-host", "serial", "string-for-list", "bad-json"],
)
def test_survey_typos_fail_the_job_naming_the_variable(tmp_path, extra_vars, names):
    done = ansible_playbook("appconsistent.vmsnapshot.snapshot", extra_vars, tmp_path)
    text = output(done)
    assert done.returncode != 0, text
    assert names in text, text
    assert "Unexpected Exception" not in text and "Traceback" not in text, text
    # Stopped before anything could change: the module never ran.
    assert "Take the application-consistent snapshot] *" not in done.stdout, text
    if names.startswith("snapshot_"):
        # The role's input check failed: the summary for AWX is still published, with the reason.
        assert (
            "CUSTOM STATS" in done.stdout and f"{names}" in done.stdout.split("CUSTOM STATS")[1]
        ), text
    else:
        assert "PLAY [Take application-consistent snapshots]" not in done.stdout, text
        # The job's own variables: the job still publishes why it stopped.
        stats = done.stdout.split("CUSTOM STATS")[1]
        assert "vmsnapshot_job_error" in stats and names in stats, text
    assert "sig=x" not in text


def run_job(private: Path, extravars: dict) -> tuple:
    """The snapshot playbook as AWX runs it (ansible-runner, extra vars in env/extravars, -vvv)
    with this version's ansible-playbook; (runner, stdout, everything it wrote)."""
    (private / "project").mkdir(parents=True)
    (private / "env").mkdir()
    (private / "env" / "extravars").write_text(json.dumps(extravars))
    (private / "project" / "snapshot.yml").write_text(
        "- name: Snapshot\n  ansible.builtin.import_playbook: appconsistent.vmsnapshot.snapshot\n"
    )
    envvars = {
        "PATH": f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_PYTHON_INTERPRETER": str(BIN / "python"),
        "ANSIBLE_SHOW_CUSTOM_STATS": "1",
        "LANG": "C.UTF-8",
    }
    deadline = time.monotonic() + 180
    while True:
        runner = ansible_runner.run(
            private_data_dir=str(private),
            playbook="snapshot.yml",
            inventory="localhost ansible_connection=local",
            envvars=envvars,
            verbosity=3,
            quiet=True,
            ident=f"job-{time.monotonic_ns()}",
        )
        stdout = runner.stdout.read()
        # Another test's run may hold this machine's host lock for a moment.
        if "holds the host lock" not in stdout or time.monotonic() > deadline:
            break
        time.sleep(3)
    written = [stdout, json.dumps(list(runner.events))]
    written += [
        path.read_text(errors="replace")
        for path in (private / "artifacts").rglob("*")
        if path.is_file()
    ]
    return runner, stdout, "\n".join(written)


def test_snapshot_playbook_with_managed_disks_and_a_token(tmp_path, arm_standin, loop_ext4):
    """The role hands managed disks and its identity options to the module: incremental snapshots
    on the Resource Manager stand-in (Azure itself is not reached), with the token an AWX
    credential would inject; in no job event, artifact or -vvv output is the token."""
    tag = f"v{time.monotonic_ns()}"
    disk_ids = [
        arm_standin.add_disk(f"{tag}-{name}", size_bytes=64 * 1024) for name in ("os", "data")
    ]
    token = arm_standin.token("awx-credential")
    snapshot = {
        "target_hosts": "localhost",
        "vmsnapshot_become": False,
        # No configuration: file-system consistent (313), which this job requires.
        "snapshot_config_path": str(tmp_path / "absent.json"),
        # One of each shape: a resource ID and a dict with its own tags.
        "snapshot_managed_disks": [disk_ids[0], {"id": disk_ids[1], "tags": {"tier": "data"}}],
        "snapshot_managed_snapshot_name": "{disk}-{task_id}",
        "snapshot_managed_snapshot_tags": {"job": "versions"},
        "snapshot_task_id": tag,
        "snapshot_access_token": token,
        "snapshot_arm_endpoint": arm_standin.arm_endpoint,
        "snapshot_imds_endpoint": arm_standin.imds_endpoint,
        "snapshot_arm_ca_path": arm_standin.ca_file,
        "snapshot_freeze_mounts": [loop_ext4.mount_point],
        "snapshot_max_freeze_seconds": 20,
        "snapshot_log_dir": str(tmp_path / "log"),
        "snapshot_state_dir": str(tmp_path / "state"),
        "snapshot_required_consistency": "filesystem",
    }
    runner, stdout, written = run_job(tmp_path / "job", snapshot)
    text = f"rc={runner.rc}\n{stdout}"
    assert runner.rc == 0, text
    wanted = os.environ.get("VMSNAPSHOT_ANSIBLE_CORE")
    assert not wanted or f"[core {wanted}" in stdout, text  # -vvv names the version that ran
    assert "1 of 1 hosts ok; application 0, filesystem 1, crash 0, none 0" in stdout, text
    # The token, its claims or its signature, in no event, artifact or output (the header is the
    # same in every token).
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in stdout
    assert scan_text(written, known=[token, *token.split(".")[1:]]) == []
    # The token was used, not the VM's identity, and Resource Manager holds both snapshots.
    assert not any("/metadata/identity" in r["path"] for r in arm_standin.requests())
    for disk_id in disk_ids:
        snapshot_id = f"{disk_id.replace('/disks/', '/snapshots/')}-{tag}"
        resource = arm_standin.backing(snapshot_id)["resource"]
        assert resource["properties"]["incremental"] is True
        assert resource["tags"]["job"] == "versions"
        assert resource["tags"]["appconsistentLevel"] == "filesystem"
        # The summary for AWX names the snapshot, for a restore node of the workflow.
        assert snapshot_id in stdout.split("CUSTOM STATS")[1], text
    data_snapshot = f"{disk_ids[1].replace('/disks/', '/snapshots/')}-{tag}"
    assert arm_standin.backing(data_snapshot)["resource"]["tags"]["tier"] == "data"


def test_restore_playbook_publishes_why_when_its_input_is_refused(tmp_path):
    done = ansible_playbook(
        "appconsistent.vmsnapshot.restore",
        {"target_hosts": "localhost", "restore_disks": "https://a/b?sig=x"},
        tmp_path,
    )
    text = output(done)
    assert done.returncode != 0, text
    stats = done.stdout.split("CUSTOM STATS", 1)[1]
    assert "restore_errors" in stats and "restore_disks must be a list" in stats, text
    assert "Restore each disk from its snapshot] *" not in done.stdout, text
    assert "sig=x" not in text


def test_restore_point_playbook_publishes_why_when_its_input_is_refused(tmp_path):
    done = ansible_playbook(
        "appconsistent.vmsnapshot.restore_point",
        {
            "target_hosts": "localhost",
            "vmsnapshot_become": False,
            "restore_point_resource_group": "rg",
            "snapshot_required_consistency": "app",
        },
        tmp_path,
    )
    text = output(done)
    assert done.returncode != 0, text
    stats = done.stdout.split("CUSTOM STATS", 1)[1]
    assert (
        "restore_point_fleet" in stats and "snapshot_required_consistency must be one of" in stats
    )
    # Azure was never asked: the module's task was skipped.
    assert re.search(
        r"Create the restore point of this VM \(on the controller\)\] \*+\nskipping: ", done.stdout
    ), text


def test_configure_prepost_preflight_entry_point(tmp_path):
    """The configure_prepost role's own preflight: its table and verdict come from the filters."""
    playbook = tmp_path / "preflight.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.include_role:\n"
        "        name: appconsistent.vmsnapshot.configure_prepost\n"
        "        tasks_from: preflight\n"
    )
    nothing = {"configure_prepost_config_dir": str(tmp_path / "etc-azure")}
    done = ansible_playbook(str(playbook), nothing, tmp_path)
    assert done.returncode == 0, output(done)
    assert "0 of 1 hosts would get an application-consistent snapshot" in done.stdout, output(done)
    assert re.search(
        r"localhost\s+filesystem\s+316\s+FailedPrepostPluginConfigNotFound", done.stdout
    )

    strict = {**nothing, "configure_prepost_preflight_required_consistency": "application"}
    done = ansible_playbook(str(playbook), strict, tmp_path)
    assert done.returncode != 0, output(done)
    assert (
        "The next snapshot would be filesystem-consistent, short of the required application"
        in (done.stdout)
    ), output(done)


SIGS = ["c2lnbmF0dXJlLXplcm8tbmV2ZXItbGVhaw", "c2lnbmF0dXJlLW9uZS1uZXZlci1sZWFr"]
FAKE_DISKS = [
    f"https://acct.blob.core.windows.net/vhds/disk{i}.vhd?sv=2021-12-02&sr=b&sp=rw&sig={sig}"
    for i, sig in enumerate(SIGS)
]


@pytest.mark.parametrize(
    "shape",
    [FAKE_DISKS, ",".join(FAKE_DISKS), json.dumps(FAKE_DISKS), json.dumps(FAKE_DISKS)[:-1]],
    ids=["list", "comma-separated", "json-string", "broken-json"],
)
def test_snapshot_module_disks_in_every_shape_show_no_signature_at_vvv(tmp_path, shape):
    """A direct caller of the module (no role): whatever shape `disks` has, -vvv echoes none of
    it. max_freeze_seconds 0 stops the run right after `disks` was read; nothing is contacted."""
    playbook = tmp_path / "direct.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - appconsistent.vmsnapshot.snapshot:\n"
        "        disks: '{{ shape }}'\n"
        "        max_freeze_seconds: 0\n"
        "        log_dir: '{{ dir }}/log'\n"
        "        state_dir: '{{ dir }}/state'\n"
    )
    done = ansible_playbook(str(playbook), {"shape": shape, "dir": str(tmp_path)}, tmp_path, "-vvv")
    text = output(done)
    assert done.returncode != 0, text
    assert "max_freeze_seconds is 0" in text or "disks starts with '['" in text, text
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in done.stdout, text
    for sig in SIGS:
        assert sig not in text
