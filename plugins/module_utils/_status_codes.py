# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""Every status and error code of the reference extension, and the collection's exception type.

Numbers and names are the reference's ``ExtensionErrorCodeEnum``; the documentation's names
(``Pre-ScriptExecutionFailed``, ``IncorrectJSONConfigFile``, ...) are aliases.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.IntEnum):
    success_appconsistent = 0
    success = 1
    error = 2
    SuccessAlreadyProcessedInput = 3
    ExtensionTempTerminalState = 4
    error_parameter = 11
    error_12 = 12
    error_wrong_time = 13
    error_same_taskid = 14
    error_http_failure = 15
    FailedHandlerGuestAgentCertificateNotFound = 16
    FailedInvalidDataDiskLunList = 17
    FailedRetryableSnapshotFailedNoNetwork = 76
    FailedSnapshotLimitReached = 85
    FailedRetryableFsFreezeFailed = 121
    FailedRetryableFsFreezeTimeout = 122
    FailedRetryableUnableToOpenMount = 123
    FailedSafeFreezeBinaryNotFound = 124
    FailedRetryableSnapshotRateExceeded = 173
    FailedPrepostPreScriptFailed = 300
    FailedPrepostPostScriptFailed = 301
    FailedPrepostPreScriptNotFound = 302
    FailedPrepostPostScriptNotFound = 303
    FailedPrepostPluginhostConfigParsing = 304
    FailedPrepostPluginConfigParsing = 305
    FailedPrepostPreScriptPermissionError = 306
    FailedPrepostPostScriptPermissionError = 307
    FailedPrepostPreScriptTimeout = 308
    FailedPrepostPostScriptTimeout = 309
    FailedPrepostPluginhostPreTimeout = 310
    FailedPrepostPluginhostPostTimeout = 311
    FailedPrepostCheckSumMismatch = 312
    FailedPrepostPluginhostConfigNotFound = 313
    FailedPrepostPluginhostConfigPermissionError = 314
    FailedPrepostPluginhostConfigOwnershipError = 315
    FailedPrepostPluginConfigNotFound = 316
    FailedPrepostPluginConfigPermissionError = 317
    FailedPrepostPluginConfigOwnershipError = 318
    FailedGuestAgentInvokedCommandTooLate = 402
    FailedWorkloadPreError = 500
    FailedWorkloadConfParsingError = 501
    FailedWorkloadInvalidRole = 502
    FailedWorkloadInvalidWorkloadName = 503
    FailedWorkloadPostError = 504
    FailedWorkloadAuthorizationMissing = 505
    FailedWorkloadConnectionError = 506
    FailedWorkloadIPCDirectoryMissing = 507
    FailedWorkloadDatabaseStatusChanged = 508
    FailedWorkloadQuiescingError = 509
    FailedWorkloadQuiescingTimeout = 510
    FailedWorkloadDatabaseInNoArchiveLog = 511
    FailedWorkloadLogModeChanged = 512
    FailedHostSnapshotRemoteServerError = 556
    FailedRetryableSnapshotFailedRestrictedNetwork = 761


HEALTH_STATES = {"green": 0, "yellow": 128, "red": 256}


@dataclass(frozen=True)
class StatusInfo:
    code: int
    name: str
    aliases: tuple[str, ...]
    health: str
    health_state: int
    message: str


_S = Status

