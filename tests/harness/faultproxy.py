"""A loopback HTTP proxy in front of the blob service that injects faults, for the tests.

Each request is forwarded to the target unchanged unless a rule matches it. Rules see the method
and the request target (path and query), so a test can slow down only `comp=snapshot` calls, or
fail one disk of several. What a matching rule does:

* ``delay`` seconds first (a slow service), then one of
* ``status`` (with ``body`` and ``headers``): answer that instead of forwarding (500, 503 with
  throttling headers, 409 snapshot count exceeded, ...: see ``storage_error``);
* ``action="reset"``: read the request, then reset the connection (TCP RST) without answering;
* ``action="blackhole"``: read the request and never answer (until ``release()`` or ``close()``);
* ``action="trickle"``: send the response (``status`` or forwarded) one body byte every
  ``delay`` seconds;
* ``action="refuse"``: reset this connection and stop listening: every new connection is
  refused from then on (a service that went away mid-run);
* ``action="trickle_head"``: send the status line and headers themselves one byte every
  ``delay`` seconds (the answer never gets past its headers in time);
* ``action="endless"``: answer ``status`` (201 by default, with ``headers``) and then a body
  that never ends, as fast as the client reads it (no Content-Length, no chunking);
* ``action="echo"``: answer ``status`` (403 by default) with the request echoed in the body,
  the headers and the reason phrase in every spelling of ``echo_spellings()`` (a server that
  repeats the signature back);
* otherwise forward (after the delay).

``times`` limits a rule to its first N matches. ``refuse()`` stops listening at once. The proxy
listens on 127.0.0.1 by default; a fleet's bridge address works too.
"""

from __future__ import annotations

import base64
import contextlib
import html
import http.client
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qsl, quote

ACTIONS = (
    "forward",
    "reset",
    "blackhole",
    "trickle",
    "refuse",
    "trickle_head",
    "endless",
    "echo",
)
# How long a black-holed request is held at most (the proxy's close() releases it earlier).
BLACKHOLE_SECONDS = 120.0


@dataclass
class Rule:
    """When `matches(method, target)`: wait `delay` seconds, then answer `status` or act."""

    matches: Callable[[str, str], bool]
    delay: float = 0.0
    status: int | None = None
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    action: str = "forward"
    times: int | None = None  # None: every match
    hits: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, not {self.action!r}")

    def take(self, method: str, target: str) -> bool:
        """True (and counted) when this rule applies to the request."""
        if self.times is not None and self.hits >= self.times:
            return False
        if not self.matches(method, target):
            return False
        self.hits += 1
        return True


def is_snapshot(method: str, target: str) -> bool:
    return method == "PUT" and "comp=snapshot" in target


def is_open(method: str, target: str) -> bool:
    """The properties call a run makes when it connects to a disk (before any script runs)."""
    return method == "HEAD"


def for_blob(name: str, predicate: Callable[[str, str], bool]) -> Callable[[str, str], bool]:
    """`predicate`, limited to requests for the blob (or container path part) `name`."""
    return lambda method, target: f"/{name}" in target.split("?")[0] and predicate(method, target)


def any_request(method: str, target: str) -> bool:
    return True


def storage_error(status: int, code: str, message: str, **headers: str) -> dict:
    """Rule keywords for an Azure Storage error answer (the XML body and x-ms-error-code)."""
    body = (
        '<?xml version="1.0" encoding="utf-8"?><Error>'
        f"<Code>{code}</Code><Message>{message}\nRequestId:00000000-0000-0000-0000-000000000000"
        f"\nTime:2026-01-01T00:00:00.0000000Z</Message></Error>"
    ).encode()
    return {
        "status": status,
        "body": body,
        "headers": {"Content-Type": "application/xml", "x-ms-error-code": code, **headers},
    }


# What Azure answers, by the codes the reference maps (docs/reference-behaviour.md §3, §5.3).
SNAPSHOT_COUNT_EXCEEDED = storage_error(
    409, "SnapshotCountExceeded", "The snapshot count against this blob has been exceeded."
)
SERVER_BUSY = storage_error(
    503, "ServerBusy", "Operations per second is over the account limit.", **{"Retry-After": "5"}
)
SNAPSHOT_RATE_EXCEEDED = storage_error(
    409, "SnapshotOperationRateExceeded", "The rate of snapshot blob calls is exceeded."
)
INTERNAL_ERROR = storage_error(
    500, "InternalError", "The server encountered an internal error. Please retry the request."
)


