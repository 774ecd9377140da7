# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""A small standard-library HTTPS client for Azure Resource Manager calls.

One `ArmConnection` owns one persistent connection to the Resource Manager endpoint (use it from
one thread at a time). `connect()` resolves the host and does the TLS handshake before the freeze,
so a call made while filesystems are frozen needs no DNS lookup and no import: everything this
file uses, also on its error paths, is imported at load time.

Time bounds: every call ends by one absolute deadline (a `time.monotonic()` value), the
`deadline` given or `timeout` seconds from the call's start. Connect, handshake, send, the
answer's head and every body read wait at most `min(timeout, deadline - now)`; a 429 answer is
retried after its `Retry-After` only when that still ends before the deadline. A body is read up
to `MAX_BODY_BYTES`. `abort()` shuts the socket down from another thread.

Redaction: the bearer token goes only into the `Authorization` header; every text built from an
answer goes through `_redact.scrub()` (the token is registered there when it is obtained).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import socket
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._blob_rest import (
    checked_timeout,
    failure_status,
    resolve,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._redact import scrub
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
# The audience of a Resource Manager token, whatever endpoint answers (sovereign clouds differ).
MANAGEMENT_RESOURCE = "https://management.azure.com/"
# The Microsoft.Compute DiskRP API version of disks and snapshots the stand-in serves.
DISK_API_VERSION = "2024-03-02"
MAX_BODY_BYTES = 256 * 1024
_MAX_ERROR_TEXT = 300
# Only this much of a server's text is redacted and kept: redaction costs time in proportion
# to text x registered secrets (64 KiB with 64 signatures: 1.3 s, per disk, with the GIL
# held), and no more than _MAX_ERROR_TEXT of it is shown anyway. A secret cut at this bound
# is still caught as a piece of 8 or more characters.
_SCRUBBED_TEXT = 1024
_READ_PIECE = 16 * 1024
# Resource Manager's own advice when an operation answer has no Retry-After.
DEFAULT_POLL_SECONDS = 1.0
# The shortest wait before a call is repeated: "Retry-After: 0" must not become a busy loop.
MIN_RETRY_SECONDS = 0.2
# Azure's answer when a disk has too many snapshots: OperationNotAllowed with a "limit" message.
_LIMIT_WORDS = ("snapshot limit", "maximum number of", "limit of")
_CLOSED_BY_SERVER = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)
_HINTS = {
    401: " (the access token was refused: expired, for another audience, or not a token)",
    403: " (the identity lacks a role on this scope; see the module's documentation)",
    404: " (no such resource, resource group or subscription)",
    409: " (a resource of that name exists with other properties, or an operation is running)",
    429: " (throttled: Resource Manager asked to retry later)",
}


def short(text: str) -> str:
    text = scrub(text[:_SCRUBBED_TEXT])
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 1] + "…"


def describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return short(f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class ArmResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        try:
            value = json.loads(self.body.decode("utf-8", "replace") or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error_code(self) -> str:
        error = self.json().get("error")
        return str(error.get("code", "")) if isinstance(error, dict) else ""

    def error_text(self) -> str:
        """`HTTP 409 PropertyChangeNotAllowed: <message>`, short and scrubbed."""
        error = self.json().get("error")
        message = ""
        if isinstance(error, dict):
            message = str(error.get("message", ""))
        elif not self.body:
            message = ""
        else:
            message = self.body.decode("utf-8", "replace").splitlines()[0]
        text = f"HTTP {self.status} {self.error_code()}: {message}".replace(" :", ":")
        return short(text.rstrip(": ") + _HINTS.get(self.status, ""))

    def retry_after(self) -> float | None:
        """Retry-After in seconds (a number or an HTTP date), at least MIN_RETRY_SECONDS; None
        when absent or unreadable (NaN, a negative number, garbage)."""
        value = (self.headers.get("retry-after") or "").strip()
        try:
            seconds = float(value)
        except ValueError:
            try:  # a date already past means now
                seconds = max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError, IndexError, OverflowError):
                return None
        if math.isnan(seconds) or seconds < 0:
            return None
        return max(MIN_RETRY_SECONDS, seconds)


def failure_status_for(response: ArmResponse) -> Status:
    """A failed call's per-disk code, as the page-blob path maps a failed blob call.

    Throttling (429, 503) is the reference's "snapshot rate exceeded" (173), a disk at its
    snapshot limit is 85, anything else 15 (`_blob_rest.failure_status`).
    """
    if response.status in (429, 503):
        return failure_status(503, "")
    text = response.error_text().lower()
    if response.error_code() == "OperationNotAllowed" and any(w in text for w in _LIMIT_WORDS):
        return Status.FailedSnapshotLimitReached
    return failure_status(response.status, text)


class _Clock:
    def __init__(self, deadline: float, timeout: float) -> None:
        self.deadline = deadline
        self.timeout = timeout

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("the deadline passed")
        return min(self.timeout, left)


class ArmConnection:
    """One persistent HTTP(S) connection to a Resource Manager (or metadata) endpoint."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise VmSnapshotError(
                Status.error_parameter, f"{endpoint!r} is not an http(s) endpoint URL."
            )
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.origin = f"{parts.scheme}://{parts.netloc}".lower()
        self.timeout = checked_timeout(timeout)
        self._ssl_context = ssl_context
        self._addresses: list | None = None
        self._conn: http.client.HTTPConnection | None = None

    def connect(self, deadline: float | None = None) -> None:
        """Resolve (once) and connect now, so a later call does not pay for it."""
        clock = self._clock(deadline)
        self.close()
        if self._addresses is None:
            # In a thread, within the time left: a resolver that hangs cannot hold the call.
            self._addresses = resolve(self.host, self.port, clock)
        error: OSError = OSError("no address to connect to")
        for address in self._addresses:
            sock = socket.socket(*address[:3])
            try:
                sock.settimeout(clock.left())
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.connect(address[4])
                if self.scheme == "https":
                    if self._ssl_context is None:
                        self._ssl_context = ssl.create_default_context()
                    sock.settimeout(clock.left())
                    sock = self._ssl_context.wrap_socket(sock, server_hostname=self.host)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            conn_class = (
                http.client.HTTPSConnection
                if self.scheme == "https"
                else http.client.HTTPConnection
            )
            conn = conn_class(self.host, self.port, timeout=self.timeout)
            conn.sock = sock
            self._addresses = [address]
            self._conn = conn
            return
        raise error

    def request(
        self,
        method: str,
        target: str,
        *,
        token: str | None = None,
        body: dict | None = None,
        headers: dict[str, str] | None = None,
        deadline: float | None = None,
        retry_throttled: bool = True,
    ) -> ArmResponse:
        """One call; raises OSError or http.client.HTTPException when no answer came.

        A 429 is retried after its Retry-After while that ends before the deadline.
        """
        clock = self._clock(deadline)
        data = None if body is None else json.dumps(body).encode()
        sent = {"Accept": "application/json", **(headers or {})}
        if data is not None:
            sent["Content-Type"] = "application/json"
        if token:
            sent["Authorization"] = f"Bearer {token}"
        while True:
            response = self._once(method, target, sent, data, clock)
            wait = response.retry_after()
            if (
                response.status != 429
                or not retry_throttled
                or wait is None
                or time.monotonic() + wait >= clock.deadline
            ):
                return response
            time.sleep(wait)

    def same_origin(self, url: str) -> bool:
        """Only URLs on this endpoint get the token (an operation URL could point elsewhere)."""
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}".lower() == self.origin

    def abort(self) -> None:
        """Shut the socket down under a call in another thread; it fails at once."""
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _clock(self, deadline: float | None) -> _Clock:
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        return _Clock(deadline, self.timeout)

    def _once(self, method, target, headers, data, clock: _Clock) -> ArmResponse:
        fresh = self._conn is None or self._conn.sock is None
        if fresh:
            self.connect(clock.deadline)
        try:
            return self._exchange(method, target, headers, data, clock)
        except _CLOSED_BY_SERVER:
            if fresh:
                raise
        # The server closed the kept-alive connection meanwhile: once more on a new one.
        self.connect(clock.deadline)
        return self._exchange(method, target, headers, data, clock)

    def _exchange(self, method, target, headers, data, clock: _Clock) -> ArmResponse:
        conn = self._conn
        try:
            conn.sock.settimeout(clock.left())
            conn.request(method, target, body=data, headers=headers)
            conn.sock.settimeout(clock.left())
            response = conn.getresponse()
            pieces, size = [], 0
            while size < MAX_BODY_BYTES:
                conn.sock.settimeout(clock.left())
                piece = response.read(min(_READ_PIECE, MAX_BODY_BYTES - size))
                if not piece:
                    break
                pieces.append(piece)
                size += len(piece)
            if size >= MAX_BODY_BYTES or response.will_close:
                self.close()  # the rest of an oversized body is dropped with the connection
        except BaseException:
            self.close()
            raise
        return ArmResponse(
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            b"".join(pieces),
        )


def ssl_context_for(ca_path: str | None) -> ssl.SSLContext:
    """The TLS context for Resource Manager: the system's CAs, or `ca_path` (a file or dir)."""
    if ca_path and os.path.isdir(ca_path):
        return ssl.create_default_context(capath=ca_path)
    return ssl.create_default_context(cafile=ca_path or None)
