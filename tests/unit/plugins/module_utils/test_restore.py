"""Restore from a snapshot: option checks, the plan, waiting for the copy (no blob service here;
tests/databases/test_restore_module.py runs the module against Azurite)."""

from __future__ import annotations

import time

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import _restore
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._blob_rest import (
    copy_source_without_sas,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._restore import (
    holds_snapshot,
    plan,
    request_from_params,
    restore,
    wait_for_copy,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

SIG = "c2VjcmV0c2lnbmF0dXJlMDEyMzQ1Njc4OWFiY2RlZg%3D%3D"
BASE = "https://acct.blob.core.windows.net/vhds"
SNAP = "2026-01-02T03:04:05.1234567Z"
SNAP_Q = SNAP.replace(":", "%3A")
READ = f"sv=2021-12-02&sr=bs&sp=r&sig={SIG}"
WRITE = f"sv=2021-12-02&sr=b&sp=rcw&sig={SIG}"


def params(**overrides) -> dict:
    values = {
        "snapshot_uri": f"{BASE}/data.vhd?snapshot={SNAP_Q}&{READ}",
        "snapshot": None,
        "destination_uri": f"{BASE}/restored.vhd?{WRITE}",
        "overwrite": False,
        "force": False,
        "timeout": 30.0,
        "wait_timeout": 3600.0,
    }
    values.update(overrides)
    return values


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"snapshot_uri": f"{BASE}/data.vhd?{READ}", "snapshot": SNAP},
        {"snapshot": SNAP},
        {"destination_uri": f"{BASE}/restored.vhd?sv=2021-12-02&sr=b&sp=rw&sig={SIG}"},
        {"destination_uri": f"{BASE}/data.vhd?{WRITE}", "overwrite": True},
    ],
)
def test_valid_requests_name_the_snapshot_and_keep_the_signature_out_of_sight(overrides):
    request = request_from_params(params(**overrides))
    assert request.snapshot == SNAP
    assert request.snapshot_url == f"{BASE}/data.vhd?snapshot={SNAP}"
    # The service gets the full SAS; what is shown has none.
    assert f"sig={SIG}" in request.source_url and f"snapshot={SNAP_Q}" in request.source_url
    assert SIG not in request.snapshot_url and SIG not in repr(request)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"snapshot": "2020-01-01T00:00:00.0000000Z"}, "differ"),
        ({"snapshot_uri": f"{BASE}/data.vhd?{READ}"}, "names no snapshot"),
        ({"snapshot_uri": f"{BASE}/data.vhd?snapshot={SNAP_Q}&sp=w&sig={SIG}"}, "cannot read"),
        ({"snapshot_uri": f"{BASE}/data.vhd?snapshot={SNAP_Q}"}, "no signature"),
        ({"destination_uri": f"{BASE}/r.vhd?snapshot={SNAP_Q}&{WRITE}"}, "names a snapshot"),
        ({"destination_uri": f"{BASE}/r.vhd?sp=r&sig={SIG}"}, "sp=r:"),
        ({"destination_uri": f"{BASE}/r.vhd?sp=cw&sig={SIG}"}, "sp=cw:"),
        ({"destination_uri": "not a url"}, "destination_uri"),
        ({"timeout": 0}, "timeout must be positive"),
        ({"wait_timeout": -1}, "wait_timeout must be positive"),
    ],
)
def test_invalid_requests_fail_with_code_11_and_a_redacted_sentence(overrides, expected):
    with pytest.raises(VmSnapshotError) as caught:
        request_from_params(params(**overrides))
    assert caught.value.status == Status.error_parameter
    assert expected in caught.value.message
    assert SIG not in caught.value.message and SIG.replace("%3D", "=") not in caught.value.message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (None, None),
        ("", None),
        (f"{BASE}/d.vhd?{READ}", f"{BASE}/d.vhd"),
        (f"{BASE}/d.vhd?snapshot={SNAP_Q}&{READ}", f"{BASE}/d.vhd?snapshot={SNAP}"),
        (f"{BASE}/d.vhd?{READ}&snapshot={SNAP_Q}", f"{BASE}/d.vhd?snapshot={SNAP}"),
        (f"{BASE}/d.vhd", f"{BASE}/d.vhd"),
    ],
)
def test_a_copy_source_is_shown_without_its_sas(url, expected):
    assert copy_source_without_sas(url) == expected


def properties(**overrides) -> dict:
    values = {
        "blob_type": "PageBlob",
        "content_length": 1024,
        "metadata": {},
        "copy_id": "copy-1",
        "copy_status": "success",
        "copy_status_description": "",
        "copy_progress": "1024/1024",
        "copy_source": f"{BASE}/data.vhd?snapshot={SNAP}",
        "copy_completion_time": "Fri, 02 Jan 2026 03:05:00 GMT",
        "last_modified": "Fri, 02 Jan 2026 03:05:00 GMT",
    }
    values.update(overrides)
    return values