def echo_spellings(target: str) -> dict[str, str]:
    """A request target (with its SAS) as a careless server might repeat it, by spelling."""
    query = target.split("?", 1)[1] if "?" in target else ""
    sig = next((value for name, value in parse_qsl(query) if name.lower() == "sig"), "")
    once = quote(target, safe="")
    return {
        "raw": target,
        "percent-encoded once": once,
        "percent-encoded twice": quote(once, safe=""),
        "lower-case percent": "".join(
            part.lower() if index else part for index, part in enumerate(once.split("%"))
        ),
        "JSON-escaped": json.dumps(target).replace("=", "\\u003d").replace("/", "\\/"),
        "HTML decimal": target.replace("=", "&#61;")
        .replace("&", "&amp;")
        .replace("&amp;#61;", "&#61;"),
        "HTML hex": target.replace("=", "&#x3D;"),
        "HTML escaped": html.escape(target),
        "sig colon": f"sig: {sig}",
        "sig spaced": f"sig = {sig}",
        "bare value": sig,
        "value percent-encoded": quote(sig, safe=""),
        "value twice-encoded": quote(quote(sig, safe=""), safe=""),
        "base64 of the request": base64.b64encode(f"PUT {target} HTTP/1.1".encode()).decode(),
        "base64 of the value, shifted": base64.b64encode(f"xy{sig}".encode()).decode(),
        "value cut short": sig[: max(12, len(sig) // 2)],
    }


def _has_length(headers: dict) -> bool:
    return any(key.lower() == "content-length" for key in headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client or upstream that went away mid-request is this proxy's daily bread."""


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.rules: list[Rule] = []
        self.seen: list[tuple[str, str, float]] = []
        self.snapshot_seen = threading.Event()
        self.endless_bytes = 0
        self._released = threading.Event()
        self._refused = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.seen.append((self.command, self.path, time.monotonic()))
                if is_snapshot(self.command, self.path):
                    proxy.snapshot_seen.set()
                rule = next((r for r in proxy.rules if r.take(self.command, self.path)), None)
                if rule and rule.delay and rule.action != "trickle":
                    time.sleep(rule.delay)
                action = rule.action if rule else "forward"
                if action in ("reset", "refuse"):
                    if action == "refuse":
                        proxy.refuse()
                    self._reset()
                    return
                if action == "blackhole":
                    proxy._released.wait(BLACKHOLE_SECONDS)
                    self.close_connection = True
                    return
                if action == "trickle_head":
                    self._trickle_head(rule.status or 201, rule.headers, rule.delay or 0.5)
                    return
                if action == "endless":
                    self._endless(rule.status or 201, rule.headers)
                    return
                if action == "echo":
                    self._echo(rule.status or 403, rule.headers)
                    return
                if rule and rule.status is not None:
                    status, headers, data = rule.status, rule.headers, rule.body
                else:
                    status, headers, data = proxy._forward(
                        self.command, self.path, self.headers, body
                    )
                self._answer(status, headers, data, pause=rule.delay if action == "trickle" else 0)

            def _reset(self) -> None:
                # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
                with contextlib.suppress(OSError):
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.close()

            def _answer(self, status: int, headers: dict, body: bytes, pause: float = 0) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if self.command != "HEAD" or not _has_length(headers):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if not pause:
                    self.wfile.write(body)
                    return
                for index in range(len(body)):
                    if proxy._released.wait(pause):
                        return
                    self.wfile.write(body[index : index + 1])
                    self.wfile.flush()

            def _trickle_head(self, status: int, headers: dict, pause: float) -> None:
                head = f"HTTP/1.1 {status} Created\r\n" + "".join(
                    f"{key}: {value}\r\n" for key, value in headers.items()
                )
                self.close_connection = True
                with contextlib.suppress(OSError):
                    for byte in (head + "Content-Length: 0\r\n\r\n").encode():
                        if proxy._released.wait(pause):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()

            def _endless(self, status: int, headers: dict) -> None:
                self.close_connection = True
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command == "HEAD":
                    return
                chunk = b"<x>" + b"A" * 65536 + b"</x>"
                with contextlib.suppress(OSError):
                    while not proxy._released.is_set():
                        self.wfile.write(chunk)
                        proxy.endless_bytes += len(chunk)

            def _echo(self, status: int, headers: dict) -> None:
                spellings = echo_spellings(self.path)
                request_line = f"{self.command} {self.path} {self.request_version}"
                echoed = "\n".join(f"{name}: {text}" for name, text in spellings.items())
                echoed += "\n" + request_line + "\n" + str(self.headers)
                body = (
                    '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed'
                    f"</Code><Message>{html.escape(echoed)}</Message>"
                    f"<Raw>{echoed}</Raw></Error>"
                ).encode()
                reason = spellings["percent-encoded once"][:2000]
                self.send_response(status, reason)
                self.send_header("x-ms-error-code", spellings["bare value"] or "Echo")
                for index, text in enumerate(spellings.values()):
                    self.send_header(f"x-echo-{index}", text.replace("\n", " ")[:4000])
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _handle

        self.server = _Server((host, 0), Handler)
        self.port = self.server.server_address[1]
        self.host = host
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _forward(self, method: str, path: str, request_headers, body: bytes):
        upstream = http.client.HTTPConnection(*self.target, timeout=30)
        try:
            headers = {k: v for k, v in request_headers.items() if k.lower() != "host"}
            upstream.request(method, path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            # HEAD keeps the length of the body it describes (a blob's size); for any other
            # method the proxy sends the length of the body it passes on.
            dropped = ("transfer-encoding", "connection")
            if method != "HEAD":
                dropped += ("content-length",)
            passed = {k: v for k, v in response.getheaders() if k.lower() not in dropped}
            return response.status, passed, data
        finally:
            upstream.close()

    def url_for(self, sas_uri: str) -> str:
        """The same SAS URI, sent through this proxy."""
        scheme, rest = sas_uri.split("://", 1)
        return f"{scheme}://{self.host}:{self.port}/{rest.split('/', 1)[1]}"

    def requests(self, predicate: Callable[[str, str], bool] = any_request) -> int:
        """How many requests matching `predicate` reached the proxy."""
        return sum(1 for method, target, _when in self.seen if predicate(method, target))

    def refuse(self) -> None:
        """Stop listening: from now on every new connection is refused (ECONNREFUSED)."""
        if self._refused:
            return
        self._refused = True
        # shutdown() waits for serve_forever() to return; never from its own thread.
        threading.Thread(target=self._stop_listening, daemon=True).start()
        self._wait_not_listening()

    def _stop_listening(self) -> None:
        self.server.shutdown()
        self.server.socket.close()

    def _wait_not_listening(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.server.socket.fileno() >= 0:
            time.sleep(0.005)

    def release(self) -> None:
        """Let black-holed and trickling requests go (they end without an answer)."""
        self._released.set()

    def close(self) -> None:
        self.release()
        if not self._refused:
            self.server.shutdown()
        self.server.server_close()
