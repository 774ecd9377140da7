"""A local stand-in for Azure Resource Manager (managed disks, snapshots), IMDS and AAD tokens.

Azure itself is never reached: this server follows the published REST specification
(`Azure/azure-rest-api-specs`, `specification/compute/resource-manager/Microsoft.Compute/DiskRP`:
`Disks_CreateOrUpdate`, `Disks_Get`, `Snapshots_CreateOrUpdate`, `Snapshots_Get`,
`Snapshots_Delete` and their examples; the IMDS managed-identity token endpoint,
`GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=...` with `Metadata: true`;
the AAD v2 token endpoint `POST /{tenant}/oauth2/v2.0/token`), and its managed disks ARE page
blobs in Azurite: a disk maps to a page blob (possibly one a blob-backed disk of `blobdisk.py`
gives a host a real filesystem on), a snapshot is a real Azurite blob snapshot of it, and a
disk created from a snapshot is a Copy Blob of that snapshot into a new page blob.

Two listeners in one process: HTTPS (its own certificate, made per run; `ca_file` in the state)
for Resource Manager and AAD, and plain HTTP for IMDS (the real one is plain HTTP too).
Long-running operations answer 202 with `Azure-AsyncOperation` and `Location`; the operation
reports `InProgress` for `lro_seconds`, then `Succeeded` (or `Failed` when a fault says so).

Adding routes (e.g. restore points, `armstandin_restore_points.py`): a module listed in
`ROUTE_PROVIDERS` that can be imported defines `register_routes(server: ArmStandin)` and calls
`server.add_route(method, pattern, handler)`; `pattern` is a regular expression matched
(case-insensitively) against the path, `handler(server, request, match) -> Response`. Use
`server.store` (a lock and dicts), `server.start_operation(...)`, `server.arm_error(...)`,
`server.resource_group_exists(...)` and `server.disk_for(...)`. Every route under
`/subscriptions/` needs a bearer token the stand-in issued.

Test controls (plain JSON, no token, loopback only), under `/_standin/`:
`POST disks` (a disk on an existing or new page blob), `GET backing?id=` (the blob behind a
disk or snapshot), `POST faults` / `DELETE faults` (fault rules), `GET requests` (what was
asked, tokens left out), `POST tokens` (mint a token for the `access_token` option),
`GET tokens` (every token issued).

A fault rule: `{"path": regex, "method": "PUT", "status": 429, "code": ..., "message": ...,
"retry_after": 1, "times": 1, "delay": 0.5, "lro": "fail", "drop": true}`: `delay` answers late,
`drop` closes the connection without an answer, `lro: fail` accepts the call and fails its
operation later, `retry_after` without `status` gives the real answer that `Retry-After`;
`times` (default: every time) counts the matches it applies to.

Each stand-in is a record of `records.py` (in `<state dir>/armstandin/`): one started by a test
process is stopped when that process exits or gets SIGTERM/SIGHUP (and stops by itself when its
owner is gone, even after a SIGKILL); `cleanup` stops those of dead owners.

CLI:

    python tests/harness/armstandin.py up --json arm.json --azurite-json azurite.json \
        [--host 127.0.0.1] [--extra-host 10.200.0.1] [--lro-seconds 0.3]
    python tests/harness/armstandin.py down --json arm.json
    python tests/harness/armstandin.py cleanup [--all]

A stand-in from `up` belongs to no process: `down` or `cleanup` stops it.
pytest fixture: `arm_standin` (on the session's `azurite`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, quote, urlsplit

if __package__ in (None, ""):  # run as a script: import the harness the way the tests do
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

from harness.azurite import ACCOUNT, ACCOUNT_KEY
from harness.records import (
    Record,
    Registry,
    process_start,
    record_name,
    same_process,
    state_dir,
)

try:
    import pytest
except ImportError:  # the CLI also runs under a Python without pytest
    pytest = None

API_VERSION = "2024-03-02"
MANAGEMENT_RESOURCE = "https://management.azure.com/"
DISK_CONTAINER = "managed-disks"
DEFAULT_LOCATION = "westeurope"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
MAX_BODY = 1024 * 1024
TOKEN_SECONDS = 3600
# Other files that add routes (module names importable from tests/harness).
ROUTE_PROVIDERS = ["harness.armstandin_restore_points"]
_SEGMENT = r"([^/?]+)"
RG_PATH = rf"/subscriptions/{_SEGMENT}/resourceGroups/{_SEGMENT}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- requests and answers -------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict
    headers: dict  # lower-case names
    body: bytes

    def json(self) -> dict:
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Response:
    status: int
    body: object = None
    headers: dict = field(default_factory=dict)


@dataclass
class Store:
    """Everything the stand-in knows; hold `lock` while reading or changing it."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    resource_groups: dict = field(default_factory=dict)  # (sub, rg) -> {"location": ...}
    disks: dict = field(default_factory=dict)  # (sub, rg, name) -> {"resource", "blob"}
    snapshots: dict = field(default_factory=dict)  # (sub, rg, name) -> {"resource", "blob", ...}
    operations: dict = field(default_factory=dict)  # id -> operation
    tokens: dict = field(default_factory=dict)  # token -> {"expires", "principal"}
    faults: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # for route providers


def key(*parts: str) -> tuple:
    """Resource names are case-insensitive in Resource Manager."""
    return tuple(part.lower() for part in parts)


