"""The playbooks through ansible-runner, as AWX runs them: no secret in any job event or artifact.

AWX keeps every job event (with `invocation.module_args` for module tasks) in its database and
shows it; the events, stdout and `artifacts/<ident>/job_events/*.json` of each run are scanned for
every signature and objectStr handed out, in every spelling (tests/scan_secrets.py), for each
shape a secret can arrive in: a list, one comma-separated string, a JSON string, a dict, from
extra vars, from host vars, or as the per-host mapping an AWX credential injects. Real parts: a
loop-mounted ext4 (the only filesystem frozen), page blobs in Azurite, ansible-playbook -vvv.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import ansible_runner
import pytest
import yaml
from scan_secrets import scan_text

from harness.modules import COLLECTIONS, REPO_ROOT, VENV_BIN

# The example project's wrapper playbook, which the job template points at (docs/awx.md).
WRAPPER = REPO_ROOT / "docs" / "awx-project" / "snapshot.yml"


def b64json(value) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def signature(uri: str) -> str:
    return next(part[4:] for part in uri.split("?", 1)[1].split("&") if part.startswith("sig="))


def run_job(tmp_path: Path, extravars: dict, hostvars: dict, label: str):
    """One job as AWX runs it: a project with a wrapper playbook, an inventory, extra vars, -vvv."""
    private = tmp_path / label
    (private / "project").mkdir(parents=True)
    (private / "inventory").mkdir()
    # As AWX does: the extra vars (a credential's injected ones too) in env/extravars, which
    # ansible-playbook reads with -e @file, never on its command line (kept as an artifact).
    (private / "env").mkdir()
    (private / "env" / "extravars").write_text(json.dumps(extravars))
    (private / "project" / "snapshot.yml").write_text(WRAPPER.read_text())
    inventory = {"all": {"hosts": {"localhost": {"ansible_connection": "local", **hostvars}}}}
    (private / "inventory" / "hosts.yml").write_text(yaml.safe_dump(inventory))
    envvars = {
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_PYTHON_INTERPRETER": str(VENV_BIN / "python"),
        "LANG": "C.UTF-8",
        "PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
    }
    deadline = time.monotonic() + 180
    while True:
        runner = ansible_runner.run(
            private_data_dir=str(private),
            playbook="snapshot.yml",
            envvars=envvars,
            verbosity=3,
            quiet=True,
            ident=f"{label}-{int(time.monotonic() * 1000)}",
        )
        stdout = runner.stdout.read()
        # Another test's run may hold this machine's host lock for a moment.
        if "holds the host lock" not in stdout or time.monotonic() > deadline:
            return runner, stdout
        time.sleep(3)


def everything_written(private: Path, runner, stdout: str) -> str:
    parts = [stdout, json.dumps(list(runner.events))]
    parts += [
        path.read_text(errors="replace")
        for path in (private / "artifacts").rglob("*")
        if path.is_file()
    ]
    return "\n".join(parts)


@pytest.fixture
def job(tmp_path, azurite, blob_disks, loop_ext4):
    disks = blob_disks(2)
    common = {
        "target_hosts": "localhost",
        "vmsnapshot_become": False,
        "snapshot_freeze_mounts": [loop_ext4.mount_point],
        "snapshot_log_dir": str(tmp_path / "log"),
        "snapshot_state_dir": str(tmp_path / "state"),
        "snapshot_config_path": str(tmp_path / "no-scripts.json"),
        "snapshot_required_consistency": "crash",
    }
    return disks, common


def _shapes(uris: list[str]) -> dict:
    protected = {"objectStr": b64json({"blobSASUri": uris})}
    public = {
        "commandToExecute": "snapshot",
        "objectStr": b64json({"backupMetadata": [{"Key": "job", "Value": "awx"}]}),
    }
    return {
        "extra-vars-list": ({"snapshot_disks": uris}, {}),
        "extra-vars-comma-string": ({"snapshot_disks": ",".join(uris)}, {}),
        "extra-vars-json-string": ({"snapshot_disks": json.dumps(uris)}, {}),
        "host-vars-comma-string": ({}, {"snapshot_disks": ",".join(uris)}),
        "host-vars-json-string": ({}, {"snapshot_disks": json.dumps(uris)}),
        "credential-per-host-mapping": (
            {"snapshot_disks_by_host": json.dumps({"localhost": uris})},
            {},
        ),
        "protected-settings-dict": (
            {"snapshot_settings": public, "snapshot_protected_settings": protected},
            {},
        ),
        "protected-settings-json-string": (
            {
                "snapshot_settings": json.dumps(public),
                "snapshot_protected_settings": json.dumps(protected),
            },
            {},
        ),
    }


SHAPES = list(_shapes(["a"]).keys())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("outcome", ["ok", "failed"])
def test_no_secret_in_any_job_event(tmp_path, job, azurite, shape, outcome):
    disks, common = job
    uris = [disk.sas for disk in disks]
    if outcome == "failed":
        # A disk that does not exist: the module fails with the URIs in its arguments.
        uris[1] = azurite.blob_sas(disks[1].container, "missing.vhd")
    extravars, hostvars = _shapes(uris)[shape]
    runner, stdout = run_job(tmp_path, {**common, **extravars}, hostvars, f"{shape}-{outcome}")
    text = everything_written(tmp_path / f"{shape}-{outcome}", runner, stdout)

    known = [signature(uri) for uri in uris] + [b64json({"blobSASUri": uris})]
    leaks = scan_text(text, known=known)
    assert not leaks, leaks[:5]
    # The job did what it was asked, and the module saw the disks (not an input error).
    assert runner.rc == (0 if outcome == "ok" else 2), stdout[-3000:]
    names = [event.get("event") for event in runner.events]
    assert ("runner_on_ok" in names) if outcome == "ok" else ("runner_on_failed" in names)
    taken = len(azurite.list_snapshots(disks[0].container, disks[0].name))
    # Azurite's word: the good disk has its snapshot, unless the missing one stopped the run first.
    assert taken == (1 if outcome == "ok" else 0), stdout[-3000:]
    # The summary published for AWX says what happened, with the real per-disk error.
    stats = next(e for e in runner.events if e.get("event") == "playbook_on_stats")
    row = stats["event_data"]["artifact_data"]["snapshot_fleet"]["hosts"]["localhost"]
    if outcome == "ok":
        assert row["outcome"] == "ok" and row["snapshots_taken"] == 2, row
        assert all("?snapshot=" in disk["snapshot_url"] for disk in row["snapshots"]), row
    else:
        assert row["outcome"] != "ok" and "disk 1:" in row["reason"], row
