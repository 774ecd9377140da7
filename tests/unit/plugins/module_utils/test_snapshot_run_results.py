"""Every result of a run comes from one builder: check mode reports what a real run reports
before it acts (the precheck's warnings included), and only a real run writes anything."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import (
    _prepost_config,
    _snapshot_run,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._consistency import (
    APPLICATION,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._host_lock import HostLock

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: scripts must be root's")

UNKNOWN_KEY = "the unknown key 'timeoutinseconds' is ignored"


def put(path, text: str, mode: int) -> str:
    path.write_text(text)
    os.chown(path, 0, 0)
    os.chmod(path, mode)
    return str(path)


@pytest.fixture
def request_with_unknown_key(tmp_path, monkeypatch):
    """A run of no disk whose one plugin configuration has a misspelt key (a warning)."""
    site = tmp_path / "app"
    site.mkdir(mode=0o755)
    os.chmod(site, 0o755)
    script = "#!/bin/sh\nexit 0\n"
    config = {
        "pluginName": "ScriptRunner",
        "preScriptLocation": put(site / "pre.sh", script, 0o700),
        "postScriptLocation": put(site / "post.sh", script, 0o700),
        "timeoutInSeconds": 30,
        "timeoutinseconds": 30,
        # Nothing to freeze: the real run below must not touch this machine's filesystems.
        "fsFreezeEnabled": False,
    }
    config_path = put(site / "config.json", json.dumps(config), 0o600)
    monkeypatch.setattr(
        _prepost_config, "DEFAULT_HOST_CONFIG_PATH", str(tmp_path / "VMSnapshotPluginHost.conf")
    )
    # A lock name of this test's own: real runs on this machine hold the real one.
    name = b"\0appconsistent.vmsnapshot.test-" + str(tmp_path).encode()
    monkeypatch.setattr(_snapshot_run, "HostLock", lambda state_dir: HostLock(state_dir, name))
    return _snapshot_run.SnapshotRequest(
        disks=[],
        config_path=config_path,
        host_config_path=str(tmp_path / "VMSnapshotPluginHost.conf"),
        state_dir=str(tmp_path / "state"),
        log_dir=str(tmp_path / "log"),
    )


def test_check_mode_keeps_the_precheck_warnings(request_with_unknown_key, tmp_path):
    checked = _snapshot_run.run_snapshot(request_with_unknown_key, check_mode=True)
    assert any(UNKNOWN_KEY in warning for warning in checked["warnings"]), checked["warnings"]
    assert checked["consistency"] == APPLICATION
    assert checked["changed"] is True
    assert "status_file" not in checked
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "log").exists()

    real = _snapshot_run.run_snapshot(request_with_unknown_key)
    assert real["warnings"] == checked["warnings"]
    assert os.path.exists(real["status_file"])
    assert set(real) == set(checked) | {"status_file"}
