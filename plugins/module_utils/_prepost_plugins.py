# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""The configure_prepost role's plugins: resolved from its variables and checked, as pure functions.

The filter plugin ``prepost_plugins`` wraps this. In Python rather than Jinja so that the JSON
document keeps its numbers and booleans on every ansible-core version, and so that every check
is unit-tested. The conversions are those the role's Jinja made (``| int``, ``| bool``,
``| string``), so that a configuration already deployed is rendered byte for byte the same.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._prepost_config import (
    MAX_TIMEOUT_SECONDS,
)

PLUGIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_POLL_SECONDS = 5
KINDS = ("pre", "post")
SOURCES = ("src", "template", "content")
# Per plugin, what an entry of configure_prepost_plugins may leave out and the role's own
# variable it then takes (the `defaults` of resolve()).
ROLE_DEFAULTS = (
    "pre_script_retries",
    "post_script_retries",
    "timeout_seconds",
    "continue_backup_on_failure",
    "fs_freeze_enabled",
    "poll_time_seconds",
)
_TRUE = ("y", "yes", "on", "1", "true", "t", "1.0")


class PluginInputError(ValueError):
    """A role input of the wrong shape; the message names the variable."""


def _int(value: Any) -> int:
    """Jinja's ``| int``: a number or a numeric string, else 0."""
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return 0


