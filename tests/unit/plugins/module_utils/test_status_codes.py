"""Status codes: the reference's numbers and names, the documentation's aliases, health colours."""

from __future__ import annotations

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    StatusInfo,
    VmSnapshotError,
    describe,
    lookup,
    result_fields,
)

# docs/reference-behaviour.md §3, code by code.
REFERENCE = {
    0: "success_appconsistent",
    1: "success",
    2: "error",
    3: "SuccessAlreadyProcessedInput",
    4: "ExtensionTempTerminalState",
    11: "error_parameter",
    12: "error_12",
    13: "error_wrong_time",
    14: "error_same_taskid",
    15: "error_http_failure",
    16: "FailedHandlerGuestAgentCertificateNotFound",
    17: "FailedInvalidDataDiskLunList",
    76: "FailedRetryableSnapshotFailedNoNetwork",
    85: "FailedSnapshotLimitReached",
    121: "FailedRetryableFsFreezeFailed",
    122: "FailedRetryableFsFreezeTimeout",
    123: "FailedRetryableUnableToOpenMount",
    124: "FailedSafeFreezeBinaryNotFound",
    173: "FailedRetryableSnapshotRateExceeded",
    300: "FailedPrepostPreScriptFailed",
    301: "FailedPrepostPostScriptFailed",
    302: "FailedPrepostPreScriptNotFound",
    303: "FailedPrepostPostScriptNotFound",
    304: "FailedPrepostPluginhostConfigParsing",
    305: "FailedPrepostPluginConfigParsing",
    306: "FailedPrepostPreScriptPermissionError",
    307: "FailedPrepostPostScriptPermissionError",
    308: "FailedPrepostPreScriptTimeout",
    309: "FailedPrepostPostScriptTimeout",
    310: "FailedPrepostPluginhostPreTimeout",
    311: "FailedPrepostPluginhostPostTimeout",
    312: "FailedPrepostCheckSumMismatch",
    313: "FailedPrepostPluginhostConfigNotFound",
    314: "FailedPrepostPluginhostConfigPermissionError",
    315: "FailedPrepostPluginhostConfigOwnershipError",
    316: "FailedPrepostPluginConfigNotFound",
    317: "FailedPrepostPluginConfigPermissionError",
    318: "FailedPrepostPluginConfigOwnershipError",
    402: "FailedGuestAgentInvokedCommandTooLate",
    500: "FailedWorkloadPreError",
    501: "FailedWorkloadConfParsingError",
    502: "FailedWorkloadInvalidRole",
    503: "FailedWorkloadInvalidWorkloadName",
    504: "FailedWorkloadPostError",
    505: "FailedWorkloadAuthorizationMissing",
    506: "FailedWorkloadConnectionError",
    507: "FailedWorkloadIPCDirectoryMissing",
    508: "FailedWorkloadDatabaseStatusChanged",
    509: "FailedWorkloadQuiescingError",
    510: "FailedWorkloadQuiescingTimeout",
    511: "FailedWorkloadDatabaseInNoArchiveLog",
    512: "FailedWorkloadLogModeChanged",
    556: "FailedHostSnapshotRemoteServerError",
    761: "FailedRetryableSnapshotFailedRestrictedNetwork",
}

DOC_ALIASES = {
    300: "Pre-ScriptExecutionFailed",
    301: "Post-ScriptExecutionFailed",
    302: "Pre-ScriptNotFound",
    303: "Post-ScriptNotFound",
    304: "IncorrectPluginhostFile",
    305: "IncorrectJSONConfigFile",
    306: "InsufficientPermissionforPre-Script",
    307: "InsufficientPermissionforPost-Script",
    308: "Pre-ScriptTimeout",
    309: "Post-ScriptTimeout",
}


def test_the_enum_holds_exactly_the_reference_codes():
    assert {int(s): s.name for s in Status} == REFERENCE


@pytest.mark.parametrize(("code", "name"), sorted(REFERENCE.items()))
def test_every_code_is_described(code, name):
    info = describe(code)
    assert isinstance(info, StatusInfo)
    assert (info.code, info.name) == (code, name)
    assert info.health in ("green", "yellow", "red")
    assert info.health_state == {"green": 0, "yellow": 128, "red": 256}[info.health]
    assert info.message.endswith(".") and len(info.message) > 10
    assert lookup(name) is Status(code)
    assert lookup(code) is Status(code)
    assert lookup(str(code)) is Status(code)


@pytest.mark.parametrize(("code", "alias"), sorted(DOC_ALIASES.items()))
def test_documentation_names_are_aliases(code, alias):
    assert alias in describe(code).aliases
    assert lookup(alias) is Status(code)
    assert lookup(alias.upper()) is Status(code)


@pytest.mark.parametrize(
    ("code", "health"),
    [
        (0, "green"),
        (1, "green"),
        (2, "green"),
        (11, "yellow"),
        (15, "red"),
        (17, "green"),
        (76, "red"),
        (85, "red"),
        (121, "yellow"),
        (124, "yellow"),
        (173, "green"),
        (300, "yellow"),
        (316, "yellow"),
        (402, "red"),
        (510, "yellow"),
        (556, "red"),
        (761, "red"),
    ],
)
def test_health_colours_follow_the_reference(code, health):
    assert describe(code).health == health


@pytest.mark.parametrize(
    "text",
    ["StatusCode.FailedPrepostPreScriptFailed,", " failedprepostprescriptfailed ", "300"],
)
def test_lookup_accepts_the_reference_message_form(text):
    assert lookup(text) is Status.FailedPrepostPreScriptFailed


@pytest.mark.parametrize("bad", [999, "999", "NoSuchCode", "", True, None, 3.5])
def test_lookup_of_an_unknown_code_raises_the_collection_error(bad):
    with pytest.raises(VmSnapshotError) as raised:
        lookup(bad)
    assert raised.value.status is Status.error_parameter
    assert repr(bad) in str(raised.value)


def test_the_error_carries_status_and_message():
    error = VmSnapshotError(302, "The pre-script '/x' does not exist.")
    assert error.status is Status.FailedPrepostPreScriptNotFound
    assert error.message == str(error) == "The pre-script '/x' does not exist."
    assert isinstance(error, Exception)


def test_result_fields():
    assert result_fields(Status.FailedPrepostPluginConfigNotFound) == {
        "status_code": 316,
        "status_name": "FailedPrepostPluginConfigNotFound",
    }
    assert result_fields("Pre-ScriptTimeout") == {
        "status_code": 308,
        "status_name": "FailedPrepostPreScriptTimeout",
    }