# code -> (health, message, aliases). Health is the reference's ExtensionErrorCodeDict; codes it
# leaves out get the class of their neighbours (13/14 like 12, 556 red like the other snapshot
# failures: the reference would crash with a KeyError on it).
_TABLE: dict[Status, tuple[str, str, tuple[str, ...]]] = {
    _S.success_appconsistent: ("green", "The snapshot is application-consistent.", ()),
    _S.success: ("green", "The operation succeeded (file-system- or crash-consistent).", ()),
    _S.error: ("green", "The operation failed with a generic error.", ()),
    _S.SuccessAlreadyProcessedInput: (
        "green",
        "This task id was already processed; nothing was done.",
        (),
    ),
    _S.ExtensionTempTerminalState: ("green", "The run is in progress (transitioning).", ()),
    _S.error_parameter: ("yellow", "A parameter or setting is missing or not correct.", ()),
    _S.error_12: ("green", "A file or directory the run needed does not exist.", ()),
    _S.error_wrong_time: ("green", "Defined by the reference but never used.", ()),
    _S.error_same_taskid: ("green", "Defined by the reference but never used.", ()),
    _S.error_http_failure: ("red", "An HTTP request failed.", ()),
    _S.FailedHandlerGuestAgentCertificateNotFound: (
        "yellow",
        "No settings could be read (certificate or decryption failure).",
        (),
    ),
    _S.FailedInvalidDataDiskLunList: (
        "green",
        "The data disk LUN list is not valid for the disks present.",
        (),
    ),
    _S.FailedRetryableSnapshotFailedNoNetwork: ("red", "All disk snapshots failed.", ()),
    _S.FailedSnapshotLimitReached: (
        "red",
        "The snapshot count limit of a disk blob has been reached.",
        (),
    ),
    _S.FailedRetryableFsFreezeFailed: (
        "yellow",
        "Freezing the file systems failed.",
        ("FailedFsFreezeFailed",),
    ),
    _S.FailedRetryableFsFreezeTimeout: (
        "yellow",
        "Freezing the file systems did not finish in time.",
        ("FailedFsFreezeTimeout",),
    ),
    _S.FailedRetryableUnableToOpenMount: (
        "yellow",
        "A mount point could not be opened for freezing.",
        ("FailedUnableToOpenMount",),
    ),
    _S.FailedSafeFreezeBinaryNotFound: ("yellow", "The freeze helper is missing.", ()),
    _S.FailedRetryableSnapshotRateExceeded: (
        "green",
        "The storage service refused the snapshot: request rate exceeded.",
        (),
    ),
    _S.FailedPrepostPreScriptFailed: (
        "yellow",
        "The pre-script exited with a non-zero code.",
        ("Pre-ScriptExecutionFailed",),
    ),
    _S.FailedPrepostPostScriptFailed: (
        "yellow",
        "The post-script exited with a non-zero code.",
        ("Post-ScriptExecutionFailed",),
    ),
    _S.FailedPrepostPreScriptNotFound: (
        "yellow",
        "The pre-script is not a regular file at the configured location.",
        ("Pre-ScriptNotFound",),
    ),
    _S.FailedPrepostPostScriptNotFound: (
        "yellow",
        "The post-script is not a regular file at the configured location.",
        ("Post-ScriptNotFound",),
    ),
    _S.FailedPrepostPluginhostConfigParsing: (
        "yellow",
        "The plugin host configuration could not be parsed.",
        ("IncorrectPluginhostFile",),
    ),
    _S.FailedPrepostPluginConfigParsing: (
        "yellow",
        "The pre/post-script configuration JSON could not be read or is not valid.",
        ("IncorrectJSONConfigFile",),
    ),
    _S.FailedPrepostPreScriptPermissionError: (
        "yellow",
        "The pre-script's owner, mode or location is not safe to run as root.",
        ("InsufficientPermissionforPre-Script",),
    ),
    _S.FailedPrepostPostScriptPermissionError: (
        "yellow",
        "The post-script's owner, mode or location is not safe to run as root.",
        ("InsufficientPermissionforPost-Script",),
    ),
    _S.FailedPrepostPreScriptTimeout: (
        "yellow",
        "The pre-script did not finish within its timeout.",
        ("Pre-ScriptTimeout",),
    ),
    _S.FailedPrepostPostScriptTimeout: (
        "yellow",
        "The post-script did not finish within its timeout.",
        ("Post-ScriptTimeout",),
    ),
    _S.FailedPrepostPluginhostPreTimeout: (
        "yellow",
        "The plugin host's overall pre-script time budget ran out.",
        (),
    ),
    _S.FailedPrepostPluginhostPostTimeout: (
        "yellow",
        "The plugin host's overall post-script time budget ran out.",
        (),
    ),
    _S.FailedPrepostCheckSumMismatch: ("yellow", "Defined by the reference but never used.", ()),
    _S.FailedPrepostPluginhostConfigNotFound: (
        "yellow",
        "The plugin host configuration file was not found.",
        (),
    ),
    _S.FailedPrepostPluginhostConfigPermissionError: (
        "yellow",
        "The plugin host configuration's owner, mode or location is not safe.",
        (),
    ),
    _S.FailedPrepostPluginhostConfigOwnershipError: (
        "yellow",
        "Defined by the reference but never used (ownership errors give 314).",
        (),
    ),
    _S.FailedPrepostPluginConfigNotFound: (
        "yellow",
        "No pre/post-script configuration: the snapshot is file-system-consistent.",
        (),
    ),
    _S.FailedPrepostPluginConfigPermissionError: (
        "yellow",
        "The pre/post-script configuration's owner, mode or location is not safe.",
        (),
    ),
    _S.FailedPrepostPluginConfigOwnershipError: (
        "yellow",
        "Defined by the reference but never used (ownership errors give 317).",
        (),
    ),
    _S.FailedGuestAgentInvokedCommandTooLate: (
        "red",
        "The snapshot command arrived too late (more than 140 minutes after it was issued).",
        (),
    ),
    _S.FailedWorkloadPreError: ("yellow", "The workload quiesce step failed.", ()),
    _S.FailedWorkloadConfParsingError: ("yellow", "The workload configuration is not valid.", ()),
    _S.FailedWorkloadInvalidRole: ("yellow", "The workload role is not valid.", ()),
    _S.FailedWorkloadInvalidWorkloadName: ("yellow", "The workload name is not supported.", ()),
    _S.FailedWorkloadPostError: ("yellow", "The workload unquiesce step failed.", ()),
    _S.FailedWorkloadAuthorizationMissing: (
        "yellow",
        "No credentials or user are configured for the workload.",
        (),
    ),
    _S.FailedWorkloadConnectionError: ("yellow", "The database connection failed.", ()),
    _S.FailedWorkloadIPCDirectoryMissing: ("yellow", "The workload IPC directory is missing.", ()),
    _S.FailedWorkloadDatabaseStatusChanged: (
        "yellow",
        "The database status changed between quiesce and unquiesce.",
        ("FailedWorkloadDatabaseNotOpen",),
    ),
    _S.FailedWorkloadQuiescingError: ("yellow", "The database could not be quiesced.", ()),
    _S.FailedWorkloadQuiescingTimeout: (
        "yellow",
        "The database quiesce ended before the snapshot: not application-consistent.",
        (),
    ),
    _S.FailedWorkloadDatabaseInNoArchiveLog: (
        "yellow",
        "The database runs without archive logging.",
        (),
    ),
    _S.FailedWorkloadLogModeChanged: (
        "yellow",
        "The database log mode changed between quiesce and unquiesce.",
        (),
    ),
    _S.FailedHostSnapshotRemoteServerError: (
        "red",
        "The host snapshot service answered with a server error.",
        (),
    ),
    _S.FailedRetryableSnapshotFailedRestrictedNetwork: (
        "red",
        "Some disk snapshots failed.",
        (),
    ),
}

