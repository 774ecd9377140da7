"""Input that is valid JSON but not valid text, and numbers outside their ranges.

JSON can spell a lone UTF-16 surrogate (``"\\ud800"``) that no file name, argument, header or
log line can carry. Every field that takes text gets a family of such spellings (a lone high
or low surrogate, a reversed pair, one hidden inside ordinary text, a NUL byte); every number
a family of huge, negative, fractional, infinite and NaN values. Each is refused before
anything runs: a JSON result with a code, no traceback, no script run (or, for the script
configuration, the reference's 305 with the snapshot going on file-system-consistent and the
status written), the application released, nothing frozen past the deadline, the filesystem
writable, and ``prepost_info`` saying the same as the run.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fault_support import run_module_process, snapshot_args, summary

DEADLINE = 3
BOUND = DEADLINE + 1.0
# Not text: each one alone, and one hidden in the middle of an ordinary value.
NOT_TEXT = {
    "high": "\ud800",
    "low": "\udfff",
    "reversed pair": "\udc00\ud83d",
    "inside text": "run-\udbff-now",
}
CONFIG_FIELDS = [
    "preScriptLocation",
    "postScriptLocation",
    "preScriptParams",
    "postScriptParams",
    "pluginName",
    "appName",
    "key",
]


def b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def bad_config(app, field: str, value: str) -> dict:
    config = json.loads(app.config_path.read_text())
    if field in ("preScriptParams", "postScriptParams"):
        config[field] = ["ok", value]
    elif field == "key":
        config[f"note{value}"] = "x"
    elif field in ("preScriptLocation", "postScriptLocation"):
        config[field] = config[field] + value
    else:
        config[field] = value
    return config


def check_run(case, meter, process, result, app, run_dirs, *, code, scripts_ran=False):
    case.module_output(process)
    case.frozen(meter, process.started, BOUND)
    case.check(result is not None, "no JSON result")
    result = result or {}
    case.check(result.get("status_code") == code, summary(result))
    case.check(bool(app.entries()) == scripts_ran, f"scripts: {app.entries()}")
    case.check(app.lock_free(), "the application's lock is held")
    case.check(meter.writable_after(time.monotonic(), 2.0), "the filesystem is not writable")
    if code == 1:  # the run went on: its status must exist
        status = Path(run_dirs["state_dir"]) / "status" / "last.status"
        case.check(status.exists(), "no status file")


@pytest.mark.parametrize("field", CONFIG_FIELDS)
def test_configuration_strings_that_are_not_text(
    figures, make_app, meter, blob_disks, loop_ext4, run_dirs, tmp_path, field
):
    scenario = figures.scenario(
        "not-text-config", "input", "lone surrogates in the script configuration",
        deadline=DEADLINE,
    )  # fmt: skip
    disk = blob_disks(1)[0]
    for spelling, value in NOT_TEXT.items():
        app = make_app(f"app-{spelling.replace(' ', '-')}")
        app.write_config(bad_config(app, field, value))
        args = snapshot_args([disk], app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
        with scenario.case(f"{field}: {spelling}") as case:
            result, process = run_module_process(args, tmp_path)
            check_run(case, meter, process, result, app, run_dirs, code=1)
            message = (result or {}).get("message", "")
            case.check("framework: 305 " in message, f"not 305: {message[:300]}")
            info, info_process = run_module_process(
                {"config_path": app.config_location}, tmp_path, name="prepost_info"
            )
            case.module_output(info_process, "prepost_info")
            case.check(
                info and info.get("status_code") == 305 and "not valid text" in info["message"],
                f"prepost_info: {summary(info)}",
            )
    scenario.assert_held()


def option_cases(ctx_disk: str) -> list[tuple[str, dict]]:
    cases = []
    for spelling, value in NOT_TEXT.items():
        cases += [
            (f"task_id {spelling}", {"task_id": value}),
            (f"config_path {spelling}", {"config_path": "/etc/azure/x" + value + ".json"}),
            (f"backup_metadata value {spelling}", {"backup_metadata": {"job": value}}),
            (f"backup_metadata key {spelling}", {"backup_metadata": {"job" + value: "x"}}),
            (f"log_dir {spelling}", {"log_dir": "/tmp/logs" + value}),
            (
                f"settings taskId {spelling}",
                {
                    "disks": None,
                    "settings": {"commandToExecute": "snapshot", "taskId": value},
                    "protected_settings": {"objectStr": b64({"blobSASUri": [ctx_disk]})},
                },
            ),
            (
                f"settings objectStr metadata {spelling}",
                {
                    "disks": None,
                    "settings": {
                        "commandToExecute": "snapshot",
                        "objectStr": b64({"backupMetadata": [{"Key": "job", "Value": value}]}),
                    },
                    "protected_settings": {"objectStr": b64({"blobSASUri": [ctx_disk]})},
                },
            ),
        ]
    return cases


def test_options_and_settings_that_are_not_text(
    figures, app, meter, blob_disks, loop_ext4, run_dirs, tmp_path
):
    scenario = figures.scenario(
        "not-text-options", "input", "lone surrogates in options and settings", deadline=DEADLINE
    )
    disk = blob_disks(1)[0]
    for label, options in option_cases(disk.sas):
        args = snapshot_args([disk], app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
        args.update(options)
        args = {key: value for key, value in args.items() if value is not None}
        with scenario.case(label) as case:
            result, process = run_module_process(args, tmp_path)
            check_run(case, meter, process, result, app, run_dirs, code=11)
            message = (result or {}).get("msg", "")
            case.check(
                "not valid text" in message or "printable ASCII" in message,
                f"unclear: {summary(result)}",
            )
    scenario.assert_held()


OPTION_NUMBERS = [
    ("snapshot_timeout", value, 11)
    for value in (1e10, 1e308, "inf", "-inf", "nan", 0, -1, 600.5, 2**70)
] + [
    ("max_freeze_seconds", value, 11) for value in (0, -1, 601, 2**63, 10**30)
]  # fmt: skip

# (key, raw JSON number, expected framework code or None when the run goes on cleanly)
CONFIG_NUMBERS = [
    ("timeoutInSeconds", "1e400", 305),
    ("timeoutInSeconds", "-1e400", 305),
    ("timeoutInSeconds", "NaN", 305),
    ("timeoutInSeconds", "-5", 305),
    ("timeoutInSeconds", "0.5", 305),
    ("timeoutInSeconds", "1" + "0" * 40, None),
    ("preScriptNoOfRetries", "101", 305),
    ("postScriptNoOfRetries", "1e300", 305),
    ("preScriptNoOfRetries", "Infinity", 305),
    ("postScriptNoOfRetries", "-3", None),
    ("ScriptsExecutionPollTimeSeconds", "1e400", 305),
    ("ScriptsExecutionPollTimeSeconds", "-7", None),
]


def test_numbers_out_of_range_in_options(
    figures, app, meter, blob_disks, loop_ext4, run_dirs, tmp_path
):
    scenario = figures.scenario(
        "numbers-out-of-range", "input", "huge, negative, NaN and infinite numbers",
        deadline=DEADLINE,
    )  # fmt: skip
    disk = blob_disks(1)[0]
    for option, value, code in OPTION_NUMBERS:
        args = snapshot_args([disk], app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
        args[option] = value
        with scenario.case(f"{option} {value}") as case:
            result, process = run_module_process(args, tmp_path)
            check_run(case, meter, process, result, app, run_dirs, code=code)
            case.check(option in (result or {}).get("msg", ""), f"unclear: {summary(result)}")
    scenario.assert_held()


def test_numbers_out_of_range_in_the_configuration(
    figures, make_app, meter, blob_disks, loop_ext4, run_dirs, tmp_path
):
    scenario = figures.scenario(
        "numbers-out-of-range", "input", "huge, negative, NaN and infinite numbers",
        deadline=DEADLINE,
    )  # fmt: skip
    disk = blob_disks(1)[0]
    for index, (key, raw, framework) in enumerate(CONFIG_NUMBERS):
        app = make_app(f"app-{index}")
        config = json.loads(app.config_path.read_text())
        config[key] = "@NUMBER@"
        app.write_config(None, json.dumps(config).replace('"@NUMBER@"', raw).encode())
        args = snapshot_args([disk], app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
        with scenario.case(f"{key} {raw[:12]}") as case:
            result, process = run_module_process(args, tmp_path)
            if framework is None:
                check_run(case, meter, process, result, app, run_dirs, code=0, scripts_ran=True)
            else:
                check_run(case, meter, process, result, app, run_dirs, code=1)
                message = (result or {}).get("message", "")
                case.check(f"framework: {framework} " in message, f"not 305: {message[:300]}")
    scenario.assert_held()
