# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""A small standard-library client for the Blob REST calls of a snapshot run.

One `BlobEndpoint` per blob owns one persistent connection (use it from one thread at a time).
`open()` resolves the host, connects and checks that the SAS answers, so the call made while
filesystems are frozen (`create_snapshot`) needs no DNS lookup, and no import either: everything
this file uses, also on its error paths, is imported here at load time.

Time bounds: every call ends by one absolute deadline, a `time.monotonic()` value: the
`deadline` given, or `timeout` seconds after the call starts. The name lookup (in a daemon
thread), connecting, the TLS handshake, sending (in pieces), the status line, every header line
and every body read each wait at most `min(timeout, deadline - now)`, so a server that trickles
one byte at a time cannot stretch the call past its deadline; the single reconnect is only
tried while time is left. `abort()` shuts the socket down from another thread (for a caller
that stops waiting).

Size bounds: a status line or header line longer than 64 KiB, or more than 100 headers, is an
invalid answer (http.client's own limits); a body is read up to `MAX_BODY_BYTES` (the rest is
dropped with the connection), so an endless body cannot grow the process.

Redaction: every text built from a server's answer goes through `_redact.scrub()`, which
removes each registered secret (the SAS signatures) in any spelling the server may echo.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import re
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._sas import SasUri, redact
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

# A service version that Azure Storage and Azurite both accept (the SAS keeps its own `sv`).
X_MS_VERSION = "2021-12-02"
SNAPSHOT_COUNT_EXCEEDED = "The snapshot count against this blob has been exceeded"
SNAPSHOT_RATE_EXCEEDED = "The rate of snapshot blob calls is exceeded"
_MAX_ERROR_TEXT = 300
# Only this much of a server's text is redacted and kept: redaction costs time in proportion
# to text x registered secrets (64 KiB with 64 signatures: 1.3 s, per disk, with the GIL
# held), and no more than _MAX_ERROR_TEXT of it is shown anyway. A secret cut at this bound
# is still caught as a piece of 8 or more characters.
_SCRUBBED_TEXT = 1024
# A call's timeout: what a socket can wait for (an infinite or NaN one fails deep in the
# socket layer with an OverflowError or ValueError).
MAX_TIMEOUT_SECONDS = 86400.0
# Storage error bodies are a few hundred bytes; nothing we call answers with more.
MAX_BODY_BYTES = 64 * 1024
_SEND_PIECE = 64 * 1024
# An x-ms-snapshot value: the snapshot's time, e.g. 2026-11-23T11:38:39.1670000Z.
_SNAPSHOT_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,7})?Z$")
_XML_CODE = re.compile(r"<Code>\s*([^<]*?)\s*</Code>")
_XML_MESSAGE = re.compile(r"<Message>\s*([^<\r\n]*)")
# How a kept-alive connection that the server closed meanwhile fails when it is used again.
_CLOSED_BY_SERVER = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)
_HINTS = {
    403: " (the SAS is read-only, expired, not yet valid, for another blob, or its signature "
    "is wrong)",
    404: " (no such container or blob)",
}


def copy_source_without_sas(url: str | None) -> str | None:
    """A copy source as `<blob URL>[?snapshot=<time>]`: its SAS query (and signature) dropped."""
    if not url:
        return None
    base, query = url.split("?", 1) if "?" in url else (url, "")
    snapshots = [value for name, value in parse_qsl(query) if name == "snapshot"]
    return f"{base}?snapshot={snapshots[0]}" if snapshots else base


def _properties(headers: dict[str, str]) -> dict:
    """Get Blob Properties headers as a dict; the copy source without its SAS."""
    return {
        "blob_type": headers.get("x-ms-blob-type"),
        "content_length": int(headers.get("content-length", "0")),
        "etag": headers.get("etag"),
        "last_modified": headers.get("last-modified"),
        "metadata": {
            name[len("x-ms-meta-") :]: value
            for name, value in headers.items()
            if name.startswith("x-ms-meta-")
        },
        "copy_id": headers.get("x-ms-copy-id"),
        "copy_status": headers.get("x-ms-copy-status"),
        "copy_status_description": redact(headers.get("x-ms-copy-status-description", "")),
        "copy_progress": headers.get("x-ms-copy-progress"),
        "copy_completion_time": headers.get("x-ms-copy-completion-time"),
        "copy_source": copy_source_without_sas(headers.get("x-ms-copy-source")),
    }