_BY_NAME: dict[str, Status] = {
    key.lower(): status
    for status, (_health, _message, aliases) in _TABLE.items()
    for key in (status.name, *aliases)
}


class VmSnapshotError(Exception):
    """The collection's one exception type: a status code and a full-sentence message."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = Status(status)
        self.message = message

    def __str__(self) -> str:
        return self.message


def lookup(code_or_name_or_alias: int | str | Status) -> Status:
    """Return the Status for a number, a numeric string, a reference name or a documented alias.

    Names and aliases are matched case-insensitively, with or without the ``StatusCode.`` prefix
    the reference puts in its messages.
    """
    value = code_or_name_or_alias
    if isinstance(value, str):
        text = value.strip()
        if text.lower().startswith("statuscode."):
            text = text[len("statuscode.") :]
        text = text.rstrip(",")
        if text.lstrip("-").isdigit():
            value = int(text)
        elif text.lower() in _BY_NAME:
            return _BY_NAME[text.lower()]
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return Status(value)
        except ValueError:
            pass
    raise VmSnapshotError(
        Status.error_parameter, f"{code_or_name_or_alias!r} is not a known status code or name."
    )


def describe(status: int | str | Status) -> StatusInfo:
    """Everything known about one status: number, name, aliases, health colour and message."""
    found = lookup(status)
    health, message, aliases = _TABLE[found]
    return StatusInfo(
        code=int(found),
        name=found.name,
        aliases=aliases,
        health=health,
        health_state=HEALTH_STATES[health],
        message=message,
    )


def result_fields(status: int | str | Status) -> dict:
    """The status keys every module result carries."""
    found = lookup(status)
    return {"status_code": int(found), "status_name": found.name}
