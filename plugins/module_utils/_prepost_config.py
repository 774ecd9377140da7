# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""The two configuration files of the pre/post-script framework: schema, defaults, limits.

``VMSnapshotScriptPluginConfig.json`` (one per plugin) and the optional plugin host INI file
``VMSnapshotPluginHost.conf``, which lists the plugin configurations and lowers the time cap.
Both are read from descriptors that passed the permission checks of ``_permissions``.

Where the reference silently caps or ignores a value we do the same and add a warning. Where
it fails by accident we fail on purpose, with 305 and a message naming the key and the value:

* numbers must be JSON numbers (a fraction is truncated with a warning); a quoted number, a
  boolean or null is 305 (the reference gives 304 for a quoted ``timeoutInSeconds`` and
  accepts a quoted ``ScriptsExecutionPollTimeSeconds``);
* ``timeoutInSeconds`` below 1 is 305 (the reference then times every script out);
* the two flags must be JSON booleans (the reference treats ``"false"`` as true);
* parameters must be a list of strings; numbers and booleans are converted as the reference
  does (``str()``) with a warning; null, lists and objects are 305.
* every string and key must be valid text: JSON can spell a lone surrogate (``"\\ud800"``)
  that no file name, argument or log line can carry; it is 305 (304 in the host file) before
  anything runs;
* retries are at most ``MAX_RETRIES``; more is 305 (all attempts share the script's timeout
  anyway).

The host INI file is parsed with ``configparser`` only: plugins are configuration paths, never
Python modules, so ``pluginName<i>`` must be ``ScriptRunner`` and ``pluginPath<i>`` is unused.
"""

from __future__ import annotations

import configparser
import json
import math
import os.path
from dataclasses import dataclass
from typing import Any

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._permissions import (
    ROLE_CONFIG,
    ROLE_HOST_CONFIG,
    open_checked,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

DEFAULT_CONFIG_PATH = "/etc/azure/VMSnapshotScriptPluginConfig.json"
DEFAULT_HOST_CONFIG_PATH = "/etc/azure/VMSnapshotPluginHost.conf"
MAX_TIMEOUT_SECONDS = 1800
DEFAULT_TIMEOUT_SECONDS = 10
DEFAULT_POLL_SECONDS = 3
PLUGIN_NAME = "ScriptRunner"
MAX_PLUGINS = 64
MAX_FILE_BYTES = 1024 * 1024
MAX_RETRIES = 100

_PARSING = Status.FailedPrepostPluginConfigParsing
_HOST_PARSING = Status.FailedPrepostPluginhostConfigParsing
_KNOWN_KEYS = (
    "pluginName",
    "preScriptLocation",
    "postScriptLocation",
    "preScriptParams",
    "postScriptParams",
    "preScriptNoOfRetries",
    "postScriptNoOfRetries",
    "timeoutInSeconds",
    "continueBackupOnFailure",
    "fsFreezeEnabled",
    "ScriptsExecutionPollTimeSeconds",
    "appName",
)


@dataclass(frozen=True)
class ScriptPluginConfig:
    """One VMSnapshotScriptPluginConfig.json with defaults applied and limits enforced."""

    path: str
    plugin_name: str
    pre_script: str
    post_script: str
    pre_params: tuple[str, ...]
    post_params: tuple[str, ...]
    pre_retries: int
    post_retries: int
    timeout_seconds: int
    continue_on_failure: bool
    fs_freeze_enabled: bool
    poll_seconds: int
    app_name: str | None
    warnings: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """The effective configuration under the reference's key names."""
        return {
            "pluginName": self.plugin_name,
            "preScriptLocation": self.pre_script,
            "postScriptLocation": self.post_script,
            "preScriptParams": list(self.pre_params),
            "postScriptParams": list(self.post_params),
            "preScriptNoOfRetries": self.pre_retries,
            "postScriptNoOfRetries": self.post_retries,
            "timeoutInSeconds": self.timeout_seconds,
            "continueBackupOnFailure": self.continue_on_failure,
            "fsFreezeEnabled": self.fs_freeze_enabled,
            "ScriptsExecutionPollTimeSeconds": self.poll_seconds,
            "appName": self.app_name,
        }


