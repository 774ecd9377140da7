"""A loopback HTTP proxy in front of the blob service that injects faults, for the system tests.

Each request is forwarded to the target unchanged unless a rule matches it. Rules see the method
and the request target (path and query), so a test can slow down only `comp=snapshot` calls, or
fail one disk of several.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional


@dataclass
class Rule:
    """When `matches(method, target)`: wait `delay` seconds, then answer `status` (or forward)."""

    matches: Callable[[str, str], bool]
    delay: float = 0.0
    status: Optional[int] = None
    body: bytes = b""
    headers: dict = field(default_factory=dict)


def is_snapshot(method: str, target: str) -> bool:
    return method == "PUT" and "comp=snapshot" in target


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.rules: list[Rule] = []
        self.seen: list[tuple[str, str, float]] = []
        self.snapshot_seen = threading.Event()
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
                rule = next((r for r in proxy.rules if r.matches(self.command, self.path)), None)
                if rule and rule.delay:
                    time.sleep(rule.delay)
                if rule and rule.status is not None:
                    self._answer(rule.status, rule.headers, rule.body)
                    return
                upstream = http.client.HTTPConnection(*proxy.target, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                passed = {
                    k: v
                    for k, v in response.getheaders()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")
                }
                upstream.close()
                self._answer(response.status, passed, data)

            def _answer(self, status: int, headers: dict, body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = host
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url_for(self, sas_uri: str) -> str:
        """The same SAS URI, sent through this proxy."""
        scheme, rest = sas_uri.split("://", 1)
        return f"{scheme}://{self.host}:{self.port}/{rest.split('/', 1)[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