@pytest.mark.parametrize(
    ("overrides", "held"),
    [
        ({}, True),
        ({"last_modified": "Fri, 02 Jan 2026 03:06:00 GMT"}, False),  # written since the copy
        ({"copy_source": f"{BASE}/data.vhd?snapshot=2020-01-01T00:00:00Z"}, False),
        ({"copy_source": f"{BASE}/other.vhd?snapshot={SNAP}"}, False),
        ({"copy_status": "pending"}, False),
        ({"copy_source": None, "copy_status": None, "copy_completion_time": None}, False),
        ({"copy_completion_time": "garbage"}, False),
    ],
)
def test_a_destination_holds_the_snapshot_only_when_copied_from_it_and_unmodified(overrides, held):
    assert holds_snapshot(properties(**overrides), f"{BASE}/data.vhd?snapshot={SNAP}") is held


@pytest.mark.parametrize(
    ("request_overrides", "destination", "expected"),
    [
        ({}, None, "create"),
        ({}, properties(), "none"),
        ({"force": True, "overwrite": True}, properties(), "overwrite"),
        ({"overwrite": True}, properties(copy_source=None), "overwrite"),
        ({}, properties(copy_source=None), "does not hold snapshot"),
        ({"force": True}, properties(), "set overwrite"),
        ({"overwrite": True}, properties(blob_type="BlockBlob"), "is a BlockBlob"),
    ],
)
def test_plan(request_overrides, destination, expected):
    request = request_from_params(params(**request_overrides))
    source = properties(copy_source=None)
    if expected in ("create", "none", "overwrite"):
        assert plan(request, source, destination) == expected
    else:
        with pytest.raises(VmSnapshotError) as caught:
            plan(request, source, destination)
        assert caught.value.status == Status.error_parameter
        assert expected in caught.value.message


class FakeEndpoint:
    """The destination as the copy goes on: each get_properties() returns the next state."""

    def __init__(self, states: list[dict], existing: dict | None = None) -> None:
        self.sas = request_from_params(params()).destination
        self.states = list(states)
        self.existing = existing
        self.aborted: list[str] = []
        self.copies: list[str] = []

    def get_properties(self, **_) -> dict:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def find_properties(self, **_):
        return self.existing

    def start_copy(self, source_url: str, **_) -> dict:
        self.copies.append(source_url)
        return {"copy_id": "copy-1", "copy_status": "pending"}

    def abort_copy(self, copy_id: str, **_) -> None:
        self.aborted.append(copy_id)

    def close(self) -> None:
        pass


@pytest.fixture
def fast_polls(monkeypatch):
    monkeypatch.setattr(_restore, "FIRST_POLL_SECONDS", 0.001)
    monkeypatch.setattr(_restore, "MAX_POLL_SECONDS", 0.005)


def test_a_pending_copy_is_followed_to_success(fast_polls):
    endpoint = FakeEndpoint(
        [properties(copy_status="pending", copy_progress="1/4")] * 3 + [properties()]
    )
    done = wait_for_copy(endpoint, "copy-1", "pending", time.monotonic() + 10)
    assert done["copy_status"] == "success" and endpoint.states == [properties()]
    assert endpoint.aborted == []


@pytest.mark.parametrize(
    ("final", "expected"),
    [
        (properties(copy_status="failed", copy_status_description="500 source gone"), "failed"),
        (properties(copy_status="aborted"), "aborted: no reason given"),
        (properties(copy_id="copy-2", copy_status="pending"), "Another copy (copy-2)"),
    ],
)
def test_a_copy_that_does_not_succeed_fails_the_restore(fast_polls, final, expected):
    endpoint = FakeEndpoint([properties(copy_status="pending"), final])
    with pytest.raises(VmSnapshotError) as caught:
        wait_for_copy(endpoint, "copy-1", "pending", time.monotonic() + 10)
    assert caught.value.status == Status.error and expected in caught.value.message


def test_a_copy_still_pending_at_the_deadline_is_aborted(fast_polls):
    endpoint = FakeEndpoint([properties(copy_status="pending", copy_progress="1/4")])
    with pytest.raises(VmSnapshotError) as caught:
        wait_for_copy(endpoint, "copy-1", "pending", time.monotonic() + 0.05)
    assert endpoint.aborted == ["copy-1"]
    assert "did not finish within wait_timeout (at 1/4); it was aborted" in caught.value.message


@pytest.mark.parametrize(
    ("existing", "check_mode", "action", "copied"),
    [
        (None, False, "create", True),
        (None, True, "create", False),
        (properties(), False, "none", False),
    ],
)
def test_restore_copies_only_when_it_must_and_not_in_check_mode(
    monkeypatch, fast_polls, existing, check_mode, action, copied
):
    source = properties(copy_source=None, metadata={"appconsistentLevel": "application"})
    destination = FakeEndpoint([properties(copy_status="pending"), properties()], existing)
    endpoints = iter([FakeEndpoint([source]), destination])
    monkeypatch.setattr(_restore, "BlobEndpoint", lambda sas, timeout: next(endpoints))

    result = restore(request_from_params(params()), check_mode=check_mode)

    assert (result["action"], result["changed"]) == (action, action != "none")
    assert bool(destination.copies) is copied
    assert result["consistency"] == "application"
    assert result["copy_id"] == (None if check_mode else "copy-1")
    assert SIG not in repr(result)
