"""The snapshot module's `disks` option in every survey shape: what Ansible echoes of the module's
arguments (`invocation.module_args`, in every job event and at -vvv) never holds a signature."""

from __future__ import annotations

import json
import os

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.appconsistent.vmsnapshot.plugins.modules import snapshot

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the module checks for root first")

SIGS = ["c2lnbmF0dXJlLXplcm8tbmV2ZXItbGVhaw", "c2lnbmF0dXJlLW9uZS1uZXZlci1sZWFr"]
DISKS = [
    f"https://acct.blob.core.windows.net/vhds/disk{i}.vhd?sv=2021-12-02&sr=b&sp=rw&sig={sig}"
    for i, sig in enumerate(SIGS)
]


@pytest.mark.parametrize(
    ("shape", "refusal"),
    [
        (DISKS, "max_freeze_seconds is 0"),
        (",".join(DISKS), "max_freeze_seconds is 0"),
        (json.dumps(DISKS), "max_freeze_seconds is 0"),
        (json.dumps(DISKS)[:-1], "disks starts with '[' but is not a JSON list"),
    ],
    ids=["list", "comma-separated", "json-string", "broken-json"],
)
def test_no_shape_of_disks_shows_in_module_args(shape, refusal, tmp_path, capsys):
    # max_freeze_seconds 0 fails the run after `disks` was read, before anything else runs.
    args = {
        "disks": shape,
        "max_freeze_seconds": 0,
        "log_dir": str(tmp_path / "log"),
        "state_dir": str(tmp_path / "state"),
    }
    with patch_module_args(args), pytest.raises(SystemExit):
        snapshot.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    assert result["failed"] and result["status_code"] == 11, result
    echoed = json.dumps(result["invocation"]["module_args"]["disks"])
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in echoed and "blob.core" not in echoed
    for sig in SIGS:
        assert sig not in out
    assert refusal in result["msg"]