def failure_status(http_status: int | None, text: str) -> Status:
    """The code of one failed blob call: 85 and 173 from the storage error, else 15 (per blob)."""
    if SNAPSHOT_COUNT_EXCEEDED in text:
        return Status.FailedSnapshotLimitReached
    if SNAPSHOT_RATE_EXCEEDED in text or http_status == 503:
        return Status.FailedRetryableSnapshotRateExceeded
    return Status.error_http_failure


@dataclass(frozen=True)
class SnapshotResult:
    """The outcome of one disk's snapshot call; `error` is short and redacted."""

    blob_url: str
    snapshot: str | None
    ok: bool
    http_status: int | None
    error: str | None
    status: Status

    @classmethod
    def failure(cls, blob_url: str, exc: VmSnapshotError) -> SnapshotResult:
        """A disk that failed before its snapshot call (open() raised `exc`)."""
        return cls(blob_url, None, False, None, redact(exc.message), exc.status)

    @property
    def snapshot_url(self) -> str | None:
        return f"{self.blob_url}?snapshot={self.snapshot}" if self.snapshot else None

    def as_dict(self) -> dict:
        return {
            "blob_url": self.blob_url,
            "snapshot": self.snapshot,
            "snapshot_url": self.snapshot_url,
            "ok": self.ok,
            "http_status": self.http_status,
            "error": self.error,
            "status_code": int(self.status),
            "status_name": self.status.name,
        }

    def snapshot_info(self) -> dict:
        """The reference's per-disk `snapshotInfo` entry of the status document."""
        return {
            "isSuccessful": self.ok,
            "snapshotUri": self.snapshot_url,
            "errorMessage": self.error or "",
            "blobUri": self.blob_url,
            "directDriveSnapshotIdentifier": None,
        }


def snapshot_status_for(results: list[SnapshotResult]) -> Status:
    """The run's snapshot code from the per-disk results (docs/reference-behaviour.md §3, §5.3).

    all ok: 0 success; any disk at its snapshot limit: 85 (a retry cannot help); some ok: 761;
    none ok: 173 when throttled, else 76 (also when there are no disks at all).
    """
    failed = [result for result in results if not result.ok]
    if results and not failed:
        return Status.success
    causes = {result.status for result in failed}
    if Status.FailedSnapshotLimitReached in causes:
        return Status.FailedSnapshotLimitReached
    if len(failed) < len(results):
        return Status.FailedRetryableSnapshotFailedRestrictedNetwork
    if Status.FailedRetryableSnapshotRateExceeded in causes:
        return Status.FailedRetryableSnapshotRateExceeded
    return Status.FailedRetryableSnapshotFailedNoNetwork


@dataclass(frozen=True)
class _Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def error_text(self) -> str:
        """`HTTP 403 AuthenticationFailed: <first line of the storage message>`, short."""
        text = self.body.decode("utf-8", "replace")
        code_match, message_match = _XML_CODE.search(text), _XML_MESSAGE.search(text)
        code = self.headers.get("x-ms-error-code") or (code_match.group(1) if code_match else "")
        message = message_match.group(1).strip() if message_match else self.reason
        return _short(f"HTTP {self.status} {code}: {message}".replace(" :", ":"))


def checked_timeout(timeout: float, what: str = "timeout") -> float:
    """`timeout` if it is a number of seconds above 0 and at most a day; VmSnapshotError (11)."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise VmSnapshotError(Status.error_parameter, f"{what} must be a number of seconds.")
    if not 0 < timeout <= MAX_TIMEOUT_SECONDS:  # also NaN and infinity
        raise VmSnapshotError(
            Status.error_parameter,
            f"{what} must be above 0 and at most {MAX_TIMEOUT_SECONDS:g} seconds, not {timeout}.",
        )
    return float(timeout)


def _short(text: str) -> str:
    text = redact(text[:_SCRUBBED_TEXT])
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 1] + "…"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return _short(f"{type(exc).__name__}: {exc}")


class _Clock:
    """One exchange's absolute deadline; `left()` is what the next socket operation may wait."""

    def __init__(self, deadline: float, timeout: float) -> None:
        self.deadline = deadline
        self.timeout = timeout

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("the deadline passed")
        return min(self.timeout, left)


