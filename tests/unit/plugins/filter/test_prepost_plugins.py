# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The configure_prepost role's plugin resolution and input checks (filter prepost_plugins)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.filter.prepost import FilterModule

check = FilterModule().filters()["prepost_plugins"]

# The role's defaults, as the role hands them over (before ansible-core 2.19 numbers and booleans
# may arrive as text).
DEFAULTS = {
    "pre_script_retries": 0,
    "post_script_retries": "0",
    "timeout_seconds": "30",
    "continue_backup_on_failure": "True",
    "fs_freeze_enabled": True,
    "poll_time_seconds": 3,
}
SINGLE = {
    "name": "ScriptRunner",
    "app_name": "",
    "config_path": "/etc/azure/VMSnapshotScriptPluginConfig.json",
    "pre_script_path": "/etc/azure/pre-script.sh",
    "pre_script_src": "examples/pre-script.sh",
    "pre_script_template": "",
    "pre_script_content": "",
    "pre_script_params": ["--flush", 5],
    "pre_script_retries": "1",
    "post_script_path": "/etc/azure/post-script.sh",
    "post_script_src": "",
    "post_script_template": "",
    "post_script_content": "",
    "post_script_params": [],
    "post_script_retries": 0,
    "timeout_seconds": "60",
    "continue_backup_on_failure": "false",
    "fs_freeze_enabled": "yes",
    "poll_time_seconds": "3",
}


def inputs(**changes) -> dict:
    base = {
        "plugins": [],
        "single_plugin": SINGLE,
        "pre_script_params": SINGLE["pre_script_params"],
        "post_script_params": SINGLE["post_script_params"],
        "support_files": [],
        "config_dir": "/etc/azure",
        "host_config_path": "/etc/azure/VMSnapshotPluginHost.conf",
        "host_timeout_seconds": 1800,
        "defaults": DEFAULTS,
    }
    return {**base, **changes}


def test_single_plugin_is_typed_as_the_extension_reads_it():
    answer = check(inputs())
    assert answer["errors"] == []
    [plugin] = answer["plugins"]
    assert plugin["name"] == "ScriptRunner"
    assert plugin["config_path"] == "/etc/azure/VMSnapshotScriptPluginConfig.json"
    # Key order and types are those of the document the role has always written.
    assert json.dumps(plugin["config"]) == json.dumps(
        {
            "pluginName": "ScriptRunner",
            "preScriptLocation": "/etc/azure/pre-script.sh",
            "postScriptLocation": "/etc/azure/post-script.sh",
            "preScriptParams": ["--flush", "5"],
            "postScriptParams": [],
            "preScriptNoOfRetries": 1,
            "postScriptNoOfRetries": 0,
            "timeoutInSeconds": 60,
            "continueBackupOnFailure": False,
            "fsFreezeEnabled": True,
            "ScriptsExecutionPollTimeSeconds": 3,
        }
    )
    assert plugin["scripts"] == [
        {
            "kind": "pre",
            "path": "/etc/azure/pre-script.sh",
            "sources": {"src": "examples/pre-script.sh"},
        },
        {"kind": "post", "path": "/etc/azure/post-script.sh", "sources": {}},
    ]


def test_several_plugins_take_the_role_defaults_for_what_they_leave_out():
    plugins = [
        {"name": "db", "app_name": "postgres", "pre_script_content": "#!/bin/sh\n", "x": None},
        {"name": "web", "timeout_seconds": 90, "config_path": None},
    ]
    answer = check(inputs(plugins=plugins))
    assert answer["errors"] == []
    db, web = answer["plugins"]
    assert db["config_path"] == "/etc/azure/VMSnapshotScriptPluginConfig-db.json"
    assert db["config"]["appName"] == "postgres"
    assert db["config"]["timeoutInSeconds"] == 30 and db["config"]["continueBackupOnFailure"]
    assert db["scripts"][0] == {
        "kind": "pre",
        "path": "/etc/azure/db-pre-script.sh",
        "sources": {"content": "#!/bin/sh\n"},
    }
    assert "appName" not in web["config"] and web["config"]["timeoutInSeconds"] == 90
    assert web["config_path"] == "/etc/azure/VMSnapshotScriptPluginConfig-web.json"


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"pre_script_params": "--flush now"}, "configure_prepost_pre_script_params"),
        ({"post_script_params": {"a": 1}}, "configure_prepost_post_script_params"),
        ({"support_files": "a.sh"}, "configure_prepost_support_files"),
        ({"plugins": "db"}, "configure_prepost_plugins"),
        (
            {"plugins": [{"name": "db", "post_script_params": "-x"}]},
            "configure_prepost_plugins[0].post_script_params",
        ),
    ],
)
def test_a_string_where_a_list_belongs_is_refused_by_name(changes, name):
    answer = check(inputs(**changes))
    assert answer["plugins"] == []
    assert any(error.startswith(f"{name} must be a list, not ") for error in answer["errors"])


@pytest.mark.parametrize(
    ("plugin", "words"),
    [
        ({"name": "bad name"}, 'Plugin "bad name"'),
        ({"name": "db", "config_path": "relative.json"}, "must be absolute"),
        ({"name": "db", "timeout_seconds": 0}, "(got 0)"),
        ({"name": "db", "timeout_seconds": 1801}, "(got 1801)"),
        ({"name": "db", "poll_time_seconds": 6}, "poll_time_seconds 1-5 (got 6)"),
        ({"name": "db", "pre_script_retries": -1}, "retries 0 or more"),
        ({"name": "db", "pre_script_src": "a", "pre_script_content": "b"}, "at most one of"),
    ],
)
def test_each_plugin_is_checked(plugin, words):
    answer = check(inputs(plugins=[plugin]))
    assert answer["plugins"] == []
    [error] = answer["errors"]
    assert words in error


def test_a_plugin_without_a_name_is_refused():
    assert check(inputs(plugins=[{"app_name": "x"}]))["errors"] == [
        "configure_prepost_plugins[0] must be a dict with a name."
    ]


@pytest.mark.parametrize(
    "changes",
    [
        {"plugins": [{"name": "db"}, {"name": "db", "config_path": "/etc/azure/other.json"}]},
        {
            "plugins": [
                {"name": "db", "pre_script_content": "x"},
                {"name": "web", "pre_script_path": "/etc/azure/db-pre-script.sh",
                 "pre_script_content": "y"},
            ]
        },
        {"support_files": [{"src": "a", "dest": "/etc/azure/VMSnapshotPluginHost.conf"}]},
    ],
    ids=["same-name", "same-script", "host-config"],
)  # fmt: skip
def test_files_and_names_are_each_used_once(changes):
    [error] = check(inputs(**changes))["errors"]
    assert error.startswith("Every plugin needs its own name, config file and deployed script")


@pytest.mark.parametrize("timeout", [0, 1801, "abc"])
def test_plugin_host_timeout_is_checked(timeout):
    [error] = check(inputs(host_timeout_seconds=timeout))["errors"]
    assert error == f"configure_prepost_host_timeout_seconds must be 1-1800 (got {timeout})."
