"""prepost_info main(): read-only, codes for broken configurations, never a traceback."""

from __future__ import annotations

import json
import os

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.appconsistent.vmsnapshot.plugins.modules import prepost_info

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")


def put(path, text, mode, uid=0):
    path.write_text(text)
    os.chown(path, uid, 0)
    os.chmod(path, mode)
    return str(path)


def run(capsys, check_mode=False, **args):
    args["_ansible_check_mode"] = check_mode
    with patch_module_args(args), pytest.raises(SystemExit) as raised:
        prepost_info.main()
    result = json.loads(capsys.readouterr().out)
    result["rc"] = raised.value.code
    return result


def warnings_of(result):
    """Warning texts; ansible-core 2.19 sends them as structured summaries."""
    return [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings", [])]


@pytest.fixture
def paths(tmp_path):
    """A configuration and two scripts that pass every check; the scripts leave a marker."""
    marker = tmp_path / "ran"
    script = f"#!/bin/sh\necho ran >> {marker}\n"
    pre = put(tmp_path / "pre.sh", script, 0o700)
    post = put(tmp_path / "post.sh", script, 0o700)
    config = {
        "pluginName": "ScriptRunner",
        "preScriptLocation": pre,
        "postScriptLocation": post,
        "preScriptParams": ["--quiesce"],
        "timeoutInSeconds": 30,
        "continueBackupOnFailure": False,
        "fsFreezeEnabled": True,
    }
    return {
        "dir": tmp_path,
        "marker": marker,
        "config_path": put(tmp_path / "config.json", json.dumps(config), 0o600),
        "host": str(tmp_path / "absent-host.conf"),
        "data": config,
    }


@pytest.fixture
def default_host(paths, monkeypatch):
    """Point the default host path at a file that does not exist (the usual case)."""
    from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import (
        _prepost_config,
    )

    monkeypatch.setattr(_prepost_config, "DEFAULT_HOST_CONFIG_PATH", paths["host"])
    return paths["host"]


@pytest.mark.parametrize("check_mode", [False, True])
def test_a_good_configuration(capsys, paths, default_host, check_mode):
    result = run(
        capsys, check_mode, config_path=paths["config_path"], host_config_path=default_host
    )
    assert result["rc"] == 0
    assert result["changed"] is False
    assert result["configured"] is True
    assert (result["status_code"], result["status_name"]) == (1, "success")
    assert result["status_aliases"] == []
    assert result["consistency"] == "application"
    assert result["config"]["preScriptParams"] == ["--quiesce"]
    assert result["config"]["ScriptsExecutionPollTimeSeconds"] == 3
    assert result["config"]["continueBackupOnFailure"] is False
    assert len(result["plugins"]) == 1
    assert result["plugins"][0]["config_path"] == paths["config_path"]
    assert "passed every check" in result["message"]
    assert not paths["marker"].exists(), "prepost_info must never run a script"


def test_not_configured_is_316_and_filesystem(capsys, paths, default_host):
    result = run(
        capsys, config_path=str(paths["dir"] / "absent.json"), host_config_path=default_host
    )
    assert result["rc"] == 0 and not result.get("failed")
    assert (result["status_code"], result["configured"], result["consistency"]) == (
        316,
        False,
        "filesystem",
    )
    assert result["config"] == {}


@pytest.mark.parametrize(
    ("breakage", "code", "aliases", "consistency"),
    [
        ("pre missing", 302, ["Pre-ScriptNotFound"], "none"),
        ("post mode", 307, ["InsufficientPermissionforPost-Script"], "none"),
        ("config mode", 317, [], "filesystem"),
        ("config json", 305, ["IncorrectJSONConfigFile"], "filesystem"),
        ("config type", 305, ["IncorrectJSONConfigFile"], "filesystem"),
        ("host missing", 313, [], "filesystem"),
        ("host mode", 314, [], "filesystem"),
        ("host parse", 304, ["IncorrectPluginhostFile"], "filesystem"),
    ],
)
def test_broken_configurations_are_results_not_failures(
    capsys, paths, default_host, breakage, code, aliases, consistency
):
    host = default_host
    directory = paths["dir"]
    if breakage == "pre missing":
        os.unlink(paths["data"]["preScriptLocation"])
    elif breakage == "post mode":
        os.chmod(paths["data"]["postScriptLocation"], 0o755)
    elif breakage == "config mode":
        os.chmod(paths["config_path"], 0o640)
    elif breakage == "config json":
        put(directory / "config.json", "{", 0o600)
    elif breakage == "config type":
        data = dict(paths["data"], timeoutInSeconds="30")
        put(directory / "config.json", json.dumps(data), 0o600)
    elif breakage == "host missing":
        host = str(directory / "named-host.conf")
    elif breakage == "host mode":
        host = put(directory / "host.conf", "[pre_post]\nnumberOfPlugins: 0\n", 0o666)
    elif breakage == "host parse":
        host = put(directory / "host.conf", "[pre_post\n", 0o644)
    result = run(capsys, config_path=paths["config_path"], host_config_path=host)
    assert result["rc"] == 0, result
    assert "failed" not in result and "exception" not in result
    assert result["changed"] is False
    assert result["status_code"] == code
    assert result["status_aliases"] == aliases
    assert result["consistency"] == consistency
    assert result["message"]
    assert not paths["marker"].exists()


def test_warnings_reach_the_result(capsys, paths, default_host):
    data = dict(paths["data"], timeoutInSeconds=4000, typo=1)
    put(paths["dir"] / "config.json", json.dumps(data), 0o600)
    result = run(capsys, config_path=paths["config_path"], host_config_path=default_host)
    assert result["status_code"] == 1
    assert result["config"]["timeoutInSeconds"] == 1800
    assert any("above the maximum of 1800" in w for w in warnings_of(result))
    assert any("'typo'" in w for w in warnings_of(result))


def test_several_plugins_are_listed(capsys, paths):
    host = put(
        paths["dir"] / "host.conf",
        "[pre_post]\nnumberOfPlugins: 2\n"
        f"pluginName0: ScriptRunner\npluginConfigPath0: {paths['config_path']}\n"
        f"pluginName1: ScriptRunner\npluginConfigPath1: {paths['config_path']}\n",
        0o644,
    )
    result = run(capsys, config_path="/unused.json", host_config_path=host)
    assert result["status_code"] == 1
    assert [p["config_path"] for p in result["plugins"]] == [paths["config_path"]] * 2
