# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""The pre/post-script engine over every configured plugin: precheck, run_pre, run_post.

``precheck()`` reads the plugin host file (or its built-in default), every plugin configuration
and opens every script; the ``Precheck`` it returns holds the checked descriptors and is the only
way to run a script. Plugins run one after the other in the listed order (the reference runs
them in parallel threads and polls them). Each script has its own timeout; the plugin host's
timeout is the budget of a whole phase, counted from the time the earlier plugins took, and a
plugin that it cuts short (or never starts) gets 310/311.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._permissions import (
    ROLE_POST,
    ROLE_PRE,
    CheckedScript,
    check_script,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._prepost_config import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_HOST_CONFIG_PATH,
    MAX_TIMEOUT_SECONDS,
    ScriptPluginConfig,
    load_host_config,
    load_plugin_config,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._script_runner import (
    OnStart,
    ScriptResult,
    run_script,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
    result_fields,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_HOST_CONFIG_PATH",
    "PhaseResult",
    "PluginCheck",
    "PluginRun",
    "Precheck",
    "precheck",
    "run_post",
    "run_pre",
]

# role -> (script failed, script timed out, plugin host budget ran out)
_PHASE_CODES = {
    ROLE_PRE: (
        Status.FailedPrepostPreScriptFailed,
        Status.FailedPrepostPreScriptTimeout,
        Status.FailedPrepostPluginhostPreTimeout,
    ),
    ROLE_POST: (
        Status.FailedPrepostPostScriptFailed,
        Status.FailedPrepostPostScriptTimeout,
        Status.FailedPrepostPluginhostPostTimeout,
    ),
}


@dataclass
class PluginCheck:
    """One plugin after the precheck: its configuration and its two open, checked scripts."""

    config_path: str
    config: ScriptPluginConfig | None = None
    pre: CheckedScript | None = None
    post: CheckedScript | None = None
    status: Status = Status.success
    message: str = ""

    def close(self) -> None:
        for script in (self.pre, self.post):
            if script is not None:
                script.close()

    def as_dict(self) -> dict:
        return {
            "config_path": self.config_path,
            **result_fields(self.status),
            "message": self.message,
            "config": self.config.as_dict() if self.config else {},
        }


@dataclass
class Precheck:
    """The result of every check; `status` is Status.success when scripts may run."""

    status: Status
    message: str
    configured: bool
    plugins: list[PluginCheck] = field(default_factory=list)
    continue_on_failure: bool = True
    fs_freeze_enabled: bool = True
    warnings: list[str] = field(default_factory=list)
    host_config_path: str | None = None
    host_timeout_seconds: int = MAX_TIMEOUT_SECONDS
    closed: bool = False

    def close(self) -> None:
        for plugin in self.plugins:
            plugin.close()
        self.closed = True

    def __enter__(self) -> Precheck:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True)
class PluginRun:
    """One plugin's script in one phase; `result` is None when the script never started."""

    config_path: str
    status: Status
    message: str
    continue_backup: bool
    result: ScriptResult | None

    def as_dict(self) -> dict:
        return {
            "config_path": self.config_path,
            **result_fields(self.status),
            "message": self.message,
            "script": self.result.as_dict() if self.result else None,
        }


@dataclass(frozen=True)
class PhaseResult:
    """All plugins' pre- or post-scripts; `status` is the first failure, else Status.success."""

    phase: str
    status: Status
    message: str
    continue_backup: bool
    runs: list[PluginRun]

    @property
    def warnings(self) -> list[str]:
        """Scripts whose file changed between the check and the run."""
        return [run.result.warning for run in self.runs if run.result and run.result.warning]

    def as_dict(self) -> dict:
        return {
            "phase": self.phase,
            **result_fields(self.status),
            "message": self.message,
            "continue_backup": self.continue_backup,
            "plugins": [run.as_dict() for run in self.runs],
        }


def _check_plugin(config_path: str, host_timeout: int, warnings: list[str]) -> PluginCheck:
    check = PluginCheck(config_path)
    try:
        check.config = load_plugin_config(config_path, host_timeout)
    except VmSnapshotError as exc:
        check.status, check.message = exc.status, exc.message
        return check
    warnings.extend(check.config.warnings)
    errors = []
    for role, location in (
        (ROLE_PRE, check.config.pre_script),
        (ROLE_POST, check.config.post_script),
    ):
        try:
            setattr(check, role, check_script(location, role))
        except VmSnapshotError as exc:
            errors.append(exc)
    if errors:
        check.close()
        check.pre = check.post = None
        check.status = errors[0].status
        check.message = " ".join(exc.message for exc in errors)
    else:
        check.message = (
            f"The configuration {config_path} and its scripts {check.config.pre_script} and "
            f"{check.config.post_script} passed every check."
        )
    return check


