"""The JSON plugin configuration and the plugin host INI file: schema, defaults, limits, errors."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import _prepost_config
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._prepost_config import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_HOST_CONFIG_PATH,
    MAX_TIMEOUT_SECONDS,
    load_host_config,
    load_plugin_config,
    parse_host_config,
    parse_plugin_config,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

PATH = "/etc/azure/VMSnapshotScriptPluginConfig.json"
# The published template (MicrosoftAzureBackup/VMSnapshotPluginConfig).
TEMPLATE = {
    "pluginName": "ScriptRunner",
    "preScriptLocation": "",
    "postScriptLocation": "",
    "preScriptParams": ["", ""],
    "postScriptParams": ["", ""],
    "preScriptNoOfRetries": 0,
    "postScriptNoOfRetries": 0,
    "timeoutInSeconds": 30,
    "continueBackupOnFailure": True,
    "fsFreezeEnabled": True,
}
MINIMAL = {"preScriptLocation": "/opt/pre.sh", "postScriptLocation": "/opt/post.sh"}
BUNDLED_HOST = b"""[pre_post]
timeoutInSeconds: 1800
numberOfPlugins: 1
pluginName0: ScriptRunner
pluginPath0: /etc/azure
pluginConfigPath0: /etc/azure/VMSnapshotScriptPluginConfig.json
"""


def parse(data, **kwargs):
    text = data if isinstance(data, bytes) else json.dumps(data).encode()
    return parse_plugin_config(text, PATH, **kwargs)


def parse_error(data, **kwargs):
    with pytest.raises(VmSnapshotError) as raised:
        parse(data, **kwargs)
    return raised.value


def test_the_published_template_parses_as_the_reference_reads_it():
    config = parse(TEMPLATE)
    assert config.as_dict() == {
        **TEMPLATE,
        "ScriptsExecutionPollTimeSeconds": 3,
        "appName": None,
    }
    assert config.pre_params == ("", "")  # passed as two empty arguments, like the reference
    assert config.warnings == ()


def test_absent_keys_take_the_reference_code_defaults():
    config = parse(MINIMAL)
    assert (config.plugin_name, config.pre_params, config.post_params) == ("ScriptRunner", (), ())
    assert (config.pre_retries, config.post_retries) == (0, 0)
    assert config.timeout_seconds == 10  # code default; the template says 30
    assert config.continue_on_failure is True
    assert config.fs_freeze_enabled is True
    assert config.poll_seconds == 3
    assert any("'timeoutInSeconds' is not set" in w for w in config.warnings)


def test_everything_set():
    config = parse(
        {
            **MINIMAL,
            "pluginName": "MyApp",
            "preScriptParams": ["--mode", "quiesce"],
            "postScriptParams": ["--mode=thaw"],
            "preScriptNoOfRetries": 2,
            "postScriptNoOfRetries": 1,
            "timeoutInSeconds": 120,
            "continueBackupOnFailure": False,
            "fsFreezeEnabled": False,
            "ScriptsExecutionPollTimeSeconds": 5,
            "appName": "pg",
        }
    )
    assert config.as_dict() == {
        "pluginName": "MyApp",
        "preScriptLocation": "/opt/pre.sh",
        "postScriptLocation": "/opt/post.sh",
        "preScriptParams": ["--mode", "quiesce"],
        "postScriptParams": ["--mode=thaw"],
        "preScriptNoOfRetries": 2,
        "postScriptNoOfRetries": 1,
        "timeoutInSeconds": 120,
        "continueBackupOnFailure": False,
        "fsFreezeEnabled": False,
        "ScriptsExecutionPollTimeSeconds": 5,
        "appName": "pg",
    }
    assert config.warnings == ()


@pytest.mark.parametrize(
    ("changes", "field", "value", "warning"),
    [
        ({"timeoutInSeconds": 3600}, "timeout_seconds", 1800, "above the maximum of 1800"),
        ({"timeoutInSeconds": 1800}, "timeout_seconds", 1800, None),
        ({"timeoutInSeconds": 30.9}, "timeout_seconds", 30, "truncated to 30"),
        ({"ScriptsExecutionPollTimeSeconds": 0}, "poll_seconds", 3, "outside 1-5"),
        ({"ScriptsExecutionPollTimeSeconds": 6}, "poll_seconds", 3, "outside 1-5"),
        ({"ScriptsExecutionPollTimeSeconds": 1}, "poll_seconds", 1, None),
        ({"ScriptsExecutionPollTimeSeconds": 4.7}, "poll_seconds", 4, "truncated to 4"),
        ({"preScriptNoOfRetries": -2}, "pre_retries", 0, "0 is used"),
        ({"postScriptNoOfRetries": 1.5}, "post_retries", 1, "truncated to 1"),
        ({"preScriptParams": [1, 2.5]}, "pre_params", ("1", "2.5"), "passed as the string '1'"),
        ({"postScriptParams": [True]}, "post_params", ("True",), "passed as the string 'True'"),
        ({"timeoutinseconds": 30}, "timeout_seconds", 30, "unknown key 'timeoutinseconds'"),
    ],
)
def test_silent_caps_of_the_reference_become_warnings(changes, field, value, warning):
    config = parse({**MINIMAL, "timeoutInSeconds": 30, **changes})
    assert getattr(config, field) == value
    if warning is None:
        assert config.warnings == ()
    else:
        assert any(warning in w for w in config.warnings), config.warnings


def test_the_plugin_host_timeout_caps_the_script_timeout():
    config = parse({**MINIMAL, "timeoutInSeconds": 600}, host_timeout=120)
    assert config.timeout_seconds == 120
    assert "plugin host's timeout of 120 seconds" in config.warnings[0]


def test_a_duplicate_key_warns_and_the_last_wins():
    text = b'{"preScriptLocation": "/a", "postScriptLocation": "/b", "timeoutInSeconds": 5,'
    text += b' "timeoutInSeconds": 7}'
    config = parse(text)
    assert config.timeout_seconds == 7
    assert any("'timeoutInSeconds' appears more than once" in w for w in config.warnings)


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"timeoutInSeconds": "30"}, ["'timeoutInSeconds'", '"30"', "a string", "a number"]),
        ({"timeoutInSeconds": True}, ["'timeoutInSeconds'", "true", "a boolean"]),
        ({"timeoutInSeconds": None}, ["'timeoutInSeconds'", "null"]),
        ({"timeoutInSeconds": 0}, ["'timeoutInSeconds'", "at least 1"]),
        ({"timeoutInSeconds": -5}, ["'timeoutInSeconds'", "-5", "at least 1"]),
        ({"ScriptsExecutionPollTimeSeconds": "4"}, ["'ScriptsExecutionPollTimeSeconds'", '"4"']),
        ({"preScriptNoOfRetries": "1"}, ["'preScriptNoOfRetries'", '"1"']),
        ({"continueBackupOnFailure": "false"}, ["'continueBackupOnFailure'", "true or false"]),
        ({"fsFreezeEnabled": 1}, ["'fsFreezeEnabled'", "1 (a number)"]),
        ({"preScriptParams": "--all"}, ["'preScriptParams'", "a list of strings"]),
        ({"postScriptParams": [None]}, ["'postScriptParams[0]'", "null"]),
        ({"postScriptParams": ["a", {"b": 1}]}, ["'postScriptParams[1]'", "an object"]),
        ({"preScriptLocation": 5}, ["'preScriptLocation'", "a string"]),
        ({"preScriptLocation": "/opt/a\u0000b"}, ["'preScriptLocation'", "NUL"]),
        ({"pluginName": ["x"]}, ["'pluginName'", "a list"]),
        ({"appName": 3}, ["'appName'", "3 (a number)"]),
    ],
)
def test_wrong_types_are_305_naming_key_and_value(changes, fragments):
    error = parse_error({**MINIMAL, **changes})
    assert error.status == Status.FailedPrepostPluginConfigParsing
    assert PATH in error.message
    for fragment in fragments:
        assert fragment in error.message, error.message


@pytest.mark.parametrize("missing", ["preScriptLocation", "postScriptLocation"])
def test_a_missing_required_key_is_305(missing):
    data = dict(MINIMAL)
    del data[missing]
    error = parse_error(data)
    assert error.status == Status.FailedPrepostPluginConfigParsing
    assert f"required key {missing!r} is missing" in error.message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (b'{"preScriptLocation": "/a",\n "postScriptLocation": }', "line 2 column 24"),
        (b"", "line 1 column 1"),
        (b'{"a": 1,}', "line 1 column 9"),
        (b"[1, 2]", "must hold a JSON object, not a list"),
        (b'"text"', "not a string"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)
def test_invalid_json_is_305_with_line_and_column(text, fragment):
    error = parse_error(text)
    assert error.status == Status.FailedPrepostPluginConfigParsing
    assert fragment in error.message, error.message


def test_a_byte_order_mark_is_accepted():
    assert parse(b"\xef\xbb\xbf" + json.dumps(MINIMAL).encode()).pre_script == "/opt/pre.sh"


def test_not_a_number_is_refused():
    error = parse_error(
        b'{"preScriptLocation": "/a", "postScriptLocation": "/b", "timeoutInSeconds": NaN}'
    )
    assert "finite" in error.message


# Files on disk, read through the permission checks.


def write(path, data, mode=0o600, uid=0):
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    os.chown(path, uid, 0)
    os.chmod(path, mode)
    return str(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
@pytest.mark.parametrize(
    ("data", "mode", "uid", "status"),
    [
        (MINIMAL, 0o600, 0, Status.success),
        (MINIMAL, 0o644, 0, Status.FailedPrepostPluginConfigPermissionError),
        (MINIMAL, 0o700, 0, Status.FailedPrepostPluginConfigPermissionError),
        (MINIMAL, 0o600, 65534, Status.FailedPrepostPluginConfigPermissionError),
        (b"{not json", 0o600, 0, Status.FailedPrepostPluginConfigParsing),
        (
            b" " * (_prepost_config.MAX_FILE_BYTES + 1),
            0o600,
            0,
            Status.FailedPrepostPluginConfigParsing,
        ),
    ],
)
def test_load_plugin_config_from_disk(tmp_path, data, mode, uid, status):
    path = write(tmp_path / "config.json", data, mode, uid)
    try:
        config = load_plugin_config(path)
    except VmSnapshotError as exc:
        assert exc.status == status, exc.message
    else:
        assert status == Status.success
        assert config.path == path
        assert config.pre_script == "/opt/pre.sh"


def test_load_plugin_config_missing_is_316(tmp_path):
    with pytest.raises(VmSnapshotError) as raised:
        load_plugin_config(str(tmp_path / "absent.json"))
    assert raised.value.status == Status.FailedPrepostPluginConfigNotFound


def test_reference_defaults():
    assert DEFAULT_CONFIG_PATH == "/etc/azure/VMSnapshotScriptPluginConfig.json"
    assert DEFAULT_HOST_CONFIG_PATH == "/etc/azure/VMSnapshotPluginHost.conf"
    assert MAX_TIMEOUT_SECONDS == 1800


# The plugin host INI file.

HOST = "/etc/azure/VMSnapshotPluginHost.conf"


def host_error(text):
    with pytest.raises(VmSnapshotError) as raised:
        parse_host_config(text, HOST)
    return raised.value


def test_the_bundled_host_file_is_one_plugin_with_the_full_cap():
    host = parse_host_config(BUNDLED_HOST, HOST)
    assert host.path == HOST
    assert host.timeout_seconds == 1800
    assert host.config_paths == ("/etc/azure/VMSnapshotScriptPluginConfig.json",)
    assert host.warnings == ()


def test_several_plugins_keep_their_order_and_a_lower_cap():
    text = b"""[pre_post]
