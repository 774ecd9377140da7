"""The standard-library Blob client against a real Azurite (azure-storage-blob is the oracle).

Also against small local servers made here: a black hole (listens, never answers), a closed
port, and a scripted server for the answers Azurite cannot give (snapshot limit, throttling,
a kept-alive connection closed by the server).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._blob_rest import (
    BlobEndpoint,
    SnapshotResult,
    snapshot_status_for,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._sas import parse_sas_uri
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)
from harness.azurite import DEFAULT_CONTAINER, start_azurite

FAKE_SIG = "c2VjcmV0c2lnbmF0dXJlLXZhbHVlLTAxMjM0NTY3ODk%3D"


def endpoint_for(uri: str, timeout: float = 5.0) -> BlobEndpoint:
    return BlobEndpoint(parse_sas_uri(uri, what="disk 0"), timeout=timeout)


def signature_of(uri: str) -> str:
    return parse_qs(urlsplit(uri).query)["sig"][0]


def assert_no_secret(uri: str, *things) -> None:
    """Neither the signature nor its percent-encoded form appears in any of `things`."""
    raw = urlsplit(uri).query.split("sig=")[1].split("&")[0]
    for secret in (signature_of(uri), raw):
        for thing in things:
            text = json.dumps(thing) if isinstance(thing, (dict, list)) else f"{thing!r} {thing}"
            assert secret not in text


# --- Azurite ------------------------------------------------------------------------------


def test_snapshot_keeps_the_old_bytes_and_carries_metadata(azurite, blob_disks):
    disks = blob_disks(2)
    results = []
    for disk in disks:
        endpoint = endpoint_for(disk.sas)
        try:
            properties = endpoint.open()
            assert properties["blob_type"] == "PageBlob"
            assert properties["content_length"] == len(disk.content)
            results.append(endpoint.create_snapshot({"level": "application", "taskId": "t-1"}))
        finally:
            endpoint.close()
    for disk, result in zip(disks, results):
        assert result.ok and result.status == Status.success and result.http_status == 201
        assert result.blob_url == disk.sas.split("?")[0]
        # The oracle lists exactly this snapshot, with our metadata.
        listed = azurite.list_snapshots(disk.container, disk.name)
        assert [item["snapshot"] for item in listed] == [result.snapshot]
        assert listed[0]["metadata"] == {"level": "application", "taskId": "t-1"}
        # Overwrite the base blob: the snapshot still holds the old bytes.
        azurite.write_pages(disk.container, disk.name, b"X" * 512)
        assert azurite.read_blob(disk.container, disk.name)[:512] == b"X" * 512
        assert azurite.read_snapshot(disk.container, disk.name, result.snapshot) == disk.content
        info = result.snapshot_info()
        assert info["isSuccessful"] is True
        assert info["snapshotUri"] == f"{result.blob_url}?snapshot={result.snapshot}"
        assert_no_secret(disk.sas, result, result.as_dict(), info)
    assert snapshot_status_for(results) == Status.success


def test_snapshot_without_open_and_repeated_calls_reuse_one_endpoint(azurite, blob_disks):
    (disk,) = blob_disks(1)
    endpoint = endpoint_for(disk.sas)
    try:
        first = endpoint.create_snapshot({})
        second = endpoint.create_snapshot({})
    finally:
        endpoint.close()
    assert first.ok and second.ok and first.snapshot != second.snapshot
    listed = azurite.list_snapshots(disk.container, disk.name)
    assert [item["snapshot"] for item in listed] == sorted([first.snapshot, second.snapshot])


@pytest.mark.parametrize(
    ("variant", "open_status", "fragment"),
    [
        ("read-only", Status.error_parameter, "read-only (sp=r)"),
        ("expired", Status.error_http_failure, "HTTP 403"),
        ("not-yet-valid", Status.error_http_failure, "HTTP 403"),
        ("bad-signature", Status.error_http_failure, "HTTP 403"),
        ("other-blob", Status.error_http_failure, "HTTP 404"),
    ],
)
def test_unusable_sas_fails_clearly_before_and_at_the_snapshot(
    azurite, blob_disks, variant, open_status, fragment
):
    (disk,) = blob_disks(1)
    now = datetime.now(timezone.utc)
    options = {
        "read-only": {"permissions": "r"},
        "expired": {"expiry": now - timedelta(hours=1)},
        "not-yet-valid": {"start": now + timedelta(hours=1)},
        "bad-signature": {"bad_signature": True},
        "other-blob": {},
    }[variant]
    name = "missing.vhd" if variant == "other-blob" else disk.name
    uri = azurite.blob_sas(disk.container, name, **options)
    endpoint = endpoint_for(uri)
    try:
        with pytest.raises(VmSnapshotError) as caught:
            endpoint.open()
        result = endpoint.create_snapshot({"level": "crash"})
    finally:
        endpoint.close()
    error = caught.value
    assert error.status == open_status
    assert fragment in error.message and error.message.endswith(".")
    if variant != "read-only":
        assert "read-only, expired, not yet valid" in error.message or "no such" in error.message
    assert not result.ok and result.snapshot is None
    assert result.http_status == (404 if variant == "other-blob" else 403)
    assert result.status == Status.error_http_failure and result.error.startswith("HTTP 4")
    # Nothing was taken: the oracle sees no snapshot of the disk.
    assert azurite.list_snapshots(disk.container, disk.name) == []
    failed_open = SnapshotResult.failure(endpoint.sas.blob_url, error)
    assert snapshot_status_for([failed_open]) == Status.FailedRetryableSnapshotFailedNoNetwork
    assert_no_secret(
        uri,
        error,
        error.message,
        str(caught.getrepr()),
        result,
        result.as_dict(),
        result.snapshot_info(),
        failed_open,
        endpoint,
        endpoint.sas,
    )


def test_snapshot_only_sas_is_connected_not_read(azurite, blob_disks):
    (disk,) = blob_disks(1)
    endpoint = endpoint_for(azurite.blob_sas(disk.container, disk.name, permissions="w"))
    try:
        assert endpoint.open() == {}
        result = endpoint.create_snapshot({})
    finally:
        endpoint.close()
    assert result.ok
    assert [item["snapshot"] for item in azurite.list_snapshots(disk.container, disk.name)] == [
        result.snapshot
    ]


def test_put_block_blob_writes_the_status_blob(azurite):
    uri = azurite.status_blob_sas(container=azurite.create_container(), name="status.json")
    container = urlsplit(uri).path.split("/")[2]
    endpoint = endpoint_for(uri)
    try:
        endpoint.put_block_blob(b'[{"v": 1}]', "application/json")
        endpoint.put_block_blob(b'[{"v": 2}]', "application/json")
    finally:
        endpoint.close()
    assert azurite.read_blob(container, "status.json") == b'[{"v": 2}]'
    properties = azurite.blob_properties(container, "status.json")
    assert properties.blob_type == "BlockBlob"
    assert properties.content_settings.content_type == "application/json"


def test_put_block_blob_with_expired_sas_raises(azurite):
    container = azurite.create_container()
    expired = datetime.now(timezone.utc) - timedelta(minutes=5)
    uri = azurite.blob_sas(container, "log.txt", permissions="rcw", expiry=expired)
    endpoint = endpoint_for(uri)
    try:
        with pytest.raises(VmSnapshotError) as caught:
            endpoint.put_block_blob(b"log")
    finally:
        endpoint.close()
    assert caught.value.status == Status.error_http_failure
    assert "Could not write" in caught.value.message and "HTTP 403" in caught.value.message
    assert_no_secret(uri, caught.value, str(caught.getrepr()))


class _ImportWatcher:
    """A meta path finder that records every import attempt and finds nothing."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name, path=None, target=None):
        self.names.append(name)
        return None