@dataclass(frozen=True)
class HostConfig:
    """The plugin host settings; `path` is None when no host file exists (built-in default)."""

    path: str | None
    timeout_seconds: int
    config_paths: tuple[str, ...]
    warnings: tuple[str, ...]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _bad(path: str, key: str, value: Any, expected: str) -> VmSnapshotError:
    shown = json.dumps(value)
    if len(shown) > 80:
        shown = f"{shown[:77]}..."
    return VmSnapshotError(
        _PARSING, f"In {path}, {key!r} is {shown} ({_json_type(value)}); {expected}."
    )


class _Reader:
    """Typed access to the keys of one configuration object, collecting warnings."""

    def __init__(self, path: str, data: dict[str, Any], warnings: list[str]) -> None:
        self.path = path
        self.data = data
        self.warnings = warnings

    def string(self, key: str, default: str | None = None, required: bool = False) -> Any:
        if key not in self.data:
            if required:
                raise VmSnapshotError(
                    _PARSING, f"In {self.path}, the required key {key!r} is missing."
                )
            return default
        value = self.data[key]
        if not isinstance(value, str):
            raise _bad(self.path, key, value, "it must be a string")
        if "\x00" in value:
            raise _bad(self.path, key, value, "it must not contain a NUL character")
        return value

    def whole(self, key: str, default: int) -> int:
        """A JSON number; fractions are truncated like the reference's int() with a warning."""
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(self.path, key, value, "it must be a number")
        if isinstance(value, float):
            if not math.isfinite(value):
                raise _bad(self.path, key, value, "it must be a finite number")
            self.warnings.append(
                f"In {self.path}, {key!r} is {value}; it is truncated to {int(value)}."
            )
        return int(value)

    def flag(self, key: str) -> bool:
        value = self.data.get(key, True)
        if not isinstance(value, bool):
            raise _bad(self.path, key, value, "it must be true or false")
        return value

    def params(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if not isinstance(value, list):
            raise _bad(self.path, key, value, "it must be a list of strings")
        params = []
        for index, item in enumerate(value):
            if isinstance(item, (bool, int, float)):
                converted = str(item)
                self.warnings.append(
                    f"In {self.path}, {key}[{index}] is {json.dumps(item)} ({_json_type(item)}); "
                    f"it is passed as the string {converted!r}."
                )
                item = converted
            if not isinstance(item, str):
                raise _bad(self.path, f"{key}[{index}]", item, "it must be a string")
            if "\x00" in item:
                raise _bad(self.path, f"{key}[{index}]", item, "it must not contain NUL")
            params.append(item)
        return tuple(params)

    def retries(self, key: str) -> int:
        value = self.whole(key, 0)
        if value > MAX_RETRIES:
            raise _bad(self.path, key, self.data[key], f"it must be at most {MAX_RETRIES}")
        if value < 0:
            self.warnings.append(f"In {self.path}, {key!r} is {value}; 0 is used.")
            return 0
        return value


def _load_json(text: bytes, path: str, warnings: list[str]) -> dict[str, Any]:
    try:
        decoded = text.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise VmSnapshotError(
            _PARSING, f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded)."
        ) from None

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                warnings.append(f"In {path}, {key!r} appears more than once; the last is used.")
            result[key] = value
        return result

    try:
        data = json.loads(decoded, object_pairs_hook=pairs)
    except RecursionError:
        raise VmSnapshotError(
            _PARSING, f"{path} is not valid JSON: it is nested too deeply."
        ) from None
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise VmSnapshotError(
                _PARSING,
                f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.",
            ) from None
        raise VmSnapshotError(_PARSING, f"{path} is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise VmSnapshotError(_PARSING, f"{path} must hold a JSON object, not {_json_type(data)}.")
    bad = unencodable(data)
    if bad is not None:
        raise VmSnapshotError(
            _PARSING, f"In {path}, {bad} is not valid text (it holds a lone surrogate)."
        )
    return data


def unencodable(value: Any, where: str = "a value") -> str | None:
    """Where in `value` (strings, lists, dicts) a string cannot be encoded as UTF-8, or None."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return at
        elif isinstance(item, dict):
            for key, inner in item.items():
                stack.append((key, f"a key of {at}"))
                stack.append((inner, repr(key) if at == where else f"{at}[{key!r}]"))
        elif isinstance(item, (list, tuple)):
            stack.extend((inner, f"{at}[{index}]") for index, inner in enumerate(item))
    return None


def parse_plugin_config(
    text: bytes,
    path: str,
    host_timeout: int = MAX_TIMEOUT_SECONDS,
    plugin_name: str = PLUGIN_NAME,
) -> ScriptPluginConfig:
    """Validate the bytes of a VMSnapshotScriptPluginConfig.json; raises VmSnapshotError(305)."""
    warnings: list[str] = []
    data = _load_json(text, path, warnings)
    read = _Reader(path, data, warnings)
    for key in data:
        if key not in _KNOWN_KEYS:
            warnings.append(
                f"In {path}, the unknown key {key!r} is ignored (keys are case-sensitive)."
            )

    pre_script = read.string("preScriptLocation", required=True)
    post_script = read.string("postScriptLocation", required=True)

    if "timeoutInSeconds" not in data:
        warnings.append(
            f"In {path}, 'timeoutInSeconds' is not set; the reference's default of "
            f"{DEFAULT_TIMEOUT_SECONDS} seconds applies (the published template uses 30)."
        )
    timeout = read.whole("timeoutInSeconds", DEFAULT_TIMEOUT_SECONDS)
    if timeout < 1:
        raise _bad(path, "timeoutInSeconds", data["timeoutInSeconds"], "it must be at least 1")
    if timeout > host_timeout:
        cap = "maximum" if host_timeout == MAX_TIMEOUT_SECONDS else "plugin host's timeout"
        warnings.append(
            f"In {path}, 'timeoutInSeconds' is {timeout}, above the {cap} of {host_timeout} "
            f"seconds; {host_timeout} is used."
        )
        timeout = host_timeout

    poll = read.whole("ScriptsExecutionPollTimeSeconds", DEFAULT_POLL_SECONDS)
    if not 1 <= poll <= 5:
        warnings.append(
            f"In {path}, 'ScriptsExecutionPollTimeSeconds' is {poll}, outside 1-5; "
            f"{DEFAULT_POLL_SECONDS} is used."
        )
        poll = DEFAULT_POLL_SECONDS

    return ScriptPluginConfig(
        path=path,
        plugin_name=read.string("pluginName", default=plugin_name),
        pre_script=pre_script,
        post_script=post_script,
        pre_params=read.params("preScriptParams"),
        post_params=read.params("postScriptParams"),
        pre_retries=read.retries("preScriptNoOfRetries"),
        post_retries=read.retries("postScriptNoOfRetries"),
        timeout_seconds=timeout,
        continue_on_failure=read.flag("continueBackupOnFailure"),
        fs_freeze_enabled=read.flag("fsFreezeEnabled"),
        poll_seconds=poll,
        app_name=read.string("appName"),
        warnings=tuple(warnings),
    )


def load_plugin_config(
    path: str = DEFAULT_CONFIG_PATH,
    host_timeout: int = MAX_TIMEOUT_SECONDS,
    plugin_name: str = PLUGIN_NAME,
) -> ScriptPluginConfig:
    """Check and read one plugin configuration file.

    Raises VmSnapshotError: 316 missing, 317 owner/mode/location, 305 unreadable or not valid.
    """
    with open_checked(path, ROLE_CONFIG) as checked:
        try:
            text = checked.read(MAX_FILE_BYTES)
        except OSError as exc:
            raise VmSnapshotError(_PARSING, f"{path} cannot be read: {exc.strerror}.") from None
    if len(text) > MAX_FILE_BYTES:
        raise VmSnapshotError(_PARSING, f"{path} is larger than {MAX_FILE_BYTES} bytes.")
    return parse_plugin_config(text, path, host_timeout, plugin_name)


def _host_int(path: str, section: configparser.SectionProxy, key: str, default: int) -> int:
    raw = section.get(key)
    if raw is None:
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise VmSnapshotError(
            _HOST_PARSING, f"In {path}, {key} is {raw!r}; it must be a whole number."
        ) from None


def parse_host_config(text: bytes, path: str, config_path: str = DEFAULT_CONFIG_PATH) -> HostConfig:
    """Validate the bytes of a VMSnapshotPluginHost.conf; raises VmSnapshotError (304, 316)."""
    warnings: list[str] = []
    parser = configparser.ConfigParser(interpolation=None)
    try:
        decoded = text.decode("utf-8")
        if unencodable(decoded) is not None:  # decoded bytes cannot hold one; guard anyway
            raise VmSnapshotError(_HOST_PARSING, f"{path} is not valid text.")
        parser.read_string(decoded, source=path)
    except UnicodeDecodeError as exc:
        raise VmSnapshotError(
            _HOST_PARSING, f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded)."
        ) from None
    except configparser.Error as exc:
        message = " ".join(str(exc).split())
        raise VmSnapshotError(_HOST_PARSING, f"{path} cannot be parsed: {message}") from None
    if not parser.has_section("pre_post"):
        raise VmSnapshotError(_HOST_PARSING, f"{path} has no [pre_post] section.")
    section = parser["pre_post"]

    timeout = _host_int(path, section, "timeoutInSeconds", MAX_TIMEOUT_SECONDS)
    if timeout < 1:
        raise VmSnapshotError(
            _HOST_PARSING, f"In {path}, timeoutInSeconds is {timeout}; it must be at least 1."
        )
    if timeout > MAX_TIMEOUT_SECONDS:
        warnings.append(
            f"In {path}, timeoutInSeconds is {timeout}, above the maximum of "
            f"{MAX_TIMEOUT_SECONDS} seconds; {MAX_TIMEOUT_SECONDS} is used."
        )
        timeout = MAX_TIMEOUT_SECONDS

    count = _host_int(path, section, "numberOfPlugins", 0)
    if not 0 <= count <= MAX_PLUGINS:
        raise VmSnapshotError(
            _HOST_PARSING, f"In {path}, numberOfPlugins is {count}; it must be 0 to {MAX_PLUGINS}."
        )
    if count == 0:
        raise VmSnapshotError(
            Status.FailedPrepostPluginConfigNotFound,
            f"The plugin host configuration {path} lists no plugins (numberOfPlugins is 0).",
        )

    paths = []
    known = {"timeoutinseconds", "numberofplugins"}
    for index in range(count):
        name = section.get(f"pluginName{index}")
        config = section.get(f"pluginConfigPath{index}")
        if name is None or config is None:
            raise VmSnapshotError(
                _HOST_PARSING,
                f"In {path}, plugin {index} needs pluginName{index} and pluginConfigPath{index}.",
            )
        if name.strip() != PLUGIN_NAME:
            raise VmSnapshotError(
                _HOST_PARSING,
                f"In {path}, pluginName{index} is {name.strip()!r}; only {PLUGIN_NAME!r} is "
                "supported (plugins are never loaded as Python code).",
            )
        paths.append(config.strip())
        known.update(
            f"{key}{index}".lower() for key in ("pluginname", "pluginpath", "pluginconfigpath")
        )
    warnings.extend(
        f"In {path}, the key {key!r} is ignored." for key in section if key not in known
    )
    if config_path != DEFAULT_CONFIG_PATH:
        warnings.append(
            f"The plugin host configuration {path} lists the plugin configurations; "
            f"{config_path} is not used."
        )
    return HostConfig(path, timeout, tuple(paths), tuple(warnings))


def load_host_config(
    host_config_path: str = DEFAULT_HOST_CONFIG_PATH, config_path: str = DEFAULT_CONFIG_PATH
) -> HostConfig:
    """Check and read the plugin host file, or give the built-in default when it is absent.

    The default host path may be absent (one plugin: `config_path`, cap 1800 s). Any other
    path names a file the operator expects, so its absence is 313. Raises VmSnapshotError:
    313 not found, 314 owner/mode/location, 304 unreadable or not valid, 316 no plugins.
    """
    try:
        checked = open_checked(host_config_path, ROLE_HOST_CONFIG)
    except VmSnapshotError as exc:
        absent = not os.path.lexists(host_config_path)
        if (
            exc.status == Status.FailedPrepostPluginhostConfigNotFound
            and absent
            and host_config_path == DEFAULT_HOST_CONFIG_PATH
        ):
            return HostConfig(None, MAX_TIMEOUT_SECONDS, (config_path,), ())
        raise
    with checked:
        try:
            text = checked.read(MAX_FILE_BYTES)
        except OSError as exc:
            raise VmSnapshotError(
                _HOST_PARSING, f"{host_config_path} cannot be read: {exc.strerror}."
            ) from None
    if len(text) > MAX_FILE_BYTES:
        raise VmSnapshotError(
            _HOST_PARSING, f"{host_config_path} is larger than {MAX_FILE_BYTES} bytes."
        )
    return parse_host_config(text, host_config_path, config_path)