def _bool(value: Any) -> bool:
    """Ansible's ``| bool``: true, yes, on, 1 (any case) and True are true, all else false."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in _TRUE


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, Mapping))


def _kind_of(value: Any) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a dict"
    return f"a {type(value).__name__}"


def _given(entry: Mapping) -> dict:
    return {key: value for key, value in entry.items() if value is not None}


def resolve(plugins: Any, config_dir: str, defaults: Mapping) -> list[dict]:
    """One dict per plugin: its name, config path, the JSON document as the extension reads it,
    and its two scripts with their non-empty sources (none: the script is managed elsewhere)."""
    if not _is_list(plugins):
        raise PluginInputError(f"configure_prepost_plugins must be a list, not {_kind_of(plugins)}")
    resolved = []
    for index, entry in enumerate(plugins):
        if not isinstance(entry, Mapping) or not entry.get("name"):
            raise PluginInputError(f"configure_prepost_plugins[{index}] must be a dict with a name")
        name = str(entry["name"])
        plugin = {
            "app_name": "",
            "config_path": f"{config_dir}/VMSnapshotScriptPluginConfig-{name}.json",
            "pre_script_path": f"{config_dir}/{name}-pre-script.sh",
            "pre_script_params": [],
            "post_script_path": f"{config_dir}/{name}-post-script.sh",
            "post_script_params": [],
            **{key: defaults.get(key) for key in ROLE_DEFAULTS},
            **_given(entry),
        }
        config = {
            "pluginName": name,
            "preScriptLocation": plugin["pre_script_path"],
            "postScriptLocation": plugin["post_script_path"],
            "preScriptParams": [str(param) for param in plugin["pre_script_params"]],
            "postScriptParams": [str(param) for param in plugin["post_script_params"]],
            "preScriptNoOfRetries": _int(plugin["pre_script_retries"]),
            "postScriptNoOfRetries": _int(plugin["post_script_retries"]),
            "timeoutInSeconds": _int(plugin["timeout_seconds"]),
            "continueBackupOnFailure": _bool(plugin["continue_backup_on_failure"]),
            "fsFreezeEnabled": _bool(plugin["fs_freeze_enabled"]),
            "ScriptsExecutionPollTimeSeconds": _int(plugin["poll_time_seconds"]),
        }
        if plugin["app_name"]:
            config["appName"] = plugin["app_name"]
        scripts = [
            {
                "kind": kind,
                "path": plugin[f"{kind}_script_path"],
                "sources": {
                    source: plugin[f"{kind}_script_{source}"]
                    for source in SOURCES
                    if plugin.get(f"{kind}_script_{source}")
                },
            }
            for kind in KINDS
        ]
        resolved.append(
            {
                "name": name,
                "config_path": plugin["config_path"],
                "config": config,
                "scripts": scripts,
            }
        )
    return resolved


def _shape_errors(inputs: Mapping) -> list[str]:
    """A string where a list belongs: the argument spec splits it on commas and does not change
    the variable, so "--flush now" would otherwise become one-character params."""
    lists = {
        "configure_prepost_pre_script_params": inputs.get("pre_script_params"),
        "configure_prepost_post_script_params": inputs.get("post_script_params"),
        "configure_prepost_support_files": inputs.get("support_files"),
        "configure_prepost_plugins": inputs.get("plugins"),
    }
    plugins = inputs.get("plugins")
    for index, plugin in enumerate(plugins if _is_list(plugins) else []):
        if not isinstance(plugin, Mapping):
            continue
        for key in ("pre_script_params", "post_script_params"):
            if plugin.get(key) is not None:
                lists[f"configure_prepost_plugins[{index}].{key}"] = plugin[key]
    return [
        f"{name} must be a list, not {_kind_of(value)} {json.dumps(value, default=str)} (a survey"
        ' or -e key=value gives a string: pass a YAML or JSON list, e.g. ["--flush", "now"]).'
        for name, value in lists.items()
        if not _is_list(value)
    ]


def _plugin_errors(plugin: Mapping) -> list[str]:
    config = plugin["config"]
    timeout = config["timeoutInSeconds"]
    poll = config["ScriptsExecutionPollTimeSeconds"]
    paths = [plugin["config_path"], *(script["path"] for script in plugin["scripts"])]
    if (
        PLUGIN_NAME.match(plugin["name"])
        and all(isinstance(path, str) and os.path.isabs(path) for path in paths)
        and 1 <= timeout <= MAX_TIMEOUT_SECONDS
        and 1 <= poll <= MAX_POLL_SECONDS
        and config["preScriptNoOfRetries"] >= 0
        and config["postScriptNoOfRetries"] >= 0
        and all(len(script["sources"]) <= 1 for script in plugin["scripts"])
    ):
        return []
    return [
        f'Plugin {json.dumps(plugin["name"])}: the name must be letters, digits, ".", "_" or'
        ' "-"; the config and script paths must be absolute; timeout_seconds must be'
        f" 1-{MAX_TIMEOUT_SECONDS} (got {timeout}); poll_time_seconds 1-{MAX_POLL_SECONDS}"
        f" (got {poll}); retries 0 or more; and each script takes at most one of src, template"
        " and content."
    ]


def check(inputs: Mapping) -> dict:
    """The role's plugins resolved, and every problem with its input as sentences naming the
    variable (`errors`, empty when all is well; then `plugins` is empty too).

    `inputs`: `plugins` (configure_prepost_plugins), `single_plugin` (the plugin made of the
    configure_prepost_* variables, used when `plugins` is empty), `pre_script_params` and
    `post_script_params` (the role's), `support_files`, `config_dir`, `host_config_path`,
    `host_timeout_seconds` and `defaults` (the role's values of ROLE_DEFAULTS).
    """
    errors = _shape_errors(inputs)
    if errors:
        return {"plugins": [], "errors": errors}
    chosen = inputs["plugins"] or [inputs["single_plugin"]]
    try:
        plugins = resolve(chosen, inputs["config_dir"], inputs.get("defaults") or {})
    except PluginInputError as exc:
        return {"plugins": [], "errors": [f"{exc}."]}
    for plugin in plugins:
        errors += _plugin_errors(plugin)
    host_config = inputs["host_config_path"]
    names = [plugin["name"] for plugin in plugins]
    files = [str(plugin["config_path"]) for plugin in plugins]
    files += [str(s["path"]) for plugin in plugins for s in plugin["scripts"] if s["sources"]]
    files += [
        str(entry.get("dest")) for entry in inputs["support_files"] if isinstance(entry, Mapping)
    ]
    if len(set(names)) != len(names) or len(set(files)) != len(files) or host_config in files:
        errors.append(
            "Every plugin needs its own name, config file and deployed script files, and every"
            f" support file its own dest, none of them {host_config} (names: {', '.join(names)})."
        )
    host_timeout = inputs.get("host_timeout_seconds")
    if not 1 <= _int(host_timeout) <= MAX_TIMEOUT_SECONDS:
        errors.append(
            f"configure_prepost_host_timeout_seconds must be 1-{MAX_TIMEOUT_SECONDS}"
            f" (got {host_timeout})."
        )
    return {"plugins": [] if errors else plugins, "errors": errors}