def test_snapshot_paths_import_nothing_after_open(azurite, blob_disks):
    """Success, an XML error body, a dropped connection and a refused reconnect: no import."""
    ok_disk, gone_disk = blob_disks(2)
    scripted = ScriptedServer([HEAD_OK, HEAD_OK]).start()
    ok, gone = endpoint_for(ok_disk.sas), endpoint_for(gone_disk.sas)
    dropped = endpoint_for(scripted.uri(), timeout=2)
    endpoints = [ok, gone, dropped]
    watcher = _ImportWatcher()
    try:
        for endpoint in endpoints:
            endpoint.open()
        azurite.service.get_blob_client(gone_disk.container, gone_disk.name).delete_blob()
        scripted.stop()  # the kept-alive connection is closed and the port refuses
        before = set(sys.modules)
        sys.meta_path.insert(0, watcher)
        try:
            results = [endpoint.create_snapshot({"k": "v"}) for endpoint in endpoints]
        finally:
            sys.meta_path.remove(watcher)
    finally:
        for endpoint in endpoints:
            endpoint.close()
        scripted.stop()
    assert watcher.names == []
    assert set(sys.modules) == before
    assert [r.ok for r in results] == [True, False, False]
    assert results[1].http_status == 404 and "BlobNotFound" in results[1].error
    assert results[2].http_status is None and "connection refused" in results[2].error
    assert snapshot_status_for(results) == Status.FailedRetryableSnapshotFailedRestrictedNetwork


