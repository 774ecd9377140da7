"""Every Blob REST exchange ends by one absolute deadline and reads a bounded answer.

A hostile loopback server (the fault proxy's own answers, no blob service behind it) trickles
the status line and headers, trickles or never ends a body, echoes the request, or answers 201
without the snapshot's time. Each call must return by its deadline (plus a little scheduling
slack), and a 201 without evidence is a failed disk.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._blob_rest import (
    MAX_BODY_BYTES,
    BlobEndpoint,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._redact import forget_all
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._sas import parse_sas_uri
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)
from harness.faultproxy import FaultProxy, Rule, any_request, is_snapshot

SIG = "dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZSAxMjM0NQ=="
# Scheduling slack on a busy 2-core machine; the bound itself is the deadline.
SLACK = 0.75


@pytest.fixture
def server():
    forget_all()
    proxy = FaultProxy("127.0.0.1", 9)  # never forwards: every test answers by a rule
    yield proxy
    proxy.close()
    forget_all()


def endpoint_for(server: FaultProxy, timeout: float = 0.4) -> BlobEndpoint:
    sas = parse_sas_uri(
        f"http://127.0.0.1:{server.port}/devstoreaccount1/c/disk.vhd?sv=1&sp=rw&sig={SIG}",
        what="disk 0",
    )
    return BlobEndpoint(sas, timeout=timeout)


def timed(call):
    start = time.monotonic()
    try:
        outcome = call()
    except VmSnapshotError as exc:
        outcome = exc
    return outcome, time.monotonic() - start


# (rule keywords, seconds between bytes): each trickle keeps every read inside the per-read
# timeout (0.4 s), so only an absolute deadline can end the call.
TRICKLES = {
    "status line and headers, 0.1 s a byte": dict(action="trickle_head", delay=0.1),
    "status line and headers, 0.3 s a byte": dict(action="trickle_head", delay=0.3),
    "error body, 0.05 s a byte": dict(action="trickle", delay=0.05, status=500, body=b"x" * 400),
    "201 body, 0.2 s a byte": dict(
        action="trickle", delay=0.2, status=201, body=b"y" * 100, headers={"x-ms-snapshot": "x"}
    ),
}


@pytest.mark.parametrize("deadline", [0.8, 1.7])
@pytest.mark.parametrize("trickle", list(TRICKLES))
def test_a_trickled_snapshot_answer_ends_by_the_deadline(server, trickle, deadline):
    server.rules[:] = [Rule(is_snapshot, **TRICKLES[trickle])]
    endpoint = endpoint_for(server)
    try:
        result, took = timed(
            lambda: endpoint.create_snapshot({}, deadline=time.monotonic() + deadline)
        )
    finally:
        endpoint.close()
    assert took <= deadline + SLACK, f"{took:.2f} s against a {deadline} s deadline"
    assert not result.ok and result.status == Status.error_http_failure


@pytest.mark.parametrize("timeout", [0.3, 0.9])
def test_without_a_deadline_the_timeout_is_absolute(server, timeout):
    server.rules[:] = [Rule(any_request, action="trickle_head", delay=timeout / 3)]
    endpoint = endpoint_for(server, timeout=timeout)
    try:
        outcome, took = timed(endpoint.get_properties)
    finally:
        endpoint.close()
    assert isinstance(outcome, VmSnapshotError) and outcome.status == Status.error_http_failure
    assert took <= timeout + SLACK


def test_an_endless_201_body_is_read_up_to_its_bound(server):
    server.rules[:] = [
        Rule(is_snapshot, action="endless", headers={"x-ms-snapshot": "2026-01-01T00:00:00.1Z"})
    ]
    endpoint = endpoint_for(server, timeout=5)
    rss_before = _rss_kib()
    try:
        result, took = timed(lambda: endpoint.create_snapshot({}, deadline=time.monotonic() + 3))
    finally:
        endpoint.close()
    # The evidence is in the headers; the body stopped at the bound, the connection dropped.
    assert result.ok and result.snapshot == "2026-01-01T00:00:00.1Z"
    assert took < 3
    assert _rss_kib() - rss_before < 50 * 1024
    assert MAX_BODY_BYTES <= 1024 * 1024


def test_an_endless_error_body_ends_by_the_deadline_with_a_short_error(server):
    server.rules[:] = [Rule(is_snapshot, action="endless", status=500)]
    endpoint = endpoint_for(server, timeout=5)
    try:
        result, took = timed(lambda: endpoint.create_snapshot({}, deadline=time.monotonic() + 2))
    finally:
        endpoint.close()
    assert not result.ok and len(result.error) <= 300
    assert took < 2 + SLACK


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-ms-snapshot": ""},
        {"x-ms-snapshot": "yesterday"},
        {"x-ms-snapshot": "2026-01-01"},
        {"x-ms-snapshot": "2026-01-01T00:00:00Z; sig=" + SIG},
        {"x-ms-snapshot": SIG},
        {"x-ms-request-id": "1"},
    ],
    ids=["none", "empty", "words", "date only", "with text", "the signature", "other header"],
)
@pytest.mark.parametrize("status", [200, 201])
def test_a_success_without_a_snapshot_time_is_a_failed_disk(server, status, headers):
    server.rules[:] = [Rule(is_snapshot, status=status, headers=headers)]
    endpoint = endpoint_for(server)
    try:
        result = endpoint.create_snapshot({})
    finally:
        endpoint.close()
    assert not result.ok and result.snapshot is None and result.snapshot_url is None
    assert result.status == Status.error_http_failure
    assert "x-ms-snapshot" in result.error
    assert SIG not in result.error and SIG[:12] not in result.error


def test_abort_ends_a_blocked_call_from_another_thread(server):
    server.rules[:] = [Rule(is_snapshot, action="blackhole")]
    endpoint = endpoint_for(server, timeout=30)
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.update(result=endpoint.create_snapshot({})), daemon=True
    )
    thread.start()
    assert server.snapshot_seen.wait(5)
    time.sleep(0.1)
    start = time.monotonic()
    endpoint.abort()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - start < 2
    assert not outcome["result"].ok
    endpoint.close()


def test_an_echoing_server_never_gets_the_signature_into_an_error(server):
    server.rules[:] = [Rule(any_request, action="echo")]
    endpoint = endpoint_for(server)
    try:
        result = endpoint.create_snapshot({})
        outcome, _took = timed(endpoint.get_properties)
    finally:
        endpoint.close()
    for text in (result.error, outcome.message):
        assert SIG[:12] not in text and SIG[-14:] not in text


def _rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.parametrize("stall", ["trickle_head", "blackhole", "endless"])
def test_a_restore_call_ends_by_its_timeout(server, stall):
    """snapshot_restore's calls (properties, copy, polls) each end by the absolute timeout."""
    from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._restore import (
        request_from_params,
        restore,
    )

    server.rules[:] = [Rule(any_request, action=stall, delay=0.2, status=200)]
    base = f"http://127.0.0.1:{server.port}/devstoreaccount1/c"
    request = request_from_params(
        {
            "snapshot_uri": f"{base}/disk.vhd?snapshot=2026-01-01T00:00:00Z&sp=r&sig={SIG}",
            "snapshot": None,
            "destination_uri": f"{base}/new.vhd?sp=rcw&sig={SIG[-3::-1]}==",
            "overwrite": False,
            "force": False,
            "timeout": 0.8,
            "wait_timeout": 30,
        }
    )
    outcome, took = timed(lambda: restore(request, check_mode=False))
    assert isinstance(outcome, VmSnapshotError)
    assert took <= 0.8 + SLACK
    assert SIG[:12] not in outcome.message


def test_a_hanging_name_lookup_ends_by_the_deadline(monkeypatch):
    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(10)
        return []

    monkeypatch.setattr("socket.getaddrinfo", hang)
    sas = parse_sas_uri(
        f"https://acct.blob.core.windows.net/c/disk.vhd?sv=1&sp=rw&sig={SIG}", what="disk 0"
    )
    endpoint = BlobEndpoint(sas, timeout=0.5)
    try:
        outcome, took = timed(endpoint.get_properties)
    finally:
        release.set()
        endpoint.close()
    assert isinstance(outcome, VmSnapshotError) and "timed out" in outcome.message
    assert took <= 0.5 + SLACK