timeoutInSeconds = 600
numberOfPlugins = 3
pluginName0 = ScriptRunner
pluginConfigPath0 = /etc/azure/b.json
pluginName1 = ScriptRunner
pluginConfigPath1 = /etc/azure/a.json
pluginName2 = ScriptRunner
pluginConfigPath2 = /etc/azure/c.json
"""
    host = parse_host_config(text, HOST)
    assert host.timeout_seconds == 600
    assert host.config_paths == ("/etc/azure/b.json", "/etc/azure/a.json", "/etc/azure/c.json")


@pytest.mark.parametrize(
    ("text", "timeout", "warning"),
    [
        (BUNDLED_HOST.replace(b"1800", b"3600"), 1800, "above the maximum of 1800"),
        (BUNDLED_HOST.replace(b"timeoutInSeconds: 1800\n", b""), 1800, None),
        (BUNDLED_HOST + b"pluginName7: ScriptRunner\n", 1800, "'pluginname7' is ignored"),
    ],
)
def test_host_caps_and_defaults(text, timeout, warning):
    host = parse_host_config(text, HOST)
    assert host.timeout_seconds == timeout
    assert (warning is None) == (host.warnings == ())
    if warning:
        assert warning in host.warnings[0]


@pytest.mark.parametrize(
    ("text", "status", "fragment"),
    [
        (b"timeoutInSeconds: 5\n", 304, "cannot be parsed"),
        (b"[other]\nx = 1\n", 304, "no [pre_post] section"),
        (BUNDLED_HOST.replace(b"1800", b"soon"), 304, "timeoutInSeconds is 'soon'"),
        (BUNDLED_HOST.replace(b"1800", b"0"), 304, "at least 1"),
        (BUNDLED_HOST.replace(b"numberOfPlugins: 1", b"numberOfPlugins: x"), 304, "whole number"),
        (BUNDLED_HOST.replace(b"numberOfPlugins: 1", b"numberOfPlugins: -1"), 304, "0 to 64"),
        (BUNDLED_HOST.replace(b"numberOfPlugins: 1", b"numberOfPlugins: 2"), 304, "plugin 1 needs"),
        (BUNDLED_HOST.replace(b"pluginName0: ScriptRunner", b"pluginName0: evil"), 304, "'evil'"),
        (BUNDLED_HOST + b"numberOfPlugins: 2\n", 304, "already exists"),
        (
            BUNDLED_HOST.replace(b"numberOfPlugins: 1", b"numberOfPlugins: 0"),
            316,
            "lists no plugins",
        ),
        (b"[pre_post]\n", 316, "lists no plugins"),
        (b"\xff[pre_post]\n", 304, "not UTF-8"),
    ],
)
def test_host_errors(text, status, fragment):
    error = host_error(text)
    assert error.status == status
    assert fragment in error.message, error.message
    assert HOST in error.message


def test_a_host_file_overrides_a_non_default_config_path_with_a_warning():
    host = parse_host_config(BUNDLED_HOST, HOST, config_path="/srv/other.json")
    assert host.config_paths == ("/etc/azure/VMSnapshotScriptPluginConfig.json",)
    assert "/srv/other.json is not used" in host.warnings[0]


def test_no_host_file_at_the_default_path_means_the_built_in_default(tmp_path, monkeypatch):
    default = str(tmp_path / "VMSnapshotPluginHost.conf")
    monkeypatch.setattr(_prepost_config, "DEFAULT_HOST_CONFIG_PATH", default)
    host = load_host_config(default, "/srv/config.json")
    assert (host.path, host.timeout_seconds, host.config_paths) == (
        None,
        1800,
        ("/srv/config.json",),
    )


def test_a_named_host_file_that_does_not_exist_is_313(tmp_path):
    with pytest.raises(VmSnapshotError) as raised:
        load_host_config(str(tmp_path / "host.conf"))
    assert raised.value.status == Status.FailedPrepostPluginhostConfigNotFound


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
@pytest.mark.parametrize(
    ("data", "mode", "uid", "status"),
    [
        (BUNDLED_HOST, 0o644, 0, Status.success),
        (BUNDLED_HOST, 0o666, 0, Status.FailedPrepostPluginhostConfigPermissionError),
        (BUNDLED_HOST, 0o644, 65534, Status.FailedPrepostPluginhostConfigPermissionError),
        (b"garbage", 0o644, 0, Status.FailedPrepostPluginhostConfigParsing),
    ],
)
def test_load_host_config_from_disk(tmp_path, data, mode, uid, status):
    path = write(tmp_path / "host.conf", data, mode, uid)
    try:
        host = load_host_config(path)
    except VmSnapshotError as exc:
        assert exc.status == status, exc.message
    else:
        assert status == Status.success
        assert host.path == path


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_a_directory_at_the_default_host_path_is_313(tmp_path, monkeypatch):
    default = tmp_path / "VMSnapshotPluginHost.conf"
    default.mkdir()
    monkeypatch.setattr(_prepost_config, "DEFAULT_HOST_CONFIG_PATH", str(default))
    with pytest.raises(VmSnapshotError) as raised:
        load_host_config(str(default))
    assert raised.value.status == Status.FailedPrepostPluginhostConfigNotFound