def disk_id(sub: str, rg: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/disks/{name}"


def snapshot_id(sub: str, rg: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/snapshots/{name}"


_RESOURCE_ID = re.compile(
    r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Compute/"
    r"(disks|snapshots)/([^/]+)$",
    re.IGNORECASE,
)


def parse_resource_id(resource_id: str) -> tuple | None:
    """(sub, rg, kind, name) of a disk or snapshot ID, or None."""
    match = _RESOURCE_ID.match(resource_id or "")
    if not match:
        return None
    sub, rg, kind, name = match.groups()
    return sub, rg, kind.lower(), name


def _jwt_like(principal: str) -> str:
    """An opaque bearer token shaped like a JWT (what Entra ID hands out), random each time."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(b'{"typ":"JWT","alg":"RS256","x5t":"standin"}')
    claims = part(json.dumps({"aud": MANAGEMENT_RESOURCE, "oid": principal}).encode())
    return f"{header}.{claims}.{part(secrets.token_bytes(48))}"


# --- the server ------------------------------------------------------------------------------


class ArmStandin:
    """The stand-in's state and routes; `serve()` runs both listeners until stopped."""

    def __init__(
        self,
        azurite_state: dict,
        *,
        host: str = "127.0.0.1",
        extra_hosts: tuple = (),
        directory: str,
        lro_seconds: float = 0.3,
    ) -> None:
        self.azurite_state = azurite_state
        self.host = host
        self.extra_hosts = tuple(extra_hosts)
        self.directory = directory
        self.lro_seconds = lro_seconds
        self.store = Store()
        self.routes: list[tuple[str, re.Pattern, Callable]] = []
        self._service = None
        self.https_port = 0
        self.imds_port = 0
        self.ca_file = ""
        self._servers: list[ThreadingHTTPServer] = []
        _register_core_routes(self)
        for name in ROUTE_PROVIDERS:
            try:
                module = __import__(name, fromlist=["register_routes"])
            except ModuleNotFoundError as exc:
                if exc.name != name:
                    raise
                continue
            module.register_routes(self)

    # --- extension API ----------------------------------------------------------------------

    def add_route(self, method: str, pattern: str, handler: Callable) -> None:
        self.routes.append((method.upper(), re.compile(f"^{pattern}$", re.IGNORECASE), handler))

    @staticmethod
    def arm_error(status: int, code: str, message: str, headers: dict | None = None):
        return Response(status, {"error": {"code": code, "message": message}}, headers or {})

    def resource_group_exists(self, sub: str, rg: str) -> bool:
        with self.store.lock:
            return key(sub, rg) in self.store.resource_groups

    def disk_for(self, resource_id: str) -> dict | None:
        parsed = parse_resource_id(resource_id)
        if not parsed or parsed[2] != "disks":
            return None
        with self.store.lock:
            return self.store.disks.get(key(parsed[0], parsed[1], parsed[3]))

    def start_operation(
        self,
        sub: str,
        location: str,
        *,
        on_success: Callable[[], None] | None = None,
        on_failure: Callable[[dict], None] | None = None,
        fail: dict | None = None,
        seconds: float | None = None,
    ) -> dict:
        """A long-running operation; returns the headers (`Azure-AsyncOperation`, `Location`,
        `Retry-After`) of the 202 that starts it. It ends at its first poll after `seconds`."""
        operation_id = str(uuid.uuid4())
        operation = {
            "name": operation_id,
            "startTime": iso(utcnow()),
            "ends": time.monotonic() + (self.lro_seconds if seconds is None else seconds),
            "status": "InProgress",
            "fail": fail,
            "on_success": on_success,
            "on_failure": on_failure,
        }
        with self.store.lock:
            self.store.operations[operation_id] = operation
        base = f"https://{{host}}/subscriptions/{sub}/providers/Microsoft.Compute/locations/"
        url = f"{base}{location}/DiskOperations/{operation_id}?api-version={API_VERSION}"
        return {
            "Azure-AsyncOperation": url,
            "Location": url + "&monitor=true",
            "Retry-After": "1",
        }

    def settle(self, operation: dict) -> None:
        """Finish an operation whose time has come (under the store lock)."""
        if operation["status"] != "InProgress" or time.monotonic() < operation["ends"]:
            return
        operation["endTime"] = iso(utcnow())
        if operation["fail"]:
            operation["status"] = "Failed"
            operation["error"] = operation["fail"]
            if operation["on_failure"]:
                operation["on_failure"](operation["fail"])
        else:
            operation["status"] = "Succeeded"
            if operation["on_success"]:
                operation["on_success"]()

    # --- Azurite ----------------------------------------------------------------------------

    @property
    def blob_service(self):
        if self._service is None:
            self._service = BlobServiceClient(
                self.azurite_state["url"],
                credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
                retry_total=0,
                connection_timeout=5,
                read_timeout=60,
                connection_verify=self.azurite_state.get("ca_file") or True,
            )
        return self._service

    def blob_client(self, container: str, name: str, snapshot: str | None = None):
        return self.blob_service.get_blob_client(container, name, snapshot=snapshot)

    def snapshot_source_url(self, container: str, name: str, snapshot: str) -> str:
        """A URL Azurite itself can copy from (its own SAS; stays inside the stand-in)."""
        token = generate_blob_sas(
            ACCOUNT,
            container,
            name,
            snapshot=snapshot,
            account_key=ACCOUNT_KEY,
            permission=BlobSasPermissions(read=True),
            expiry=utcnow() + timedelta(hours=1),
        )
        blob = f"{self.azurite_state['url']}/{container}/{quote(name)}"
        return f"{blob}?snapshot={quote(snapshot, safe='')}&{token}"

    # --- tokens -----------------------------------------------------------------------------

    def mint_token(self, principal: str = "standin-identity", seconds: int = TOKEN_SECONDS) -> str:
        token = _jwt_like(principal)
        with self.store.lock:
            self.store.tokens[token] = {"expires": time.time() + seconds, "principal": principal}
        return token

    def token_answer(self, principal: str) -> dict:
        token = self.mint_token(principal)
        now = int(time.time())
        return {
            "access_token": token,
            "expires_in": str(TOKEN_SECONDS),
            "expires_on": str(now + TOKEN_SECONDS),
            "ext_expires_in": str(TOKEN_SECONDS),
            "not_before": str(now),
            "resource": MANAGEMENT_RESOURCE,
            "token_type": "Bearer",
        }

    def authorized(self, request: Request) -> Response | None:
        """None when the bearer token is one we issued and not expired; else the 401."""
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        with self.store.lock:
            known = self.store.tokens.get(token)
        if not token:
            return self.arm_error(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if known is None or known["expires"] < time.time():
            return self.arm_error(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return None

    # --- faults -----------------------------------------------------------------------------

    def matching_fault(self, request: Request) -> dict | None:
        with self.store.lock:
            for rule in self.store.faults:
                if rule.get("method") and rule["method"].upper() != request.method:
                    continue
                if not re.search(rule.get("path", ""), request.path, re.IGNORECASE):
                    continue
                if rule.get("times") is not None:
                    if rule["times"] <= 0:
                        continue
                    rule["times"] -= 1
                rule["hits"] = rule.get("hits", 0) + 1
                return dict(rule)
        return None

    # --- serving ----------------------------------------------------------------------------

    def dispatch(self, request: Request, host_header: str) -> Response | None:
        """The answer to one request; None means: close the connection without one."""
        entry = {
            "time": time.time(),
            "method": request.method,
            "path": request.path,
            "query": {name: values[0] for name, values in request.query.items()},
            "authorized": bool(request.headers.get("authorization")),
        }
        if not request.path.startswith("/_standin/"):
            with self.store.lock:
                self.store.requests.append(entry)
        response = self._answer(request)
        if response is not None:
            entry["status"] = response.status
            for name, value in list(response.headers.items()):
                response.headers[name] = value.replace("{host}", host_header)
        return response

    def _answer(self, request: Request) -> Response | None:
        fault = None if request.path.startswith("/_standin/") else self.matching_fault(request)
        if fault:
            if fault.get("delay"):
                time.sleep(float(fault["delay"]))
            if fault.get("drop"):
                return None
            if fault.get("status"):
                headers = {}
                if fault.get("retry_after") is not None:
                    headers["Retry-After"] = str(fault["retry_after"])
                return self.arm_error(
                    int(fault["status"]),
                    fault.get("code", "StandinFault"),
                    fault.get("message", "A fault the test asked for."),
                    headers,
                )
        for method, pattern, handler in self.routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                if request.path.lower().startswith("/subscriptions/"):
                    refused = self.authorized(request)
                    if refused is not None:
                        return refused
                request.fault = fault  # type: ignore[attr-defined]
                response = handler(self, request, match)
                if fault and fault.get("retry_after") is not None and response is not None:
                    response.headers["Retry-After"] = str(fault["retry_after"])
                return response
        return self.arm_error(404, "NotFound", f"No route for {request.method} {request.path}.")

    def serve(self, ready_file: str | None = None, owner: tuple | None = None) -> None:
        """Serve until SIGTERM, or until `owner` (pid, start time) is gone: a test run killed
        with SIGKILL leaves no stand-in behind."""
        self.ca_file, key_file = _certificate(self.directory, (self.host, *self.extra_hosts))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, key_file)
        arm = _Server((self.host, 0), _handler_class(self, context))
        imds = _Server((self.host, 0), _handler_class(self, None))
        self._servers = [arm, imds]
        # The same ports on the fleet's bridge addresses, when asked.
        for extra in self.extra_hosts:
            self._servers.append(
                _Server((extra, arm.server_address[1]), _handler_class(self, context))
            )
            self._servers.append(
                _Server((extra, imds.server_address[1]), _handler_class(self, None))
            )
        self.https_port, self.imds_port = arm.server_address[1], imds.server_address[1]
        threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in self._servers]
        for thread in threads:
            thread.start()
        if ready_file:
            state = self.state()
            Path(ready_file + ".tmp").write_text(json.dumps(state))
            os.replace(ready_file + ".tmp", ready_file)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.wait(1.0):
            if owner and not same_process(*owner):
                break
        for server in self._servers:
            server.shutdown()

    def state(self) -> dict:
        return {
            "pid": os.getpid(),
            "pid_start": process_start(os.getpid()),
            "host": self.host,
            "extra_hosts": list(self.extra_hosts),
            "https_port": self.https_port,
            "imds_port": self.imds_port,
            "arm_endpoint": f"https://{self.host}:{self.https_port}",
            "imds_endpoint": f"http://{self.host}:{self.imds_port}",
            "aad_endpoint": f"https://{self.host}:{self.https_port}",
            "ca_file": self.ca_file,
            "directory": self.directory,
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _handler_class(standin: ArmStandin, context: ssl.SSLContext | None):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 60

        def setup(self) -> None:
            if context is not None:
                # The handshake in this connection's thread: a slow client holds only itself.
                self.request.settimeout(self.timeout)
                self.request = context.wrap_socket(self.request, server_side=True)
            super().setup()

        def log_message(self, *args) -> None:  # quiet; `GET /_standin/requests` tells
            return

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.send_error(413)
                return
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            request = Request(
                self.command,
                parts.path,
                parse_qs(parts.query),
                {name.lower(): value for name, value in self.headers.items()},
                body,
            )
            host = self.headers.get("Host") or f"{standin.host}:{standin.https_port}"
            try:
                response = standin.dispatch(request, host)
            except Exception as exc:  # a stand-in bug answers 500, it does not hang the client
                response = standin.arm_error(500, "StandinError", f"{type(exc).__name__}: {exc}")
            if response is None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.request.shutdown(socket.SHUT_RDWR)
                return
            data = b"" if response.body is None else json.dumps(response.body).encode()
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-ms-request-id", str(uuid.uuid4()))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _handle

    return Handler


def _certificate(directory: str, hosts: tuple) -> tuple[str, str]:
    """A self-signed certificate for `hosts` and localhost, made for this run."""
    cert, key_file = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    names = ["DNS:localhost"]
    for host in hosts:
        kind = "IP" if re.fullmatch(r"[\d.]+|[\da-fA-F:]+", host) else "DNS"
        names.append(f"{kind}:{host}")
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    command += ["-subj", "/CN=arm-standin", "-keyout", key_file, "-out", cert]
    command += ["-addext", f"subjectAltName={','.join(dict.fromkeys(names))}"]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key_file


# --- core routes -----------------------------------------------------------------------------


def _register_core_routes(server: ArmStandin) -> None:
    add = server.add_route
    add("GET", r"/metadata/identity/oauth2/token", _imds_token)
    add("POST", rf"/{_SEGMENT}/oauth2/v2\.0/token", _aad_token)
    add("GET", rf"/{_SEGMENT}/v2\.0/\.well-known/openid-configuration", _openid_configuration)
    add("PUT", RG_PATH, _put_resource_group)
    add("GET", RG_PATH, _get_resource_group)
    add("PUT", rf"{RG_PATH}/providers/Microsoft\.Compute/disks/{_SEGMENT}", _put_disk)
    add("GET", rf"{RG_PATH}/providers/Microsoft\.Compute/disks/{_SEGMENT}", _get_disk)
    add("PUT", rf"{RG_PATH}/providers/Microsoft\.Compute/snapshots/{_SEGMENT}", _put_snapshot)
    add("GET", rf"{RG_PATH}/providers/Microsoft\.Compute/snapshots/{_SEGMENT}", _get_snapshot)
    add("DELETE", rf"{RG_PATH}/providers/Microsoft\.Compute/snapshots/{_SEGMENT}", _del_snapshot)
    add(
        "GET",
        rf"/subscriptions/{_SEGMENT}/providers/Microsoft\.Compute/locations/{_SEGMENT}"
        rf"/DiskOperations/{_SEGMENT}",
        _get_operation,
    )
    add("POST", r"/_standin/disks", _admin_disk)
    add("GET", r"/_standin/backing", _admin_backing)
    add("POST", r"/_standin/faults", _admin_faults)
    add("DELETE", r"/_standin/faults", _admin_clear_faults)
    add("GET", r"/_standin/requests", _admin_requests)
    add("POST", r"/_standin/tokens", _admin_token)
    add("GET", r"/_standin/tokens", _admin_issued)


def _imds_token(server: ArmStandin, request: Request, match) -> Response:
    if request.headers.get("metadata", "").lower() != "true":
        return Response(
            400,
            {
                "error": "invalid_request",
                "error_description": "Required metadata header not specified",
            },
        )
    resource = request.arg("resource")
    if not resource or request.arg("api-version") is None:
        return Response(
            400,
            {
                "error": "invalid_request",
                "error_description": "Required "
                "query variable 'resource' or 'api-version' is missing",
            },
        )
    identity = request.arg("client_id") or request.arg("object_id") or request.arg("msi_res_id")
    answer = server.token_answer(identity or "system-assigned")
    answer["resource"] = resource
    answer["client_id"] = request.arg("client_id") or "00000000-0000-0000-0000-00000000c11e"
    return Response(200, answer)


def _aad_token(server: ArmStandin, request: Request, match) -> Response:
    form = parse_qs(request.body.decode("utf-8", "replace"))
    client_id = (form.get("client_id") or [""])[0]
    if (form.get("grant_type") or [""])[0] != "client_credentials" or not client_id:
        return Response(
            400,
            {
                "error": "invalid_request",
                "error_description": "AADSTS900144: grant_type and client_id.",
            },
        )
    if not (form.get("client_secret") or form.get("client_assertion")):
        return Response(
            401,
            {
                "error": "invalid_client",
                "error_description": "AADSTS7000216: client credentials needed.",
            },
        )
    answer = server.token_answer(client_id)
    return Response(
        200,
        {
            "token_type": "Bearer",
            "expires_in": TOKEN_SECONDS,
            "ext_expires_in": TOKEN_SECONDS,
            "access_token": answer["access_token"],
        },
    )


def _openid_configuration(server: ArmStandin, request: Request, match) -> Response:
    tenant = match.group(1)
    base = f"https://{request.headers.get('host', server.host)}/{tenant}"
    return Response(
        200,
        {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "issuer": f"{base}/v2.0",
            "tenant_region_scope": "EU",
        },
    )


def _put_resource_group(server: ArmStandin, request: Request, match) -> Response:
    sub, rg = match.groups()
    location = request.json().get("location") or DEFAULT_LOCATION
    with server.store.lock:
        existed = key(sub, rg) in server.store.resource_groups
        server.store.resource_groups[key(sub, rg)] = {"name": rg, "location": location}
    return Response(200 if existed else 201, _rg_body(sub, rg, location))


def _rg_body(sub: str, rg: str, location: str) -> dict:
    return {
        "id": f"/subscriptions/{sub}/resourceGroups/{rg}",
        "name": rg,
        "type": "Microsoft.Resources/resourceGroups",
        "location": location,
        "properties": {"provisioningState": "Succeeded"},
    }


def _get_resource_group(server: ArmStandin, request: Request, match) -> Response:
    sub, rg = match.groups()
    with server.store.lock:
        found = server.store.resource_groups.get(key(sub, rg))
    if not found:
        return server.arm_error(
            404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found."
        )
    return Response(200, _rg_body(sub, found["name"], found["location"]))


def _no_group(server: ArmStandin, rg: str) -> Response:
    return server.arm_error(
        404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found."
    )


def _disk_resource(sub, rg, name, location, size_bytes, creation, tags) -> dict:
    return {
        "id": disk_id(sub, rg, name),
        "name": name,
        "type": "Microsoft.Compute/disks",
        "location": location,
        "tags": tags or {},
        "sku": {"name": "Standard_LRS", "tier": "Standard"},
        "properties": {
            "creationData": creation,
            "diskSizeGB": max(1, -(-size_bytes // 2**30)),
            "diskSizeBytes": size_bytes,
            "timeCreated": iso(utcnow()),
            "provisioningState": "Succeeded",
            "diskState": "Unattached",
            "uniqueId": str(uuid.uuid4()),
        },
    }


def _put_disk(server: ArmStandin, request: Request, match) -> Response:
    sub, rg, name = match.groups()
    if not server.resource_group_exists(sub, rg):
        return _no_group(server, rg)
    body = request.json()
    creation = (body.get("properties") or {}).get("creationData") or {}
    location = body.get("location")
    if not location or not creation.get("createOption"):
        return server.arm_error(
            400,
            "InvalidParameter",
            "location and properties.creationData.createOption are required.",
        )
    with server.store.lock:
        existing = server.store.disks.get(key(sub, rg, name))
    if existing:
        old = existing["resource"]["properties"]["creationData"]
        if {k: old.get(k) for k in ("createOption", "sourceResourceId")} != {
            k: creation.get(k) for k in ("createOption", "sourceResourceId")
        }:
            return server.arm_error(
                409, "PropertyChangeNotAllowed", "Changing property 'creationData' is not allowed."
            )
        existing["resource"]["tags"] = body.get("tags", existing["resource"]["tags"])
        return Response(200, existing["resource"])
    option = creation["createOption"]
    blob_name = f"{sub}/{rg}/{name}.vhd".lower()
    if option == "Copy":
        parsed = parse_resource_id(creation.get("sourceResourceId", ""))
        with server.store.lock:
            source = (
                parsed
                and parsed[2] == "snapshots"
                and server.store.snapshots.get(key(parsed[0], parsed[1], parsed[3]))
            )
        if not source:
            return server.arm_error(
                404,
                "NotFound",
                f"The source snapshot {creation.get('sourceResourceId')} was not found.",
            )
        if source["resource"]["location"].lower() != location.lower():
            return server.arm_error(
                400, "InvalidParameter", "The disk must be in the location of its source snapshot."
            )
        container, source_blob, stamp = source["blob"]
        size = source["resource"]["properties"]["diskSizeBytes"]
        server.blob_service.get_container_client(DISK_CONTAINER).exists() or (
            server.blob_service.create_container(DISK_CONTAINER)
        )
        target = server.blob_client(DISK_CONTAINER, blob_name)
        target.start_copy_from_url(server.snapshot_source_url(container, source_blob, stamp))
    elif option == "Empty":
        size_gb = int((body.get("properties") or {}).get("diskSizeGB") or 0)
        if size_gb <= 0:
            return server.arm_error(400, "InvalidParameter", "diskSizeGB is required for Empty.")
        size = size_gb * 2**30
        with contextlib.suppress(Exception):
            server.blob_service.create_container(DISK_CONTAINER)
        server.blob_client(DISK_CONTAINER, blob_name).create_page_blob(size)
    else:
        return server.arm_error(
            400,
            "InvalidParameter",
            f"createOption {option} is not served by the stand-in (Copy, Empty).",
        )
    resource = _disk_resource(sub, rg, name, location, size, creation, body.get("tags"))
    resource["properties"]["provisioningState"] = "Updating"
    entry = {"resource": resource, "blob": (DISK_CONTAINER, blob_name)}
    with server.store.lock:
        server.store.disks[key(sub, rg, name)] = entry

    def done() -> None:
        resource["properties"]["provisioningState"] = "Succeeded"

    headers = server.start_operation(sub, location, on_success=done)
    return Response(202, resource, headers)


def _get_disk(server: ArmStandin, request: Request, match) -> Response:
    sub, rg, name = match.groups()
    with server.store.lock:
        found = server.store.disks.get(key(sub, rg, name))
    if not found:
        if not server.resource_group_exists(sub, rg):
            return _no_group(server, rg)
        return server.arm_error(
            404,
            "ResourceNotFound",
            "The Resource "
            f"'Microsoft.Compute/disks/{name}' under resource group '{rg}' "
            "was not found.",
        )
    return Response(200, found["resource"])


def _put_snapshot(server: ArmStandin, request: Request, match) -> Response:
    sub, rg, name = match.groups()
    if not server.resource_group_exists(sub, rg):
        return _no_group(server, rg)
    body = request.json()
    properties = body.get("properties") or {}
    creation = properties.get("creationData") or {}
    location = body.get("location")
    if not location or creation.get("createOption") != "Copy":
        return server.arm_error(
            400,
            "InvalidParameter",
            "location and creationData.createOption"
            " Copy (from a disk) are what the stand-in serves.",
        )
    with server.store.lock:
        existing = server.store.snapshots.get(key(sub, rg, name))
    if existing:
        if (
            existing["resource"]["properties"]["creationData"].get("sourceResourceId", "").lower()
            != creation.get("sourceResourceId", "").lower()
        ):
            return server.arm_error(
                409,
                "PropertyChangeNotAllowed",
                "Changing property 'sourceResourceId' is not allowed.",
            )
        return Response(200, existing["resource"])
    parsed = parse_resource_id(creation.get("sourceResourceId", ""))
    if parsed and parsed[0].lower() != sub.lower() and properties.get("incremental"):
        return server.arm_error(
            400,
            "InvalidParameter",
            "An incremental snapshot must be in the subscription of its disk.",
        )
    disk = server.disk_for(creation.get("sourceResourceId", ""))
    if not disk:
        return server.arm_error(
            404, "NotFound", f"The source disk {creation.get('sourceResourceId')} was not found."
        )
    if disk["resource"]["location"].lower() != location.lower():
        return server.arm_error(
            400,
            "InvalidParameter",
            f"The snapshot's location {location} is "
            f"not the disk's ({disk['resource']['location']}).",
        )
    container, blob = disk["blob"]
    # The point in time: the blob snapshot is taken before this call answers.
    tags = body.get("tags") or {}
    # The tags that are valid blob metadata names go on the blob snapshot too, so a reader of
    # Azurite alone sees the consistency stamp.
    metadata = {k: str(v) for k, v in tags.items() if re.fullmatch(r"[A-Za-z_]\w*", str(k))}
    stamp = server.blob_client(container, blob).create_snapshot(metadata=metadata)["snapshot"]
    size = disk["resource"]["properties"]["diskSizeBytes"]
    resource = {
        "id": snapshot_id(sub, rg, name),
        "name": name,
        "type": "Microsoft.Compute/snapshots",
        "location": location,
        "tags": body.get("tags") or {},
        "sku": {"name": "Standard_ZRS", "tier": "Standard"},
        "properties": {
            "creationData": {
                "createOption": "Copy",
                "sourceResourceId": disk["resource"]["id"],
                "sourceUniqueId": disk["resource"]["properties"]["uniqueId"],
            },
            "diskSizeGB": disk["resource"]["properties"]["diskSizeGB"],
            "diskSizeBytes": size,
            "incremental": bool(properties.get("incremental")),
            "incrementalSnapshotFamilyId": disk["resource"]["properties"]["uniqueId"],
            "timeCreated": iso(utcnow()),
            "provisioningState": "Creating",
            "completionPercent": 0.0,
            "diskState": "Unattached",
            "uniqueId": str(uuid.uuid4()),
        },
    }
    with server.store.lock:
        server.store.snapshots[key(sub, rg, name)] = {
            "resource": resource,
            "blob": (container, blob, stamp),
        }

    def done() -> None:
        resource["properties"].update(provisioningState="Succeeded", completionPercent=100.0)

    def failed(error: dict) -> None:
        resource["properties"]["provisioningState"] = "Failed"

    fault = getattr(request, "fault", None) or {}
    fail = None
    if fault.get("lro") == "fail":
        fail = {
            "code": fault.get("code", "InternalExecutionError"),
            "message": fault.get("message", "The snapshot could not be completed."),
        }
    headers = server.start_operation(sub, location, on_success=done, on_failure=failed, fail=fail)
    return Response(202, resource, headers)


def _get_snapshot(server: ArmStandin, request: Request, match) -> Response:
    sub, rg, name = match.groups()
    with server.store.lock:
        found = server.store.snapshots.get(key(sub, rg, name))
        if found and found["resource"]["properties"]["provisioningState"] == "Creating":
            # The background copy as Azure reports it: completionPercent grows until done.
            props = found["resource"]["properties"]
            props["completionPercent"] = min(99.0, props["completionPercent"] + 50.0)
    if not found:
        return server.arm_error(
            404,
            "ResourceNotFound",
            "The Resource "
            f"'Microsoft.Compute/snapshots/{name}' under resource group "
            f"'{rg}' was not found.",
        )
    return Response(200, found["resource"])


def _del_snapshot(server: ArmStandin, request: Request, match) -> Response:
    sub, rg, name = match.groups()
    with server.store.lock:
        found = server.store.snapshots.pop(key(sub, rg, name), None)
    if not found:
        return Response(204)
    container, blob, stamp = found["blob"]
    with contextlib.suppress(Exception):
        server.blob_client(container, blob, stamp).delete_blob()
    return Response(202, None, server.start_operation(sub, found["resource"]["location"]))


def _get_operation(server: ArmStandin, request: Request, match) -> Response:
    operation_id = match.group(3)
    with server.store.lock:
        operation = server.store.operations.get(operation_id)
        if operation is None:
            return server.arm_error(404, "NotFound", "No such operation.")
        server.settle(operation)
        body = {
            key_: operation[key_]
            for key_ in ("name", "status", "startTime", "endTime", "error")
            if key_ in operation
        }
    return Response(200, body, {"Retry-After": "1"} if body["status"] == "InProgress" else {})


# --- test controls ---------------------------------------------------------------------------


def _admin_disk(server: ArmStandin, request: Request, match) -> Response:
    """A disk on an existing page blob (`container`, `blob`) or on a new one (`size_bytes`)."""
    body = request.json()
    sub = body.get("subscription", "00000000-0000-0000-0000-000000000001")
    rg, name = body.get("resource_group", "rg-vm"), body["name"]
    location = body.get("location", DEFAULT_LOCATION)
    with server.store.lock:
        server.store.resource_groups.setdefault(key(sub, rg), {"name": rg, "location": location})
    if body.get("blob"):
        container, blob = body["container"], body["blob"]
        size = server.blob_client(container, blob).get_blob_properties().size
    else:
        container, blob = DISK_CONTAINER, f"{sub}/{rg}/{name}.vhd".lower()
        size = int(body.get("size_bytes", 1024 * 1024))
        with contextlib.suppress(Exception):
            server.blob_service.create_container(DISK_CONTAINER)
        server.blob_client(container, blob).create_page_blob(size)
    resource = _disk_resource(sub, rg, name, location, size, {"createOption": "Import"}, {})
    resource["properties"]["diskState"] = "Attached"
    with server.store.lock:
        server.store.disks[key(sub, rg, name)] = {"resource": resource, "blob": (container, blob)}
    return Response(201, resource)


def _admin_backing(server: ArmStandin, request: Request, match) -> Response:
    parsed = parse_resource_id(request.arg("id") or "")
    if not parsed:
        return server.arm_error(400, "InvalidParameter", "id: a disk or snapshot ID")
    sub, rg, kind, name = parsed
    with server.store.lock:
        found = getattr(server.store, kind).get(key(sub, rg, name))
    if not found:
        return server.arm_error(404, "NotFound", "no such resource")
    blob = found["blob"]
    return Response(
        200,
        {
            "container": blob[0],
            "blob": blob[1],
            "snapshot": blob[2] if len(blob) > 2 else None,
            "resource": found["resource"],
        },
    )


def _admin_faults(server: ArmStandin, request: Request, match) -> Response:
    rules = request.json().get("rules") or []
    with server.store.lock:
        server.store.faults = [dict(rule) for rule in rules]
    return Response(200, {"rules": len(rules)})


def _admin_clear_faults(server: ArmStandin, request: Request, match) -> Response:
    with server.store.lock:
        server.store.faults = []
    return Response(200, {"rules": 0})


def _admin_requests(server: ArmStandin, request: Request, match) -> Response:
    with server.store.lock:
        return Response(200, {"requests": list(server.store.requests)})


def _admin_issued(server: ArmStandin, request: Request, match) -> Response:
    """Every token issued so far, for the tests that look for it in a run's output."""
    with server.store.lock:
        return Response(200, {"tokens": sorted(server.store.tokens)})


def _admin_token(server: ArmStandin, request: Request, match) -> Response:
    body = request.json()
    token = server.mint_token(
        body.get("principal", "awx-credential"), int(body.get("seconds", TOKEN_SECONDS))
    )
    return Response(200, {"access_token": token})


# --- the client side: start, stop, control ---------------------------------------------------


def records_dir() -> str:
    return os.path.join(state_dir(), "armstandin")


class StandinProcess(Record):
    """A running stand-in, as the tests and the CLI see it: what its server reported when it
    was ready (ports, endpoints, certificate), on record."""

    fields = (
        "directory",
        "pid",
        "pid_start",
        "host",
        "extra_hosts",
        "https_port",
        "imds_port",
        "arm_endpoint",
        "imds_endpoint",
        "aad_endpoint",
        "ca_file",
    )
    noun = "stand-in"
    registry = Registry(records_dir)
    directory: str
    pid: int | None
    pid_start: str | None
    host: str
    extra_hosts: list[str]
    https_port: int
    imds_port: int
    arm_endpoint: str
    imds_endpoint: str
    aad_endpoint: str
    ca_file: str

    def __init__(self, record: dict, state_file: str | None = None) -> None:
        super().__init__(record, state_file or record["state_file"])
        self.process: subprocess.Popen | None = None  # set in the process that started it

    def __str__(self) -> str:
        return f"stand-in {self.pid} {self.arm_endpoint}"

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def call(self, method: str, path: str, body: dict | None = None, *, token: str = ""):
        """(status, JSON body) of one call to the stand-in's HTTPS listener."""
        import http.client

        conn = http.client.HTTPSConnection(
            self.host, self.https_port, context=self._context(), timeout=30
        )
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            conn.request(
                method, path, body=None if body is None else json.dumps(body), headers=headers
            )
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        return response.status, (json.loads(data) if data else None)

    def _admin(self, method: str, path: str, body: dict | None = None) -> dict:
        status, answer = self.call(method, f"/_standin/{path}", body)
        if status >= 300:
            raise RuntimeError(f"stand-in {method} {path}: {status} {answer}")
        return answer

    def add_disk(self, name: str, **options) -> str:
        """A managed disk on the page blob `container`/`blob` (or a new one); its ID."""
        return self._admin("POST", "disks", {"name": name, **options})["id"]

    def backing(self, resource_id: str) -> dict:
        return self._admin("GET", f"backing?id={quote(resource_id, safe='')}")

    def set_faults(self, *rules: dict) -> None:
        self._admin("POST", "faults", {"rules": list(rules)})

    def clear_faults(self) -> None:
        self._admin("DELETE", "faults")

    def requests(self) -> list[dict]:
        return self._admin("GET", "requests")["requests"]

    def token(self, principal: str = "awx-credential", seconds: int = TOKEN_SECONDS) -> str:
        return self._admin("POST", "tokens", {"principal": principal, "seconds": seconds})[
            "access_token"
        ]

    def issued_tokens(self) -> list[str]:
        return self._admin("GET", "tokens")["tokens"]

    def teardown(self) -> None:
        """End the server by its PID (checked against its start time); remove its directory."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(STOP_TIMEOUT)
        elif same_process(self.pid, self.pid_start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while same_process(self.pid, self.pid_start):
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, signal.SIGKILL)
                    break
                time.sleep(0.05)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.forget()

    stop = teardown  # the word its users know


def start_standin(
    azurite_state: dict,
    base_dir: os.PathLike | str,
    *,
    host: str = "127.0.0.1",
    extra_hosts: tuple = (),
    lro_seconds: float = 0.3,
    owned: bool = True,
) -> StandinProcess:
    """Start the stand-in as its own process (Azurite must run); wait until it listens.

    `owned`: it is stopped when this process exits (and stops by itself once this process is
    gone); `False` (the CLI's `up`) starts it in its own session and leaves it to `down`/`cleanup`.
    """
    directory = StandinProcess.registry.new_directory("armstandin-", str(base_dir))
    record = {"directory": directory}
    with StandinProcess.registry.making(record, owned, record_name(directory)) as standin:
        azurite_file = os.path.join(directory, "azurite.json")
        Path(azurite_file).write_text(json.dumps(azurite_state))
        ready = os.path.join(directory, "ready.json")
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "serve",
            "--directory",
            directory,
            "--azurite-json",
            azurite_file,
            "--host",
            host,
            "--ready",
            ready,
            "--lro-seconds",
            str(lro_seconds),
        ]
        for extra in extra_hosts:
            command += ["--extra-host", extra]
        if owned:
            command += [
                "--owner-pid",
                str(os.getpid()),
                "--owner-start",
                process_start(os.getpid()),
            ]
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        with open(os.path.join(directory, "server.log"), "wb") as log:
            standin.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=not owned,
                env=env,
            )
        standin.pid, standin.pid_start = standin.process.pid, process_start(standin.process.pid)
        standin.save()
        deadline = time.monotonic() + READY_TIMEOUT
        while not os.path.exists(ready):
            if standin.process.poll() is not None or time.monotonic() > deadline:
                tail = Path(directory, "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the ARM stand-in did not come up: {tail}")
            time.sleep(0.02)
        for field, value in json.loads(Path(ready).read_text()).items():
            setattr(standin, field, value)
        standin.save()
    return standin


if pytest is not None:

    @pytest.fixture(scope="session")
    def arm_standin(azurite, tmp_path_factory) -> StandinProcess:
        standin = start_standin(azurite.state(), tmp_path_factory.mktemp("armstandin"))
        yield standin
        standin.stop()


def main(argv: list[str] | None = None) -> int:
    registry = StandinProcess.registry
    parser, commands, up = registry.command_line(
        __doc__.splitlines()[0], "start the stand-in detached and record it"
    )
    up.add_argument("--azurite-json", required=True, help="the state file of azurite.py up")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--extra-host", action="append", default=[])
    up.add_argument("--lro-seconds", type=float, default=0.3)
    serve = commands.add_parser("serve", help="(internal) run the server in the foreground")
    serve.add_argument("--directory", required=True)
    serve.add_argument("--azurite-json", required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--extra-host", action="append", default=[])
    serve.add_argument("--ready")
    serve.add_argument("--lro-seconds", type=float, default=0.3)
    serve.add_argument("--owner-pid", type=int)
    serve.add_argument("--owner-start")
    args = parser.parse_args(argv)
    if args.command == "serve":
        standin = ArmStandin(
            json.loads(Path(args.azurite_json).read_text()),
            host=args.host,
            extra_hosts=tuple(args.extra_host),
            directory=args.directory,
            lro_seconds=args.lro_seconds,
        )
        owner = (args.owner_pid, args.owner_start) if args.owner_pid else None
        standin.serve(args.ready, owner)
        return 0
    status = registry.run_command(
        args,
        lambda: start_standin(
            json.loads(Path(args.azurite_json).read_text()),
            args.base_dir or tempfile.gettempdir(),
            host=args.host,
            extra_hosts=tuple(args.extra_host),
            lro_seconds=args.lro_seconds,
            owned=False,
        ),
    )
    if args.command == "down":  # the state file goes with the stand-in it describes
        Path(args.json).unlink(missing_ok=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
