"""What happens inside the frozen window: no import, no write, even when we freeze our own home.

The first test freezes the filesystem that holds the module's Python environment, Ansible's
remote temp directory, the run's log and state directories: any write our code made while frozen
would block until the guardian's deadline, so the run would be slow and its thaw forced.
The second watches the interpreter itself for imports between freeze and thaw.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import _snapshot_run
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._sas import parse_sas_uri
from harness.modules import run_playbook
from harness.scriptset import write_prepost
from snapshot_support import writable_within

pytestmark = pytest.mark.root


def test_freezing_the_modules_own_filesystem_does_not_deadlock(
    azurite, blob_disks, loop_filesystem_factory, tmp_path
):
    home = loop_filesystem_factory("ext4", size_mb=256)
    venv = f"{home.mount_point}/venv"
    subprocess.run([sys.executable, "-m", "venv", "--copies", "--without-pip", venv], check=True)
    disks = blob_disks(2)
    prepost = write_prepost(tmp_path / "scripts")
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        textwrap.dedent(
            """\
            - name: Snapshot with everything of ours on the frozen filesystem
              hosts: localhost
              gather_facts: false
              tasks:
                - name: Snapshot
                  appconsistent.vmsnapshot.snapshot:
                    disks: "{{ disks }}"
                    config_path: "{{ config_path }}"
                    freeze_mounts: ["{{ home }}"]
                    max_freeze_seconds: 20
                    state_dir: "{{ home }}/state"
                    log_dir: "{{ home }}/log"
                  register: taken
                - name: Show the result
                  ansible.builtin.debug:
                    var: taken
                - name: The run finished by itself, well before the deadline
                  ansible.builtin.assert:
                    that:
                      - taken.status_code == 0
                      - not taken.thaw_forced
                      - taken.timings.frozen_window_ms < 5000
            """
        )
    )
    started = time.monotonic()
    done = run_playbook(
        str(playbook),
        extra_vars={
            "disks": [d.sas for d in disks],
            "config_path": str(prepost.config_path),
            "home": home.mount_point,
            "ansible_python_interpreter": f"{venv}/bin/python",
        },
        options=("-c", "local"),
        env={
            "ANSIBLE_REMOTE_TMP": f"{home.mount_point}/ansible-tmp",
            "PYTHONDONTWRITEBYTECODE": "",
        },
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 60
    assert "sig=" not in done.stdout.replace("sig=REDACTED", "")
    log = f"{home.mount_point}/log/extension.log"
    assert "thawed after" in Path(log).read_text()
    assert writable_within(home.mount_point, 2.0)


def test_nothing_is_imported_while_frozen(azurite, blob_disks, loop_ext4, tmp_path, monkeypatch):
    disks = blob_disks(4)
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
    request = _snapshot_run.SnapshotRequest(
        disks=[parse_sas_uri(d.sas, what=d.name) for d in disks],
        config_path=str(prepost.config_path),
        freeze_mounts=[loop_ext4.mount_point],
        state_dir=str(tmp_path / "state"),
        log_dir=str(tmp_path / "log"),
    )
    result = _snapshot_run.run_snapshot(request)
    frozen["now"] = False
    assert result["status_code"] == 0, result
    assert result["frozen_mounts"] == [loop_ext4.mount_point]
    assert frozen["imports"] == []
