"""Azure extension settings: schema, errors (11/16), .NET ticks and the 402 guard."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._settings import (
    command_too_late,
    parse_extension_settings,
    ticks_to_datetime,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

SIG = "c2VjcmV0LXNpZ25hdHVyZS0wMTIzNDU2Nzg5YWJjZGVm"
HOST = "https://acct.blob.core.windows.net"
DISK0 = f"{HOST}/vhds/os.vhd?sv=2021-12-02&sr=b&sp=rw&sig={SIG}"
DISK1 = f"{HOST}/vhds/data1.vhd?sv=2021-12-02&sr=b&sp=rw&sig={SIG}"
STATUS = f"{HOST}/status/s.json?sv=2021-12-02&sr=b&sp=rcw&sig={SIG}"
LOGS = f"{HOST}/logs/l.txt?sv=2021-12-02&sr=b&sp=rcw&sig={SIG}"
UNIX_EPOCH_TICKS = 621355968000000000


def b64json(value) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def public(**overrides) -> dict:
    settings = {
        "taskId": "0f1e2d3c-task",
        "commandToExecute": "snapshot",
        "commandStartTimeUTCTicks": str(UNIX_EPOCH_TICKS),
        "locale": "en-us",
        "vmType": "microsoft.compute/virtualmachines",
        "objectStr": b64json(
            {
                "backupMetadata": [
                    {"Key": "backupId", "Value": "b-42"},
                    {"Key": "Source_Task", "Value": "nightly run"},
                ]
            }
        ),
        "statusBlobUri": STATUS,
        "logsBlobUri": LOGS,
    }
    settings.update(overrides)
    return {key: value for key, value in settings.items() if value is not None}


def protected(disks=(DISK0,), **overrides) -> dict:
    settings = {"objectStr": b64json({"blobSASUri": list(disks)})}
    settings.update(overrides)
    return settings


def parse_error(settings, protected_settings) -> VmSnapshotError:
    with pytest.raises(VmSnapshotError) as caught:
        parse_extension_settings(settings, protected_settings)
    error = caught.value
    for shown in (error.message, repr(error), str(caught.getrepr())):
        assert SIG not in shown
    return error


def test_full_snapshot_settings():
    parsed = parse_extension_settings(public(), protected([DISK0, DISK1]))
    assert parsed.task_id == "0f1e2d3c-task"
    assert parsed.command_start_ticks == str(UNIX_EPOCH_TICKS)
    assert [disk.blob for disk in parsed.disks] == ["os.vhd", "data1.vhd"]
    assert parsed.disks[1].request_target().endswith(f"sig={SIG}")
    assert parsed.status_blob.blob == "s.json" and parsed.logs_blob.blob == "l.txt"
    assert parsed.backup_metadata == {"backupId": "b-42", "Source_Task": "nightly run"}
    assert parsed.crash_fallback_allowed is False
    assert parsed.vm_type == "microsoft.compute/virtualmachines"
    assert SIG not in repr(parsed)


def test_settings_as_json_text_and_protected_fallbacks():
    settings = public(statusBlobUri=None, logsBlobUri=None, taskId=None, locale=None)
    parsed = parse_extension_settings(
        json.dumps(settings),
        json.dumps(protected(statusBlobUri=STATUS, logsBlobUri=LOGS)),
    )
    assert parsed.status_blob.container == "status" and parsed.logs_blob.container == "logs"
    assert parsed.task_id is None


def test_no_protected_settings_means_no_disks():
    parsed = parse_extension_settings(public(statusBlobUri=None, logsBlobUri=None), None)
    assert parsed.disks == [] and parsed.status_blob is None and parsed.logs_blob is None


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("snapshot", "snapshot"),
        ("Snapshot", "snapshot"),
        ("doSNAPSHOTnow", "snapshot"),
        ("install", "install"),
        ("Install", "install"),
    ],
)
def test_command(command, expected):
    """Both commands are accepted; only a snapshot needs the public objectStr."""
    settings = public(commandToExecute=command)
    if expected == "install":
        settings.pop("objectStr")
    assert parse_extension_settings(settings, protected()).disks


@pytest.mark.parametrize(
    ("settings", "protected_settings"),
    [(None, None), ({}, {}), ("", None), (None, "")],
)
def test_no_settings_at_all_is_16(settings, protected_settings):
    error = parse_error(settings, protected_settings)
    assert error.status == Status.FailedHandlerGuestAgentCertificateNotFound


@pytest.mark.parametrize(
    ("settings", "protected_settings", "fragment"),
    [
        (public(commandToExecute="backup"), protected(), "commandToExecute must contain"),
        (public(commandToExecute=None), protected(), "commandToExecute must contain"),
        (None, protected(), "commandToExecute must contain"),
        ("{not json", protected(), "settings is not valid JSON"),
        ("[1, 2]", protected(), "settings must be a JSON object, not list"),
        (public(), "[]", "protected_settings must be a JSON object"),
        (public(objectStr=None), protected(), "objectStr (with backupMetadata) is required"),
        (public(objectStr="%%%not base64%%%"), protected(), "settings objectStr is not valid"),
        (public(objectStr=12), protected(), "settings objectStr must be a base64 string"),
        (
            public(objectStr=base64.b64encode(b"\xff\xfe").decode()),
            protected(),
            "settings objectStr is not valid base64 of UTF-8",
        ),
        (
            public(objectStr=base64.b64encode(b"{oops").decode()),
            protected(),
            "settings objectStr does not decode to JSON",
        ),
        (public(objectStr=b64json([1])), protected(), "must decode to a JSON object, not list"),
        (public(objectStr=b64json({})), protected(), "objectStr has no backupMetadata"),
        (
            public(objectStr=b64json({"backupMetadata": {"Key": "a"}})),
            protected(),
            "backupMetadata must be a list",
        ),
        (
            public(objectStr=b64json({"backupMetadata": [{"Key": "a"}]})),
            protected(),
            "backupMetadata[0] must be an object with Key and Value",
        ),
        (
            public(objectStr=b64json({"backupMetadata": [{"Key": "1st", "Value": "x"}]})),
            protected(),
            "key '1st' is not a valid blob metadata name",
        ),
        (
            public(objectStr=b64json({"backupMetadata": [{"Key": "a", "Value": "x\r\ny"}]})),
            protected(),
            "value for 'a' must be printable ASCII",
        ),
        (
            public(objectStr=b64json({"backupMetadata": [{"Key": "a", "Value": "é"}]})),
            protected(),
            "value for 'a' must be printable ASCII",
        ),
        (public(), {"objectStr": "!!"}, "protected_settings objectStr is not valid base64"),
        (
            public(),
            {"objectStr": b64json({"blobSASUri": DISK0})},
            "must hold a blobSASUri list",
        ),
        (public(), {"objectStr": b64json({"other": []})}, "must hold a blobSASUri list"),
        (
            public(),
            protected([DISK0, DISK1.replace("https://", "ftp://")]),
            "The SAS URI for disk 1 is not an http(s) URL",
        ),
        (public(), protected([DISK0, 7]), "The SAS URI for disk 1 is empty or not a string"),
        (
            public(statusBlobUri=f"{HOST}/status?sig={SIG}"),
            protected(),
            "The SAS URI for statusBlobUri does not name a container",
        ),
        (public(commandStartTimeUTCTicks="yesterday"), protected(), "is not a number of .NET"),
        (public(customSettings="{bad"), protected(), "customSettings is not valid JSON"),
        (
            public(customSettings={"isManagedVm": "maybe", "backupRetryCount": 1}),
            protected(),
            "customSettings isManagedVm must be true or false",
        ),
        (
            public(customSettings={"backupRetryCount": "-1"}),
            protected(),
            "backupRetryCount must be a non-negative integer",
        ),
    ],
)
def test_bad_settings_are_11(settings, protected_settings, fragment):
    error = parse_error(settings, protected_settings)
    assert error.status == Status.error_parameter
    assert fragment in error.message
    assert error.message.endswith(".")


def custom(managed=True, allowed=True, retry=1) -> str:
    return json.dumps(
        {
            "isManagedVm": managed,
            "canTakeCrashConsistentSnapshot": allowed,
            "backupRetryCount": retry,
            "takeSnapshotFrom": "onlyGuest",
        }
    )


@pytest.mark.parametrize(
    ("custom_settings", "disks", "where", "expected"),
    [
        (custom(), [DISK0], "public", True),
        (custom(), [DISK0], "protected", True),
        (custom(managed="True", allowed="true", retry="2"), [DISK0], "public", True),
        (custom(), [DISK0, DISK1], "public", False),
        (custom(managed=False), [DISK0], "public", False),
        (custom(allowed=False), [DISK0], "public", False),
        (custom(retry=0), [DISK0], "public", False),
        (None, [DISK0], "public", False),
    ],
)
def test_crash_fallback_allowed(custom_settings, disks, where, expected):
    settings, protected_settings = public(), protected(disks)
    if custom_settings is not None:
        (settings if where == "public" else protected_settings)["customSettings"] = custom_settings
    parsed = parse_extension_settings(settings, protected_settings)
    assert parsed.crash_fallback_allowed is expected


@pytest.mark.parametrize(
    ("ticks", "moment"),
    [
        (UNIX_EPOCH_TICKS, datetime(1970, 1, 1, tzinfo=timezone.utc)),
        (str(UNIX_EPOCH_TICKS), datetime(1970, 1, 1, tzinfo=timezone.utc)),
        (0, datetime(1, 1, 1, tzinfo=timezone.utc)),
        (630822816000000000, datetime(2000, 1, 1, tzinfo=timezone.utc)),
        (638396640000000000 + 15, datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc)),
    ],
)
def test_ticks_to_datetime(ticks, moment):
    assert ticks_to_datetime(ticks) == moment
    assert datetime_to_ticks(moment) == int(ticks) // 10 * 10


@pytest.mark.parametrize("ticks", ["", "-5", "12a", "1e10", str(10**30)])
def test_invalid_ticks(ticks):
    with pytest.raises(VmSnapshotError) as caught:
        ticks_to_datetime(ticks)
    assert caught.value.status == Status.error_parameter


NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
TICKS_EPOCH = datetime(1, 1, 1, tzinfo=timezone.utc)


def datetime_to_ticks(moment: datetime) -> int:
    """The inverse of ticks_to_datetime, for building test input."""
    delta = moment - TICKS_EPOCH
    return (delta.days * 86400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


@pytest.mark.parametrize(
    ("age", "max_minutes", "too_late"),
    [
        (timedelta(0), 140, False),
        (timedelta(minutes=139, seconds=59), 140, False),
        (timedelta(minutes=140), 140, False),
        (timedelta(minutes=140, seconds=1), 140, True),
        (timedelta(days=3), 140, True),
        (timedelta(minutes=-30), 140, False),  # issued "in the future": clock skew, not late
        (timedelta(minutes=11), 10, True),
    ],
)
def test_command_too_late(age, max_minutes, too_late):
    ticks = datetime_to_ticks(NOW - age)
    assert command_too_late(ticks, now=NOW, max_minutes=max_minutes) is too_late
    assert command_too_late(str(ticks), now=NOW, max_minutes=max_minutes) is too_late


def test_command_too_late_without_ticks_and_by_the_clock():
    assert command_too_late(None) is False
    assert command_too_late("") is False
    assert command_too_late(datetime_to_ticks(datetime.now(timezone.utc))) is False
    old = datetime.now(timezone.utc) - timedelta(hours=3)
    assert command_too_late(datetime_to_ticks(old)) is True