@pytest.fixture(scope="module")
def azurite_tls(tmp_path_factory):
    """A second Azurite that serves HTTPS with its own self-signed certificate."""
    server = start_azurite(tmp_path_factory.mktemp("azurite-tls"), tls=True)
    yield server
    server.stop()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_snapshot_over_https_checks_the_certificate(azurite_tls, host):
    name = f"tls-{host}.vhd"
    azurite_tls.create_page_blob(name, 1024, b"tls disk")
    uri = azurite_tls.blob_sas(DEFAULT_CONTAINER, name).replace("127.0.0.1", host)
    assert uri.startswith("https://")
    trusted = BlobEndpoint(
        parse_sas_uri(uri, what="disk 0"),
        timeout=5,
        ssl_context=ssl.create_default_context(cafile=azurite_tls.ca_file),
    )
    untrusted = endpoint_for(uri)
    try:
        trusted.open()
        result = trusted.create_snapshot({"tls": "yes"})
        with pytest.raises(VmSnapshotError) as caught:
            untrusted.open()
        refused = untrusted.create_snapshot({})
    finally:
        trusted.close()
        untrusted.close()
    assert result.ok and result.blob_url.startswith("https://")
    listed = azurite_tls.list_snapshots(DEFAULT_CONTAINER, name)
    assert listed == [{"snapshot": result.snapshot, "metadata": {"tls": "yes"}}]
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message
    assert not refused.ok and "CERTIFICATE_VERIFY_FAILED" in refused.error
    assert_no_secret(uri, caught.value, refused, trusted, untrusted)


# --- dead and silent endpoints ------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _uri(port: int, path: str = "devstoreaccount1/disks/d0.vhd") -> str:
    return f"http://127.0.0.1:{port}/{path}?sv=2021-12-02&sr=b&sp=rw&sig={FAKE_SIG}"


def test_dead_endpoint_fails_fast():
    uri = _uri(_closed_port())
    endpoint = endpoint_for(uri, timeout=10)
    start = time.monotonic()
    with pytest.raises(VmSnapshotError) as caught:
        endpoint.open()
    result = endpoint.create_snapshot({})
    elapsed = time.monotonic() - start
    endpoint.close()
    assert elapsed < 2
    assert caught.value.status == Status.error_http_failure
    assert "connection refused" in caught.value.message
    assert not result.ok and result.error == "no response: connection refused"
    assert snapshot_status_for([result]) == Status.FailedRetryableSnapshotFailedNoNetwork
    assert_no_secret(uri, caught.value, str(caught.getrepr()), result, endpoint)


