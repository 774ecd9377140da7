"""Managed disks attacked the way the first fault suite attacked page blobs.

* Hostile `managed_disks` fields: a `snapshot_name` with a format (`{disk:>99999999}` built a
  100 MB name and printed it in the error), attribute or index access (`{disk.__class__}`),
  a conversion; tags that are nested, hold a NUL or a line break, or break Azure's limits; a
  resource ID with a NUL, a blank, `?` or `%`; a 5000-character resource group. Each is
  refused with 11 before the host lock, any script or any call, with a short message.
* A bearer token echoed back by Resource Manager in spellings the first suite did not use,
  or embedded in the disk's resource ID: no piece of it in any output.
* Waits: the metadata service's token endpoint stalls, an operation that never ends
  (`status` never terminal), Retry-After as `0`, negative, NaN, an HTTP date or 99999 on a
  throttled call: the run ends within its bound, the application is released, the status is
  written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fault_support import run_module_process, summary
from test_adversarial_secrets import SPELLINGS, deep_leaks

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import _managed_disk

DEADLINE = 2
SNAPSHOT_TIMEOUT = 3.0
ALL_SCRIPTS = ["pre-start", "pre-end", "post-start", "post-end"]
# max_freeze_seconds + snapshot_timeout (the follow-up) + the process's own start and reports.
RETURN_BOUND = DEADLINE + SNAPSHOT_TIMEOUT + 8.0
BASE_ID = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/disks/{name}"


@pytest.fixture
def standin(arm_standin):
    arm_standin.clear_faults()
    yield arm_standin
    arm_standin.clear_faults()


def managed_args(standin, app, tmp_path: Path, disks: list[dict], **extra) -> dict:
    return {
        "managed_disks": disks,
        "arm_endpoint": standin.arm_endpoint,
        "imds_endpoint": standin.imds_endpoint,
        "ca_path": standin.ca_file,
        "config_path": app.config_location,
        "state_dir": str(tmp_path / "state"),
        "log_dir": str(tmp_path / "logs"),
        "max_freeze_seconds": DEADLINE,
        "snapshot_timeout": SNAPSHOT_TIMEOUT,
        **extra,
    }


def _disk_id(name: str = "d1", rg: str = "rg") -> str:
    return BASE_ID.format(sub="00000000-0000-0000-0000-000000000000", rg=rg, name=name)


HOSTILE_FIELDS = {
    "name with a width": {"id": _disk_id(), "snapshot_name": "{disk:>99999999}"},
    "name with attribute access": {"id": _disk_id(), "snapshot_name": "{disk.__class__}"},
    "name with an index": {"id": _disk_id(), "snapshot_name": "{disk[0]}-{time}"},
    "name with a conversion": {"id": _disk_id(), "snapshot_name": "{time!r}"},
    "name with a positional field": {"id": _disk_id(), "snapshot_name": "{}-{0}"},
    "name of 5000 characters": {"id": _disk_id(), "snapshot_name": "n" * 5000},
    "tag that is a dict": {"id": _disk_id(), "tags": {"a": {"b": 1}}},
    "tag that is a list": {"id": _disk_id(), "tags": {"a": [1, 2]}},
    "tag with a NUL": {"id": _disk_id(), "tags": {"a": "x\u0000y"}},
    "tag ending in a line break": {"id": _disk_id(), "tags": {"a": "value\n"}},
    "tag name with a slash": {"id": _disk_id(), "tags": {"a/b": "1"}},
    "tag value of 300 characters": {"id": _disk_id(), "tags": {"a": "v" * 300}},
    "id with a NUL": {"id": _disk_id("d\u00001")},
    "id with a blank": {"id": _disk_id("d 1")},
    "id with a question mark": {"id": _disk_id("d1?api-version=1")},
    "id with a percent": {"id": _disk_id("d%2F1")},
    "id ending in a line break": {"id": _disk_id("d1") + "\n"},
    "resource group of 5000 characters": {"id": _disk_id(), "snapshot_resource_group": "g" * 5000},
}


@pytest.mark.parametrize("field", list(HOSTILE_FIELDS))
def test_hostile_managed_disk_fields_are_refused_before_anything_runs(
    figures, app, standin, tmp_path, field
):
    scenario = figures.scenario(
        "hostile-managed-disk-fields", "input",
        "format strings, nested tags, NULs and huge values in managed_disks",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case(field) as case:
        before = len(standin.requests())
        args = managed_args(standin, app, tmp_path, [HOSTILE_FIELDS[field]])
        started = time.monotonic()
        result, process = run_module_process(args, tmp_path, timeout=60)
        took = time.monotonic() - started
        case.module_output(process)
        case.check(result and result.get("status_code") == 11, summary(result))
        case.check(took < 10, f"took {took:.1f} s")
        case.check(len(process.stdout) < 20000, f"{len(process.stdout)} bytes of output")
        case.check(app.entries() == [], f"scripts ran: {app.entries()}")
        case.check(len(standin.requests()) == before, "Resource Manager was called")
        case.check(not (tmp_path / "state/status/last.status").exists(), "a status was written")


TOKEN_SPELLINGS = [
    "plus as %20",
    "upper case",
    "split every 9, CRLF",
    "HTML decimal, no semicolon",
    "C \\x escapes",
    "three times, mixed-case hex",
]


def _outputs(process, tmp_path: Path) -> dict[str, str]:
    texts = {"stdout": process.stdout, "stderr": process.stderr}
    for path in [*(tmp_path / "logs").rglob("*"), *(tmp_path / "state").rglob("*")]:
        if path.is_file():
            texts[str(path.relative_to(tmp_path))] = path.read_text(errors="replace")
    return texts


def _check_no_token(case, process, tmp_path: Path, token: str) -> None:
    for name, text in _outputs(process, tmp_path).items():
        hits = deep_leaks(text, [token])
        if hits:
            case.scenario.secrets += len(hits)
            case.failures.append(f"{name}: {hits[:3]}")


@pytest.mark.parametrize("spelling", TOKEN_SPELLINGS)
def test_resource_manager_echoing_the_token_in_other_spellings(
    figures, app, standin, loop_ext4, tmp_path, spelling
):
    scenario = figures.scenario(
        "echoed-token-other-spellings", "secrets",
        "Resource Manager echoing the bearer token in other spellings",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case(spelling) as case:
        name = f"echo-{time.monotonic_ns()}"
        disk_id = standin.add_disk(name, size_bytes=64 * 1024)
        token = standin.token("awx-credential")
        standin.set_faults(
            {
                "method": "PUT",
                "path": f"/snapshots/{name}-",
                "status": 401,
                "code": "InvalidAuthenticationToken",
                "message": f"{SPELLINGS[spelling](token)} is not valid",
            }
        )
        args = managed_args(
            standin, app, tmp_path, [{"id": disk_id}], access_token=token,
            freeze_mounts=[loop_ext4.mount_point],
        )  # fmt: skip
        result, process = run_module_process(args, tmp_path)
        case.module_output(process)
        case.check(result and result.get("status_code") == 76, summary(result))
        case.check(app.entries() == ALL_SCRIPTS, f"scripts: {app.entries()}")
        case.check(app.lock_free(), "the application's lock is still held")
        case.check((tmp_path / "state/status/last.status").exists(), "no status file")
        _check_no_token(case, process, tmp_path, token)


def test_a_token_inside_the_resource_id_is_not_shown(figures, app, standin, tmp_path):
    """The access token pasted into a disk's ID (and so into the snapshot's name): the run is
    refused (the name is not valid), and the error shows no piece of the token."""
    scenario = figures.scenario(
        "echoed-token-other-spellings", "secrets",
        "Resource Manager echoing the bearer token in other spellings",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case("token inside the resource ID") as case:
        token = standin.token("awx-credential")
        args = managed_args(standin, app, tmp_path, [{"id": _disk_id(token)}], access_token=token)
        result, process = run_module_process(args, tmp_path, timeout=60)
        case.module_output(process)
        case.check(result and result.get("status_code") == 11, summary(result))
        case.check(app.entries() == [], f"scripts ran: {app.entries()}")
        _check_no_token(case, process, tmp_path, token)


def _timed_run(case, args: dict, tmp_path: Path, app, *, scripts: list[str], codes: tuple):
    started = time.monotonic()
    result, process = run_module_process(args, tmp_path, timeout=120)
    took = time.monotonic() - started
    case.module_output(process)
    case.check(result and result.get("status_code") in codes, summary(result))
    case.check(took < RETURN_BOUND, f"took {took:.1f} s (bound {RETURN_BOUND} s)")
    case.check(app.entries() == scripts, f"scripts: {app.entries()}")
    case.check(app.lock_free(), "the application's lock is still held")
    case.check((tmp_path / "state/status/last.status").exists(), "no status file")
    notes = case.scenario.notes
    notes["slowest return (s)"] = max(notes.get("slowest return (s)", 0), round(took, 1))
    notes["bound (s)"] = RETURN_BOUND
    return result


def test_a_stalling_token_endpoint_ends_the_run_in_time(figures, app, standin, loop_ext4, tmp_path):
    scenario = figures.scenario(
        "managed-disk-waits", "deadlines",
        "IMDS stalling, an operation that never ends, odd Retry-After on a throttled call",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case("IMDS token endpoint stalls 60 s") as case:
        disk_id = standin.add_disk(f"imds-{time.monotonic_ns()}", size_bytes=64 * 1024)
        standin.set_faults({"path": "/metadata/identity/oauth2/token", "delay": 60})
        args = managed_args(
            standin, app, tmp_path, [{"id": disk_id}], freeze_mounts=[loop_ext4.mount_point]
        )
        # Nothing may run without the token: the disk fails (15), the run 76, no script runs.
        result = _timed_run(case, args, tmp_path, app, scripts=[], codes=(15, 76))
        errors = [disk.get("error") or "" for disk in (result or {}).get("snapshots", [])]
        case.check(any("timed out" in error for error in errors), f"errors: {errors}")


def test_an_operation_that_never_ends(figures, app, standin, loop_ext4, tmp_path):
    scenario = figures.scenario(
        "managed-disk-waits", "deadlines",
        "IMDS stalling, an operation that never ends, odd Retry-After on a throttled call",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case("operation status never terminal") as case:
        name = f"lro-{time.monotonic_ns()}"
        disk_id = standin.add_disk(name, size_bytes=64 * 1024)
        standin.set_faults(
            {"method": "GET", "path": "/DiskOperations/", "status": 200, "code": "Odd",
             "retry_after": 0}
        )  # fmt: skip
        args = managed_args(
            standin, app, tmp_path, [{"id": disk_id}], freeze_mounts=[loop_ext4.mount_point]
        )
        # The snapshot was accepted (the point in time): a success whose copy goes on.
        _timed_run(case, args, tmp_path, app, scripts=ALL_SCRIPTS, codes=(0,))
        polls = [r for r in standin.requests() if "/DiskOperations/" in r["path"]]
        # Retry-After: 0 is waited at least 0.2 s: no busy loop against the service.
        case.check(len(polls) <= SNAPSHOT_TIMEOUT / 0.2 + 2, f"{len(polls)} polls")


@pytest.mark.parametrize("retry_after", ["0", "-1", "nan", "Wed, 21 Oct 2015 07:28:00 GMT",
                                         "Wed, 21 Oct 2099 07:28:00 GMT", "99999"])  # fmt: skip
def test_throttled_snapshot_call_with_odd_retry_after(
    figures, app, standin, loop_ext4, tmp_path, retry_after
):
    scenario = figures.scenario(
        "managed-disk-waits", "deadlines",
        "IMDS stalling, an operation that never ends, odd Retry-After on a throttled call",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case(f"429 with Retry-After: {retry_after}") as case:
        name = f"throttled-{time.monotonic_ns()}"
        disk_id = standin.add_disk(name, size_bytes=64 * 1024)
        standin.set_faults(
            {"method": "PUT", "path": f"/snapshots/{name}-", "status": 429,
             "code": "TooManyRequests", "retry_after": retry_after}
        )  # fmt: skip
        args = managed_args(
            standin, app, tmp_path, [{"id": disk_id}], freeze_mounts=[loop_ext4.mount_point]
        )
        _timed_run(case, args, tmp_path, app, scripts=ALL_SCRIPTS, codes=(173,))
        puts = [
            r
            for r in standin.requests()
            if r["method"] == "PUT" and f"/snapshots/{name}-" in r["path"]
        ]
        # Retried at most every 0.2 s while the deadline lasts, never in a busy loop.
        case.check(len(puts) <= DEADLINE / 0.2 + 2, f"{len(puts)} calls")


@pytest.mark.parametrize("spoil", ["a header after CRLF", "a blank inside", "a NUL at the end"])
def test_an_access_token_that_is_not_a_bearer_token_is_refused(
    figures, app, standin, tmp_path, spoil
):
    """A token with a line break would inject a header (http.client refuses it with an error
    that shows the token): refused with 11 before any call, no piece of it shown."""
    scenario = figures.scenario(
        "hostile-managed-disk-fields", "input",
        "format strings, nested tags, NULs and huge values in managed_disks",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case(f"access_token with {spoil}") as case:
        token = standin.token("awx-credential")
        spoiled = {
            "a header after CRLF": f"{token}\r\nX-Injected: 1",
            "a blank inside": f"{token[:40]} {token[40:]}",
            "a NUL at the end": f"{token}\u0000",
        }[spoil]
        before = len(standin.requests())
        disk_id = standin.add_disk(f"spoiled-{time.monotonic_ns()}", size_bytes=64 * 1024)
        args = managed_args(standin, app, tmp_path, [{"id": disk_id}], access_token=spoiled)
        result, process = run_module_process(args, tmp_path, timeout=60)
        case.module_output(process)
        case.check(result and result.get("status_code") == 11, summary(result))
        case.check(app.entries() == [], f"scripts ran: {app.entries()}")
        calls = [r for r in standin.requests()[before:] if not r["path"].startswith("/_standin")]
        case.check(not calls, f"Resource Manager was called: {calls[:2]}")
        _check_no_token(case, process, tmp_path, token)


@pytest.mark.parametrize(
    "properties",
    [
        {"provisioningState": "x" * 100000, "completionPercent": float("nan")},
        {"provisioningState": {"nested": True}, "completionPercent": "100"},
        {"provisioningState": "Succeeded", "completionPercent": 1e308},
        ["not", "an", "object"],
        "a string",
    ],
    ids=["huge state, NaN percent", "nested state, text percent", "huge percent", "a list",
         "a string"],
)  # fmt: skip
def test_odd_snapshot_properties_are_not_carried_into_the_result(properties):
    """What Resource Manager answers goes into the result and both status documents: a state
    of 100000 characters or a NaN percent (not JSON) is dropped; properties that are not an
    object do not raise inside the frozen window."""
    answer = _managed_disk.ArmResponse(200, {}, json.dumps({"properties": properties}).encode())
    found = _managed_disk._properties_of(answer)
    state = _managed_disk._state(found.get("provisioningState"))
    percent = _managed_disk._percent(found.get("completionPercent"))
    assert state in (None, "Succeeded")
    assert percent is None
    json.dumps({"state": state, "percent": percent}, allow_nan=False)
