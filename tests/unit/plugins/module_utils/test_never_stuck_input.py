"""Pure parts of issue 16 (input that is not text, numbers, records, sealed scripts, `..`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import (
    _interrupted_run,
    _permissions,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._prepost_config import (
    MAX_RETRIES,
    parse_plugin_config,
    unencodable,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._script_runner import (
    end_group,
    run_script,
    start_time,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._snapshot_options import (
    MAX_SNAPSHOT_TIMEOUT,
    request_from_params,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

NOT_TEXT = ["\ud800", "\udfff", "a\udc00b", "\udc00\ud800"]


@pytest.mark.parametrize("value", NOT_TEXT)
def test_unencodable_finds_a_lone_surrogate_anywhere(value):
    assert unencodable(value) == "a value"
    assert unencodable({"k": [1, {"x": value}]}) == "'k'[1]['x']"
    assert unencodable({value: 1}) is not None
    assert unencodable(["fine", "t\u00e2che \U0001f600", 3, None, {"a": "b"}]) is None


@pytest.mark.parametrize("value", NOT_TEXT)
@pytest.mark.parametrize(
    "key", ["preScriptLocation", "postScriptParams", "pluginName", "appName", "unknownKey"]
)
def test_the_configuration_refuses_strings_that_are_not_text(key, value):
    config = {"preScriptLocation": "/a", "postScriptLocation": "/b", "timeoutInSeconds": 5}
    config[key] = [value] if key.endswith("Params") else value
    with pytest.raises(VmSnapshotError) as caught:
        parse_plugin_config(json.dumps(config).encode(), "/etc/c.json")
    assert caught.value.status == Status.FailedPrepostPluginConfigParsing
    assert "not valid text" in caught.value.message
    caught.value.message.encode("utf-8")  # the message itself is text


@pytest.mark.parametrize("raw", [str(MAX_RETRIES + 1), "1e300", "Infinity", "NaN"])
def test_retries_are_bounded(raw):
    text = '{"preScriptLocation": "/a", "postScriptLocation": "/b", "preScriptNoOfRetries": %s}'
    with pytest.raises(VmSnapshotError) as caught:
        parse_plugin_config((text % raw).encode(), "/etc/c.json")
    assert caught.value.status == Status.FailedPrepostPluginConfigParsing


def test_the_snapshot_timeout_bound_is_documented_in_the_module():
    from ansible_collections.appconsistent.vmsnapshot.plugins.modules import snapshot

    assert MAX_SNAPSHOT_TIMEOUT == 600.0
    assert "snapshot_timeout" in snapshot.DOCUMENTATION


def test_a_record_names_script_processes_and_old_records_still_load(tmp_path):
    run = _interrupted_run.PendingRun(1234, "t", "/c", "/h", [[4321, 99]])
    _interrupted_run.record(str(tmp_path), run)
    assert _interrupted_run.load(str(tmp_path)).scripts == [[4321, 99]]
    (tmp_path / _interrupted_run.PENDING_FILE_NAME).write_text(
        json.dumps({"pid": 1, "task_id": None, "config_path": "/c", "host_config_path": "/h"})
    )
    assert _interrupted_run.load(str(tmp_path)).scripts == []


@pytest.mark.parametrize("scripts", [[[1]], [["1", 2]], [[0, 5]], [[True, 5]], "x"])
def test_a_record_with_bad_script_entries_is_unreadable(tmp_path, scripts):
    (tmp_path / _interrupted_run.PENDING_FILE_NAME).write_text(
        json.dumps({"pid": 1, "task_id": None, "config_path": "/c", "host_config_path": "/h",
                    "scripts": scripts})
    )  # fmt: skip
    with pytest.raises(ValueError):
        _interrupted_run.load(str(tmp_path))


def test_end_group_never_signals_everyone_or_itself_or_a_reused_pid():
    assert end_group(1, 1) is None
    assert end_group(os.getpid(), start_time(os.getpid())) is None
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        started = start_time(sleeper.pid)
        assert end_group(sleeper.pid, started + 1) is None  # another process's start time
        assert sleeper.poll() is None
        assert "ended processes" in end_group(sleeper.pid, started)
        assert sleeper.wait(timeout=5) != 0
    finally:
        sleeper.kill()
        sleeper.wait()


def test_end_group_finds_a_session_whose_leader_is_gone(tmp_path):
    """The leader died (its death signal); a child it left in its session is still found."""
    marker = tmp_path / "child.pid"
    leader = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys; p = subprocess.Popen(['sleep', '30']); "
         f"open({str(marker)!r}, 'w').write(str(p.pid))"],
        start_new_session=True,
    )  # fmt: skip
    started = start_time(leader.pid)
    leader.wait(timeout=10)
    child = int(marker.read_text())
    try:
        assert "ended processes" in end_group(leader.pid, started)
        deadline = time.monotonic() + 5
        while start_time(child) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        alive = start_time(child) is not None
        state = Path(f"/proc/{child}/stat").read_text().split()[2] if alive else "gone"
        assert state in ("gone", "Z")
    finally:
        subprocess.run(["kill", "-9", str(child)], check=False, capture_output=True)


def test_components_keep_dot_dot_for_the_kernel():
    assert _permissions._components("/a/./link/../x") == ["a", "link", "..", "x"]


def test_dot_dot_after_a_link_follows_the_kernel(tmp_path):
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real" / "sub")
    for where in (tmp_path, tmp_path / "real"):
        (where / "x.sh").write_text(f"#!/bin/sh\necho {where.name}\n")
        (where / "x.sh").chmod(0o700)
    with _permissions.check_script(f"{tmp_path}/link/../x.sh", "pre") as checked:
        assert os.fstat(checked.fd).st_ino == (tmp_path / "real" / "x.sh").stat().st_ino


def test_the_sealed_copy_cannot_be_written_and_keeps_the_checked_bytes(tmp_path):
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\necho checked\n")
    script.chmod(0o700)
    with _permissions.check_script(str(script), "pre") as checked:
        assert checked.sealed_fd >= 0
        with pytest.raises(PermissionError):
            os.write(checked.sealed_fd, b"x")
        with open(script, "a") as handle:
            handle.write("echo appended\n")
        script.chmod(0o777)
        assert "mode is now 0777" in checked.recheck()
        result = run_script(checked, [], 10, 0)
        assert result.stdout_tail == "checked\n"
        assert "changed after the check" in result.warning


def test_an_untrusted_filesystem_type_is_refused(tmp_path, monkeypatch):
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o700)
    monkeypatch.setattr(_permissions, "_fs_type", lambda fd: "fuse.bindfs")
    with pytest.raises(VmSnapshotError) as caught:
        _permissions.check_script(str(script), "post")
    assert caught.value.status == Status.FailedPrepostPostScriptPermissionError
    assert "fuse.bindfs" in caught.value.message


def test_a_path_that_is_not_text_is_refused():
    with pytest.raises(VmSnapshotError) as caught:
        _permissions.check_script("/etc/\ud800.sh", "pre")
    assert caught.value.status == Status.FailedPrepostPreScriptNotFound
    caught.value.message.encode("utf-8")


def _params(**overrides):
    from test_snapshot_options import params  # the module's option defaults, in one place

    return params(**overrides)


@pytest.mark.parametrize(
    "value", [1e10, float("inf"), float("-inf"), float("nan"), 0, -1, 600.001, 1e308]
)
def test_snapshot_timeout_outside_its_range_is_refused(value):
    with pytest.raises(VmSnapshotError) as caught:
        request_from_params(_params(snapshot_timeout=value))
    assert caught.value.status == Status.error_parameter
    assert "snapshot_timeout" in caught.value.message


@pytest.mark.parametrize("value", NOT_TEXT)
@pytest.mark.parametrize("option", ["task_id", "config_path", "log_dir", "backup_metadata"])
def test_options_that_are_not_text_are_refused(option, value):
    given = {"job": value} if option == "backup_metadata" else f"/x/{value}"
    with pytest.raises(VmSnapshotError) as caught:
        request_from_params(_params(**{option: given}))
    assert caught.value.status == Status.error_parameter
    assert "not valid text" in caught.value.message
    caught.value.message.encode("utf-8")