def precheck(
    config_path: str = DEFAULT_CONFIG_PATH, host_config_path: str = DEFAULT_HOST_CONFIG_PATH
) -> Precheck:
    """Check the host file, every plugin configuration and every script; run nothing.

    A failing precheck holds no open script (nothing can run); close a passing one when done.
    """
    try:
        host = load_host_config(host_config_path, config_path)
    except VmSnapshotError as exc:
        return Precheck(
            exc.status,
            exc.message,
            configured=exc.status != Status.FailedPrepostPluginConfigNotFound,
            host_config_path=host_config_path,
        )
    warnings = list(host.warnings)
    plugins = [_check_plugin(path, host.timeout_seconds, warnings) for path in host.config_paths]
    configs = [plugin.config for plugin in plugins if plugin.config]
    failed = [plugin for plugin in plugins if plugin.status != Status.success]
    if failed:
        for plugin in plugins:
            plugin.close()
        status = failed[0].status
        message = " ".join(plugin.message for plugin in failed)
    else:
        status = Status.success
        message = " ".join(plugin.message for plugin in plugins)
    return Precheck(
        status,
        message,
        configured=status != Status.FailedPrepostPluginConfigNotFound,
        plugins=plugins,
        continue_on_failure=all(config.continue_on_failure for config in configs),
        fs_freeze_enabled=all(config.fs_freeze_enabled for config in configs),
        warnings=warnings,
        host_config_path=host.path,
        host_timeout_seconds=host.timeout_seconds,
    )


def _run_phase(check: Precheck, role: str, on_start: OnStart | None = None) -> PhaseResult:
    if check.status != Status.success:
        raise VmSnapshotError(
            check.status, f"No {role}-script runs because the precheck failed: {check.message}"
        )
    if check.closed:
        raise VmSnapshotError(Status.error, f"No {role}-script runs: the precheck is closed.")
    failed_code, timeout_code, budget_code = _PHASE_CODES[role]
    budget = float(check.host_timeout_seconds)
    runs = []
    for plugin in check.plugins:
        config = plugin.config
        script = plugin.pre if role == ROLE_PRE else plugin.post
        path = script.path
        if budget <= 0:
            message = (
                f"The {role}-script {path} did not start: the plugin host's budget of "
                f"{check.host_timeout_seconds} s for all {role}-scripts ran out."
            )
            runs.append(PluginRun(plugin.config_path, budget_code, message, True, None))
            continue
        timeout = min(config.timeout_seconds, budget)
        params = config.pre_params if role == ROLE_PRE else config.post_params
        retries = config.pre_retries if role == ROLE_PRE else config.post_retries
        result = run_script(script, params, timeout, retries, on_start)
        budget -= result.duration_ms / 1000
        attempts = f"{result.attempts} attempt{'s' if result.attempts > 1 else ''}"
        if result.ok:
            status = Status.success
            message = (
                f"The {role}-script {path} exited 0 after {attempts} ({result.duration_ms} ms)."
            )
        elif result.timed_out:
            status = budget_code if timeout < config.timeout_seconds else timeout_code
            message = (
                f"The {role}-script {path} did not finish within {timeout:g} s ({attempts}) and "
                "was killed with its processes."
            )
        elif result.exit_code is None:
            status = failed_code
            message = f"The {role}-script {path} could not run ({attempts}): {result.error}."
        else:
            status = failed_code
            message = f"The {role}-script {path} exited {result.exit_code} after {attempts}."
        keep_going = status in (Status.success, budget_code) or config.continue_on_failure
        runs.append(PluginRun(plugin.config_path, status, message, keep_going, result))
    failures = [run for run in runs if run.status != Status.success]
    return PhaseResult(
        phase=role,
        status=failures[0].status if failures else Status.success,
        message=" ".join(run.message for run in failures or runs),
        continue_backup=all(run.continue_backup for run in runs),
        runs=runs,
    )


def run_pre(check: Precheck, on_start: OnStart | None = None) -> PhaseResult:
    """Run every plugin's pre-script; 300/308/310 on failure, timeout, budget exhausted.

    `on_start(pid, start_time)` is told of every script process as it starts.
    """
    return _run_phase(check, ROLE_PRE, on_start)


def run_post(check: Precheck, on_start: OnStart | None = None) -> PhaseResult:
    """Run every plugin's post-script; 301/309/311 on failure, timeout, budget exhausted."""
    return _run_phase(check, ROLE_POST, on_start)
