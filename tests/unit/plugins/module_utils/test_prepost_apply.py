"""Validate, plan and apply a host's pre/post-script state on a real temp tree (as root)."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._prepost_apply import (
    ApplyError,
    apply,
    diffs,
    meets,
    plan,
    summary,
    validate,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")

SCRIPT = b"#!/bin/sh\nexit 0\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def params(root, **extra):
    azure = f"{root}/etc/azure"
    config = {
        "pluginName": "ScriptRunner",
        "preScriptLocation": f"{root}/opt/capside/azure/pre.sh",
        "postScriptLocation": f"{azure}/post.sh",
        "preScriptParams": [],
        "postScriptParams": [],
        "timeoutInSeconds": 30,
        "continueBackupOnFailure": True,
        "fsFreezeEnabled": True,
    }
    base = {
        "state": "present",
        "config_dir": azure,
        "config_dir_mode": "0755",
        "configs": [
            {"path": f"{azure}/VMSnapshotScriptPluginConfig.json", "content": json.dumps(config)}
        ],
        "host_config": None,
        "scripts": [
            {"path": config["preScriptLocation"], "content": b64(SCRIPT), "mode": "0700"},
            {"path": config["postScriptLocation"], "content": b64(SCRIPT), "mode": "0700"},
        ],
        "support_files": [
            {
                "path": f"{root}/opt/capside/azure/helper.bin",
                "content": b64(b"\0\1\2"),
                "mode": "0700",
            }
        ],
    }
    base.update(extra)
    return base


def run(p, stale=None):
    dir_mode, desired = validate(p)
    todo = plan(dir_mode, p["config_dir"], desired, p["state"], stale)
    apply(todo)
    return todo


def mode_uid(path):
    info = os.lstat(path)
    return stat.S_IMODE(info.st_mode), info.st_uid


def test_first_rollout_creates_every_directory_and_file_then_nothing(tmp_path):
    p = params(tmp_path)
    todo = run(p)
    assert todo.changed
    assert (tmp_path / "opt/capside/azure").is_dir()
    assert mode_uid(tmp_path / "opt/capside/azure") == (0o755, 0)
    assert mode_uid(tmp_path / "etc/azure") == (0o755, 0)
    assert mode_uid(tmp_path / "etc/azure/VMSnapshotScriptPluginConfig.json") == (0o600, 0)
    assert mode_uid(tmp_path / "opt/capside/azure/pre.sh") == (0o700, 0)
    assert (tmp_path / "opt/capside/azure/helper.bin").read_bytes() == b"\0\1\2"
    assert not plan(*validate(p)[:1], p["config_dir"], validate(p)[1]).changed


def test_drift_in_mode_owner_and_content_is_planned_shown_and_repaired(tmp_path):
    p = params(tmp_path)
    run(p)
    post = tmp_path / "etc/azure/post.sh"
    os.chmod(post, 0o755)
    pre = tmp_path / "opt/capside/azure/pre.sh"
    os.chown(pre, 4242, 0)
    config = tmp_path / "etc/azure/VMSnapshotScriptPluginConfig.json"
    os.chmod(config, 0o600)
    config.write_text(config.read_text().replace("30", "31"))
    dir_mode, desired = validate(p)
    todo = plan(dir_mode, p["config_dir"], desired)
    shown = diffs(todo)
    assert any(
        d.get("before", {}) == {"path": str(post), "mode": "0755", "owner": 0, "group": 0}
        for d in shown
    )
    assert any(
        isinstance(d.get("before"), str) and "31" in d["before"] and "30" in d["after"]
        for d in shown
    )
    assert len(summary(todo)) == 3
    apply(todo)
    assert mode_uid(post) == (0o700, 0) and mode_uid(pre) == (0o700, 0)
    assert '"timeoutInSeconds": 30' in config.read_text()
    assert not plan(dir_mode, p["config_dir"], desired).changed


def test_binary_content_shows_a_checksum_line(tmp_path):
    p = params(tmp_path)
    dir_mode, desired = validate(p)
    shown = diffs(plan(dir_mode, p["config_dir"], desired))
    helper = [d for d in shown if d.get("after_header", "").endswith("helper.bin")]
    assert helper and helper[0]["after"].startswith("# binary or large content: 3 bytes, sha256 ")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"config_dir_mode": "0777"}, "config_dir_mode"),
        ({"config_dir_mode": "rwx"}, "octal"),
        ({"config_dir": "etc/azure"}, "absolute"),
        (
            {"scripts": [{"path": "/x/../pre.sh", "content": b64(SCRIPT), "mode": "0700"}]},
            "normalised",
        ),
        (
            {"scripts": [{"path": "/opt/pre.sh", "content": "not base64!", "mode": "0700"}]},
            "base64",
        ),
        (
            {"scripts": [{"path": "/opt/pre.sh", "content": b64(SCRIPT), "mode": "0755"}]},
            "not allowed",
        ),
        ({"scripts": [{"path": "/opt/pre.sh", "content": b64(SCRIPT), "mode": "04700"}]}, "setuid"),
    ],
)
def test_bad_input_is_refused_before_anything_changes(tmp_path, change, words):
    with pytest.raises(ApplyError, match=words):
        validate(params(tmp_path, **change))
    assert not (tmp_path / "etc").exists()


def test_a_config_the_snapshot_would_refuse_is_refused(tmp_path):
    p = params(tmp_path)
    bad = json.loads(p["configs"][0]["content"])
    bad["preScriptParams"] = "--flush now"
    p["configs"][0]["content"] = json.dumps(bad)
    with pytest.raises(ApplyError, match="preScriptParams"):
        validate(p)


def test_the_same_path_twice_is_refused(tmp_path):
    p = params(tmp_path)
    p["support_files"][0]["path"] = p["scripts"][0]["path"]
    with pytest.raises(ApplyError, match="twice"):
        validate(p)


def test_a_symlink_at_a_file_path_is_refused_and_its_target_untouched(tmp_path):
    p = params(tmp_path)
    run(p)
    target = tmp_path / "victim"
    target.write_text("keep")
    post = tmp_path / "etc/azure/post.sh"
    post.unlink()
    post.symlink_to(target)
    with pytest.raises(ApplyError, match="symbolic link"):
        run(p)
    assert target.read_text() == "keep" and post.is_symlink()


def test_a_directory_symlink_owned_by_another_user_is_refused(tmp_path):
    p = params(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "opt").symlink_to(tmp_path / "real")
    os.chown(tmp_path / "opt", 4242, 4242, follow_symlinks=False)
    with pytest.raises(ApplyError, match="symbolic link"):
        run(p)
    assert not any((tmp_path / "real").iterdir())


def test_absent_removes_only_the_given_files_and_a_marked_host_file(tmp_path):
    p = params(tmp_path)
    run(p)
    host = tmp_path / "etc/azure/VMSnapshotPluginHost.conf"
    host.write_text("# marker\n[pre_post]\n")
    todo = run(dict(p, state="absent"), stale=(str(host), b"# marker"))
    assert not host.exists()
    assert not (tmp_path / "etc/azure/post.sh").exists()
    assert not (tmp_path / "etc/azure/VMSnapshotScriptPluginConfig.json").exists()
    assert (tmp_path / "etc/azure").is_dir()
    assert "removed " + str(host) in summary(todo)


def test_a_host_file_without_the_marker_stays(tmp_path):
    p = params(tmp_path)
    run(p)
    host = tmp_path / "etc/azure/VMSnapshotPluginHost.conf"
    host.write_text("[pre_post]\n")
    run(p, stale=(str(host), b"# marker"))
    assert host.exists()


def test_meets_ranks_the_levels():
    assert meets("application", "filesystem") is True
    assert meets("filesystem", "application") is False
    assert meets("none", None) is None