@pytest.fixture
def black_hole():
    """A socket that accepts connections (the kernel does) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def test_black_hole_fails_within_the_timeout(black_hole):
    uri = _uri(black_hole)
    endpoint = endpoint_for(uri, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(VmSnapshotError) as caught:
        endpoint.open()
    opened = time.monotonic()
    result = endpoint.create_snapshot({})
    done = time.monotonic()
    endpoint.close()
    assert 0.4 < opened - start < 1.5
    assert 0.4 < done - opened < 1.5
    assert "timed out" in caught.value.message
    assert not result.ok and result.error == "no response: timed out"
    assert_no_secret(uri, caught.value, result)


def test_deadline_bounds_a_call_with_a_long_timeout(black_hole):
    endpoint = endpoint_for(_uri(black_hole), timeout=30)
    start = time.monotonic()
    result = endpoint.create_snapshot({}, deadline=start + 0.5)
    elapsed = time.monotonic() - start
    late = endpoint.create_snapshot({}, deadline=time.monotonic() - 1)
    endpoint.close()
    assert 0.4 < elapsed < 1.5
    assert not result.ok and "timed out" in result.error
    assert not late.ok and "timed out" in late.error


# --- a scripted server for what Azurite does not do ---------------------------------------


def _response(status: str, headers: dict, body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _storage_error(status: str, code: str, message: str) -> bytes:
    body = (
        '<?xml version="1.0" encoding="utf-8"?><Error>'
        f"<Code>{code}</Code><Message>{message}\nRequestId:0000\nTime:2025-01-01</Message></Error>"
    ).encode()
    return _response(status, {"x-ms-error-code": code, "Content-Type": "application/xml"}, body)


HEAD_OK = _response("200 OK", {"x-ms-blob-type": "PageBlob", "Content-Length": "512"})
SNAPSHOT_OK = _response("201 Created", {"x-ms-snapshot": "2025-01-01T00:00:00.0000000Z"})
DROP = None  # close the connection without answering


class ScriptedServer:
    """Answers each request with the next scripted response; DROP closes the connection."""

    def __init__(self, script: list, *, close_after_each: bool = False) -> None:
        self.script = list(script)
        self.close_after_each = close_after_each
        self.requests: list[tuple[str, dict]] = []
        self.connections = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self._stopping = threading.Event()
        self._clients: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def uri(self) -> str:
        return _uri(self._sock.getsockname()[1])

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for client in self._clients:
            # shutdown, not only close: the handler's makefile() keeps the descriptor open.
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()
        self._sock.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                client = self._sock.accept()[0]
            except OSError:
                continue
            self.connections += 1
            self._clients.append(client)
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        reader = client.makefile("rb")
        while self.script:
            request_line = reader.readline()
            if not request_line:
                return
            headers = {}
            for line in iter(reader.readline, b"\r\n"):
                name, value = line.decode().split(":", 1)
                headers[name.strip().lower()] = value.strip()
            reader.read(int(headers.get("content-length", "0")))
            self.requests.append((request_line.decode().strip(), headers))
            answer = self.script.pop(0)
            if answer is DROP:
                client.shutdown(socket.SHUT_RDWR)
                return
            client.sendall(answer)
            if self.close_after_each:
                client.shutdown(socket.SHUT_RDWR)
                return


@pytest.fixture
def scripted():
    servers = []

    def make(script, **kwargs) -> ScriptedServer:
        servers.append(ScriptedServer(script, **kwargs).start())
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


@pytest.mark.parametrize(
    ("answer", "status", "fragment"),
    [
        (
            _storage_error(
                "409 Conflict",
                "SnapshotCountExceeded",
                "The snapshot count against this blob has been exceeded.",
            ),
            Status.FailedSnapshotLimitReached,
            "HTTP 409 SnapshotCountExceeded: The snapshot count",
        ),
        (
            _storage_error(
                "409 Conflict",
                "SnapshotOperationRateExceeded",
                "The rate of snapshot blob calls is exceeded.",
            ),
            Status.FailedRetryableSnapshotRateExceeded,
            "HTTP 409 SnapshotOperationRateExceeded",
        ),
        (
            _storage_error("503 Server Busy", "ServerBusy", "The server is busy."),
            Status.FailedRetryableSnapshotRateExceeded,
            "HTTP 503 ServerBusy: The server is busy.",
        ),
        (
            _storage_error("500 Internal Error", "InternalError", f"sig={FAKE_SIG} went wrong"),
            Status.error_http_failure,
            "HTTP 500 InternalError: sig=REDACTED went wrong",
        ),
    ],
)
def test_storage_errors_map_to_their_codes(scripted, answer, status, fragment):
    server = scripted([HEAD_OK, answer])
    endpoint = endpoint_for(server.uri())
    try:
        endpoint.open()
        result = endpoint.create_snapshot({"level": "crash"})
    finally:
        endpoint.close()
    assert not result.ok and result.status == status
    assert result.error.startswith(fragment)
    assert "RequestId" not in result.error  # only the message's first line
    request_line, headers = server.requests[1]
    assert request_line.startswith("PUT /devstoreaccount1/disks/d0.vhd?sv=")
    assert request_line.endswith("&comp=snapshot HTTP/1.1")
    assert headers["x-ms-meta-level"] == "crash" and headers["content-length"] == "0"
    assert headers["x-ms-version"]
    assert_no_secret(server.uri(), result, result.as_dict(), endpoint)


def test_reconnects_when_the_server_closed_the_kept_alive_connection(scripted):
    server = scripted([HEAD_OK, SNAPSHOT_OK], close_after_each=True)
    endpoint = endpoint_for(server.uri())
    try:
        endpoint.open()
        time.sleep(0.05)  # let the server's close arrive, as after a long pre-script
        result = endpoint.create_snapshot({})
    finally:
        endpoint.close()
    assert result.ok and result.snapshot == "2025-01-01T00:00:00.0000000Z"
    assert server.connections == 2 and len(server.requests) == 2


def test_retries_once_when_a_reused_connection_drops_the_request(scripted):
    server = scripted([HEAD_OK, DROP, SNAPSHOT_OK])
    endpoint = endpoint_for(server.uri())
    try:
        endpoint.open()
        result = endpoint.create_snapshot({})
    finally:
        endpoint.close()
    assert result.ok
    assert server.connections == 2 and len(server.requests) == 3


def test_after_open_no_dns_lookup_even_to_reconnect(scripted, monkeypatch):
    server = scripted([HEAD_OK, SNAPSHOT_OK], close_after_each=True)
    endpoint = endpoint_for(server.uri().replace("://127.0.0.1:", "://localhost:"))
    lookups = []

    def no_lookup(*args, **kwargs):
        lookups.append(args)
        raise OSError("no DNS while frozen")

    try:
        endpoint.open()
        monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
        result = endpoint.create_snapshot({})
    finally:
        endpoint.close()
    assert result.ok, result.error
    assert lookups == []
    assert server.connections == 2


def test_no_retry_when_a_fresh_connection_drops_the_request(scripted):
    server = scripted([DROP, SNAPSHOT_OK])
    endpoint = endpoint_for(server.uri())
    try:
        result = endpoint.create_snapshot({})
    finally:
        endpoint.close()
    assert not result.ok and "RemoteDisconnected" in result.error
    assert server.connections == 1 and len(server.requests) == 1


# --- the run's snapshot code --------------------------------------------------------------


def _result(ok: bool, status: Status = Status.error_http_failure) -> SnapshotResult:
    return SnapshotResult(
        "http://h/a/c/b",
        "2025-01-01T00:00:00Z" if ok else None,
        ok,
        201 if ok else 403,
        None if ok else "HTTP 403",
        Status.success if ok else status,
    )


OK = _result(True)
FAILED = _result(False)
LIMIT = _result(False, Status.FailedSnapshotLimitReached)
RATE = _result(False, Status.FailedRetryableSnapshotRateExceeded)


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([OK], Status.success),
        ([OK, OK, OK], Status.success),
        ([], Status.FailedRetryableSnapshotFailedNoNetwork),
        ([FAILED], Status.FailedRetryableSnapshotFailedNoNetwork),
        ([FAILED, FAILED], Status.FailedRetryableSnapshotFailedNoNetwork),
        ([OK, FAILED], Status.FailedRetryableSnapshotFailedRestrictedNetwork),
        ([FAILED, OK, OK], Status.FailedRetryableSnapshotFailedRestrictedNetwork),
        ([LIMIT], Status.FailedSnapshotLimitReached),
        ([OK, LIMIT], Status.FailedSnapshotLimitReached),
        ([RATE, LIMIT], Status.FailedSnapshotLimitReached),
        ([RATE], Status.FailedRetryableSnapshotRateExceeded),
        ([RATE, FAILED], Status.FailedRetryableSnapshotRateExceeded),
        ([OK, RATE], Status.FailedRetryableSnapshotFailedRestrictedNetwork),
    ],
)
def test_snapshot_status_for(results, expected):
    assert snapshot_status_for(results) == expected