class _DeadlineReader(socket.SocketIO):
    """A socket's receiving side where every read waits only for the time left."""

    def __init__(self, sock: socket.socket, clock: _Clock) -> None:
        super().__init__(sock, "rb")
        self._clock = clock

    def readinto(self, b) -> int:
        self._sock.settimeout(self._clock.left())
        return super().readinto(b)


class _SocketView:
    """What http.client.HTTPResponse reads from: the socket behind a deadline-bound reader."""

    def __init__(self, sock: socket.socket, clock: _Clock) -> None:
        self._sock = sock
        self._clock = clock

    def makefile(self, mode: str, *args, **kwargs) -> io.BufferedReader:
        # As socket.makefile() does: the socket stays open until this reader is closed too,
        # so a "Connection: close" answer can still be read after http.client closes it.
        self._sock._io_refs += 1
        return io.BufferedReader(_DeadlineReader(self._sock, self._clock))


def resolve(host: str, port: int, clock) -> list:
    """getaddrinfo() within the time left: a resolver that hangs cannot hold the call.

    Done once per endpoint, before anything is frozen; the lookup thread is a daemon. `clock`
    is anything with `left()`: the seconds the lookup may take (raising when none are left).
    """
    found: dict = {}

    def look_up() -> None:
        try:
            found["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            found["error"] = exc

    thread = threading.Thread(target=look_up, name="blob-resolve", daemon=True)
    thread.start()
    thread.join(clock.left())
    if "addresses" in found:
        return found["addresses"]
    raise found.get("error") or socket.timeout(f"resolving {host} timed out")


def _connect_first(addresses: list, clock: _Clock) -> tuple:
    """Connect to the first address that answers; return (socket, the address entry)."""
    error: OSError = OSError("no address to connect to")
    for address in addresses:
        # A getaddrinfo() entry: (family, type, proto, canonname, sockaddr).
        sock = socket.socket(*address[:3])
        try:
            sock.settimeout(clock.left())
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(address[4])
            return sock, address
        except OSError as exc:
            sock.close()
            error = exc
            if isinstance(exc, socket.timeout):
                break
    raise error


class _BoundedSending:
    """Sends in pieces, each waiting only for the time left; reads through `_SocketView`."""

    clock: _Clock
    sock: socket.socket | None

    def use(self, clock: _Clock) -> None:
        self.clock = clock
        self.response_class = lambda sock, *args, **kwargs: http.client.HTTPResponse(
            _SocketView(sock, clock), *args, **kwargs
        )

    def send(self, data) -> None:
        if self.sock is None:
            raise http.client.NotConnected()
        view = memoryview(data if isinstance(data, (bytes, bytearray)) else bytes(data))
        for start in range(0, len(view), _SEND_PIECE):
            self.sock.settimeout(self.clock.left())
            self.sock.sendall(view[start : start + _SEND_PIECE])


class _PlainConnection(_BoundedSending, http.client.HTTPConnection):
    """Connects to addresses resolved beforehand: a reconnect needs no DNS lookup."""

    def __init__(self, host: str, port: int, addresses: list, clock: _Clock) -> None:
        super().__init__(host, port, timeout=clock.timeout)
        self.addresses = addresses
        self.use(clock)

    def connect(self) -> None:
        self.sock, address = _connect_first(self.addresses, self.clock)
        self.addresses = [address]


class _TlsConnection(_BoundedSending, http.client.HTTPSConnection):
    """The TLS variant; the certificate is checked against the host name, not the address."""

    def __init__(
        self, host: str, port: int, addresses: list, clock: _Clock, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=clock.timeout, context=context)
        self.addresses = addresses
        self.tls = context
        self.use(clock)

    def connect(self) -> None:
        sock, address = _connect_first(self.addresses, self.clock)
        try:
            # The whole handshake shares this one timeout (CPython's do_handshake deadline).
            sock.settimeout(self.clock.left())
            self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.addresses = [address]


def _closed_by_peer(sock) -> bool:
    """An idle kept-alive socket that is readable was closed (or spoiled) by the server.

    Checked before reuse so that a request is not sent into a connection known to be dead.
    """
    try:
        readable = select.select([sock], [], [], 0)[0]
    except (OSError, ValueError):
        return True
    return bool(readable)


class BlobEndpoint:
    """One blob behind a SAS URI, over one persistent HTTP(S) connection."""

    def __init__(
        self, sas: SasUri, *, timeout: float, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.sas = sas
        self.timeout = checked_timeout(timeout)
        self._ssl_context = ssl_context
        self._addresses: list | None = None
        self._conn: http.client.HTTPConnection | None = None

    def __repr__(self) -> str:
        return f"BlobEndpoint({self.sas.redacted!r}, timeout={self.timeout})"

    def open(self, *, deadline: float | None = None) -> dict:
        """Resolve, connect and check the SAS answers (Get Blob Properties); raise if not.

        A SAS without read permission is only connected (it cannot read properties). Call this
        before freezing; `get_properties()` right before the freeze also renews the
        connection if the server may have closed it meanwhile.
        """
        permissions = self.sas.permissions
        if permissions and not set(permissions) & set("cw"):
            raise VmSnapshotError(
                Status.error_parameter,
                f"The SAS URI of {self.sas.blob_url} is read-only (sp={permissions}): "
                "a snapshot needs the write (w) or create (c) permission.",
            )
        if permissions and "r" not in permissions:
            # A snapshot-only SAS may not read properties: check that the endpoint answers.
            try:
                self._connect(self._clock(deadline))
            except OSError as exc:
                raise VmSnapshotError(
                    Status.error_http_failure,
                    f"Could not connect to {self.sas.blob_url}: {_describe(exc)}.",
                ) from None
            return {}
        return self.get_properties(deadline=deadline)

    def get_properties(self, *, deadline: float | None = None) -> dict:
        response = self._checked("HEAD", "", {}, None, deadline, "read the properties of")
        return _properties(response.headers)

    def find_properties(self, *, deadline: float | None = None) -> dict | None:
        """`get_properties()`, or None when there is no such blob (HTTP 404)."""
        response = self._checked(
            "HEAD", "", {}, None, deadline, "read the properties of", accept=(404,)
        )
        return None if response.status == 404 else _properties(response.headers)

    def start_copy(self, source_url: str, *, deadline: float | None = None) -> dict:
        """Copy Blob from `source_url` (a SAS URL the service can read) over this blob.

        Returns `copy_id` and `copy_status` (`success`, or `pending` for an asynchronous copy
        that `get_properties()` follows). The source's metadata comes along.
        """
        headers = {
            "x-ms-version": X_MS_VERSION,
            "Content-Length": "0",
            "x-ms-copy-source": source_url,
        }
        response = self._checked("PUT", "", headers, None, deadline, "copy into")
        return {
            "copy_id": response.headers.get("x-ms-copy-id"),
            "copy_status": response.headers.get("x-ms-copy-status"),
        }

    def abort_copy(self, copy_id: str, *, deadline: float | None = None) -> None:
        """Abort a pending copy into this blob (the blob is left empty, at its full size)."""
        headers = {"x-ms-version": X_MS_VERSION, "Content-Length": "0", "x-ms-copy-action": "abort"}
        query = f"comp=copy&copyid={quote(copy_id, safe='')}"
        self._checked("PUT", query, headers, None, deadline, "abort the copy into")

    def create_snapshot(
        self, metadata: dict[str, str], *, deadline: float | None = None
    ) -> SnapshotResult:
        """Snapshot the blob (`PUT ?comp=snapshot`); never raises: failures are results."""
        headers = {"x-ms-version": X_MS_VERSION, "Content-Length": "0"}
        headers.update((f"x-ms-meta-{name}", value) for name, value in metadata.items())
        url = self.sas.blob_url
        try:
            response = self._call("PUT", "comp=snapshot", headers, None, deadline)
        except Exception as exc:  # while frozen, every failure is this disk's result
            return SnapshotResult(
                url, None, False, None, f"no response: {_describe(exc)}", Status.error_http_failure
            )
        if response.status in (200, 201):
            snapshot = response.headers.get("x-ms-snapshot", "").strip()
            if _SNAPSHOT_TIME.match(snapshot):
                return SnapshotResult(url, snapshot, True, response.status, None, Status.success)
            # No evidence of a snapshot: a failed disk, as the reference counts a bad answer.
            return SnapshotResult(
                url,
                None,
                False,
                response.status,
                f"HTTP {response.status} without a valid x-ms-snapshot header: the service gave "
                "no snapshot time, so no snapshot is counted (failed, code 15).",
                Status.error_http_failure,
            )
        status = failure_status(response.status, response.body.decode("utf-8", "replace"))
        return SnapshotResult(url, None, False, response.status, response.error_text(), status)

    def put_block_blob(
        self,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        deadline: float | None = None,
    ) -> None:
        """Write `data` as the whole blob (status document, log); raise VmSnapshotError."""
        headers = {
            "x-ms-version": X_MS_VERSION,
            "x-ms-blob-type": "BlockBlob",
            "Content-Type": content_type,
            "Content-Length": str(len(data)),
        }
        self._checked("PUT", "", headers, data, deadline, "write")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def abort(self) -> None:
        """Shut the connection down from another thread: a call blocked on it ends at once."""
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            # The plain socket's shutdown, also under TLS: it wakes a blocked read.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _checked(
        self, method, extra_query, headers, body, deadline, doing: str, accept: tuple = ()
    ) -> _Response:
        """`_call` for the calls made outside the frozen window: failures (but `accept`) raise."""
        url = self.sas.blob_url
        try:
            response = self._call(method, extra_query, headers, body, deadline)
        except OSError as exc:
            raise VmSnapshotError(
                Status.error_http_failure, f"Could not {doing} {url}: {_describe(exc)}."
            ) from None
        except http.client.HTTPException as exc:
            raise VmSnapshotError(
                Status.error_http_failure,
                f"Could not {doing} {url}: invalid HTTP response ({_describe(exc)}).",
            ) from None
        if not 200 <= response.status < 300 and response.status not in accept:
            text = response.error_text()
            raise VmSnapshotError(
                failure_status(response.status, response.body.decode("utf-8", "replace")),
                f"Could not {doing} {url}: {text}{_HINTS.get(response.status, '')}.",
            )
        return response

    def _clock(self, deadline: float | None) -> _Clock:
        """The call's absolute deadline: the one given, or `timeout` from now."""
        return _Clock(
            time.monotonic() + self.timeout if deadline is None else deadline, self.timeout
        )

    def _call(self, method, extra_query, headers, body, deadline) -> _Response:
        clock = self._clock(deadline)
        target = self.sas.request_target(extra_query)
        conn = self._conn
        fresh = conn is None or conn.sock is None or _closed_by_peer(conn.sock)
        if fresh:
            self._connect(clock)
        try:
            return self._exchange(method, target, headers, body, clock)
        except _CLOSED_BY_SERVER:
            if fresh:
                raise
        # The server closed the kept-alive connection as we sent: once more on a new one.
        self._connect(clock)
        return self._exchange(method, target, headers, body, clock)

    def _connect(self, clock: _Clock) -> None:
        self.close()
        clock.left()
        sas = self.sas
        if self._addresses is None:
            self._addresses = resolve(sas.host, sas.port, clock)
        if sas.scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            conn = _TlsConnection(sas.host, sas.port, self._addresses, clock, self._ssl_context)
        else:
            conn = _PlainConnection(sas.host, sas.port, self._addresses, clock)
        self._conn = conn
        conn.connect()
        # From now on only the address that answered is tried.
        self._addresses = conn.addresses

    def _exchange(self, method, target, headers, body, clock: _Clock) -> _Response:
        conn = self._conn
        conn.use(clock)
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
        except BaseException:
            self.close()
            raise
        data, complete = _read_body(response)
        if not complete:
            # The rest of the body is unread (too long, or the deadline came): never reuse.
            self.close()
        return _Response(
            response.status,
            response.reason,
            {name.lower(): value for name, value in response.getheaders()},
            data,
        )


def _read_body(response: http.client.HTTPResponse) -> tuple:
    """Up to MAX_BODY_BYTES of the body, and whether it was read to its end.

    A body cut by the deadline or the bound is kept as far as it came: the status line and the
    headers are the answer; the body is only the text of an error.
    """
    data = bytearray()
    try:
        while len(data) <= MAX_BODY_BYTES:
            piece = response.read1(MAX_BODY_BYTES + 1 - len(data))
            if not piece:
                response.close()  # done: the connection may carry the next request
                return bytes(data), True
            data += piece
    except (OSError, http.client.HTTPException):
        pass
    return bytes(data[:MAX_BODY_BYTES]), False
