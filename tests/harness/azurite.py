"""Azurite, the real Azure Blob service emulator, for the system tests and playbooks.

`start_azurite()` runs the repository's `node_modules/.bin/azurite-blob` on a free port with its
own data directory; `Azurite` carries helpers built on azure-storage-blob with the well-known
development account: containers, page blobs ("disks"), SAS URIs of every kind the tests need
(read/write, read-only, expired, not yet valid, bad signature), and reading snapshots back.

Each service is a record of `records.py` (in `<state dir>/azurite/`): one started by a test
process is stopped by PID (checked against its start time) when that process exits or gets
SIGTERM/SIGHUP, and `cleanup` stops those of dead owners.

Pytest fixtures: `azurite` (one service for the session) and `blob_disks` (a factory of page
blobs with known bytes). A CLI for shell and playbooks:

    python tests/harness/azurite.py up --json state.json [--host 127.0.0.1] [--port 0] [--tls]
    python tests/harness/azurite.py sas --json state.json --container disks \
        [--page-blob-size 4096] [--permissions rw] [--expired|--not-yet-valid|--bad-signature] \
        disk0 disk1
    python tests/harness/azurite.py down --json state.json
    python tests/harness/azurite.py cleanup [--all]

A service from `up` belongs to no process: `down` or `cleanup` stops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import quote

if __package__ in (None, ""):  # run as a script: import the harness the way the tests do
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    generate_blob_sas,
)

from harness.records import (
    Record,
    Registry,
    process_start,
    record_name,
    same_process,
    state_dir,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
# Azurite's published development key (public, documented by Microsoft; not a secret).
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
DEFAULT_CONTAINER = "disks"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_LISTENING = re.compile(r"successfully listens on https?://\S+:(\d+)")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def records_dir() -> str:
    return os.path.join(state_dir(), "azurite")


class Azurite(Record):
    """A running Azurite blob service and helpers to use it as the tests' oracle.

    Made by ``start_azurite``; ``from_state`` gives the helpers of one that ``state()`` describes.
    """

    fields = ("host", "port", "location", "pid", "start", "ca_file")
    noun = "Azurite"
    registry = Registry(records_dir)
    host: str
    port: int
    location: str  # its own directory: data, log, certificate
    pid: int | None
    start: str | None  # the server's start time: guards against PID reuse
    ca_file: str | None  # set when it serves HTTPS with its own self-signed certificate

    def __init__(self, record: dict, state_file: str) -> None:
        super().__init__(record, state_file)
        self.process: subprocess.Popen | None = None  # set in the process that started it
        self._service: BlobServiceClient | None = None

    def __str__(self) -> str:
        return f"Azurite {self.pid} {self.endpoint}"

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.ca_file else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The account's blob service URL (what BlobServiceClient takes)."""
        return f"{self.endpoint}/{ACCOUNT}"

    @property
    def service(self) -> BlobServiceClient:
        if self._service is None:
            # No SDK retries: a dead Azurite should fail a test at once, not after 87 s.
            self._service = BlobServiceClient(
                self.url,
                credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
                retry_total=0,
                connection_timeout=5,
                read_timeout=30,
                connection_verify=self.ca_file or True,
            )
        return self._service

    # --- state ---------------------------------------------------------------------------

    def as_dict(self) -> dict:
        return {**super().as_dict(), "account": ACCOUNT, "url": self.url}

    state = as_dict  # what the CLI writes and other harness files take

    @classmethod
    def from_state(cls, state: dict) -> Azurite:
        return cls(state, state["state_file"])

    def teardown(self) -> None:
        """End the service by its PID (terminate, wait, kill) and remove its directory."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(STOP_TIMEOUT)
        else:
            _end_process(self.pid, self.start)
        if self._service is not None:
            self._service.close()
            self._service = None
        shutil.rmtree(self.location, ignore_errors=True)
        self.forget()

    stop = teardown  # the word its users know

    # --- blobs ---------------------------------------------------------------------------

    def create_container(self, name: str | None = None) -> str:
        name = name or f"c{uuid.uuid4().hex[:20]}"
        with contextlib.suppress(ResourceExistsError):
            self.service.create_container(name)
        return name

    def create_page_blob(
        self,
        name: str,
        size: int,
        content: bytes | None = None,
        *,
        container: str = DEFAULT_CONTAINER,
    ) -> str:
        """A page blob (a "disk") of `size` bytes (512-aligned), holding `content` from 0."""
        if size <= 0 or size % 512:
            raise ValueError(f"page blob size {size} is not a positive multiple of 512")
        self.create_container(container)
        blob = self.service.get_blob_client(container, name)
        blob.create_page_blob(size)
        if content:
            self.write_pages(container, name, content)
        return name

    def write_pages(self, container: str, name: str, content: bytes, offset: int = 0) -> None:
        """Overwrite bytes of a page blob (padded with zeros to whole 512-byte pages)."""
        padded = content + b"\0" * (-len(content) % 512)
        self.service.get_blob_client(container, name).upload_page(
            padded, offset=offset, length=len(padded)
        )

    def create_block_blob(self, container: str, name: str, data: bytes = b"") -> str:
        self.create_container(container)
        self.service.get_blob_client(container, name).upload_blob(data, overwrite=True)
        return name

    def read_blob(self, container: str, name: str) -> bytes:
        return self.service.get_blob_client(container, name).download_blob().readall()

    def blob_properties(self, container: str, name: str):
        return self.service.get_blob_client(container, name).get_blob_properties()

    def list_snapshots(self, container: str, name: str) -> list[dict]:
        """The blob's snapshots, oldest first: {"snapshot": <timestamp>, "metadata": {...}}."""
        blobs = self.service.get_container_client(container).list_blobs(
            name_starts_with=name, include=["snapshots", "metadata"]
        )
        found = [
            {"snapshot": item.snapshot, "metadata": dict(item.metadata or {})}
            for item in blobs
            if item.name == name and item.snapshot
        ]
        return sorted(found, key=lambda item: item["snapshot"])

    def read_snapshot(self, container: str, name: str, snapshot: str) -> bytes:
        blob = self.service.get_blob_client(container, name, snapshot=snapshot)
        return blob.download_blob().readall()

    # --- SAS -----------------------------------------------------------------------------

    def blob_sas(
        self,
        container: str,
        blob: str,
        *,
        permissions: str = "rw",
        expiry: datetime | None = None,
        start: datetime | None = None,
        bad_signature: bool = False,
        snapshot: str | None = None,
    ) -> str:
        """A blob SAS URI. Expired: a past `expiry`; not yet valid: a future `start`. With
        `snapshot`, a snapshot SAS (sr=bs) whose URI names that snapshot: it reads only it."""
        token = generate_blob_sas(
            ACCOUNT,
            container,
            blob,
            snapshot=snapshot,
            account_key=ACCOUNT_KEY,
            permission=BlobSasPermissions.from_string(permissions),
            expiry=expiry or _utcnow() + timedelta(hours=2),
            start=start,
        )
        if bad_signature:
            token = _spoil_signature(token)
        if snapshot:
            token = f"snapshot={quote(snapshot, safe='')}&{token}"
        return f"{self.url}/{container}/{blob}?{token}"

    def status_blob_sas(self, container: str = "status", name: str = "status.json") -> str:
        """A SAS for a (not yet existing) block blob that a run writes its status to."""
        self.create_container(container)
        return self.blob_sas(container, name, permissions="rcw")

    def log_blob_sas(self, container: str = "logs", name: str = "extension.log") -> str:
        self.create_container(container)
        return self.blob_sas(container, name, permissions="rcw")


def _spoil_signature(token: str) -> str:
    """Same length and alphabet, different signature: the service must answer 403."""

    def flip(match: re.Match) -> str:
        value = match.group(2)
        first = "B" if value[0] != "B" else "C"
        return match.group(1) + first + value[1:]

    return re.sub(r"(sig=)([^&]+)", flip, token)


def _end_process(pid: int | None, start: str | None) -> None:
    """Terminate a (non-child) process by PID and start time, then kill it if it does not go."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if not same_process(pid, start):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + STOP_TIMEOUT
        while same_process(pid, start) and time.monotonic() < deadline:
            time.sleep(0.05)


def start_azurite(
    base_dir: os.PathLike | str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    tls: bool = False,
    in_memory: bool = False,
    owned: bool = True,
) -> Azurite:
    """Start azurite-blob on host:port (0: a free port) with a directory of its own under
    base_dir, and record it.

    Waits until the service accepts connections (retrying a short connect, no fixed sleep).
    `tls` serves HTTPS with a new self-signed certificate for `host` and localhost (its file is
    `ca_file`). `in_memory` keeps the blobs in memory instead of in the directory. `owned`: it
    is stopped when this process exits; `False` (the CLI's `up`) starts it in its own session
    and leaves it to `down`/`cleanup`.
    """
    os.makedirs(base_dir, exist_ok=True)
    location = Azurite.registry.new_directory("azurite-", str(base_dir))
    record = {"host": host, "port": port, "location": location, "ca_file": None}
    with Azurite.registry.making(record, owned, record_name(location)) as server:
        command = [str(AZURITE_BIN), "--blobHost", host, "--blobPort", str(port)]
        if in_memory:
            command.append("--inMemoryPersistence")
        else:
            command += ["--location", os.path.join(location, "data")]
        command += ["--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent"]
        if tls:
            server.ca_file, key_file = _self_signed_certificate(Path(location), host)
            command += ["--cert", server.ca_file, "--key", key_file]
        log_path = Path(location, "azurite.log")
        with open(log_path, "wb") as log:
            server.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=not owned,
            )
        server.pid, server.start = server.process.pid, process_start(server.process.pid)
        server.save()
        server.port = _wait_until_listening(server.process, log_path, host, READY_TIMEOUT)
        server.save()
    return server


def _self_signed_certificate(directory: Path, host: str) -> tuple[str, str]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    kind = "IP" if re.fullmatch(r"[\d.]+|[\da-fA-F:]+", host) else "DNS"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    command += ["-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)]
    command += ["-addext", f"subjectAltName=DNS:localhost,{kind}:{host}"]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


def _wait_until_listening(
    process: subprocess.Popen, log_path: Path, host: str, timeout: float
) -> int:
    """The port Azurite reports, once a TCP connect to it succeeds."""
    deadline = time.monotonic() + timeout
    port = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"azurite-blob exited with {process.returncode}: "
                f"{log_path.read_text(errors='replace')[-2000:]}"
            )
        if port is None:
            match = _LISTENING.search(log_path.read_text(errors="replace"))
            port = int(match.group(1)) if match else None
        if port is not None:
            with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
                return port
        time.sleep(0.02)
    raise RuntimeError(f"azurite-blob did not listen within {timeout} s")


# --- pytest fixtures --------------------------------------------------------------------------


@dataclass(frozen=True)
class BlobDisk:
    """A page blob standing for one disk: where it is, what it holds, its read/write SAS URI."""

    container: str
    name: str
    content: bytes
    sas: str


@pytest.fixture(scope="session")
def azurite(tmp_path_factory) -> Azurite:
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.fixture
def blob_disks(azurite: Azurite) -> Callable[..., list[BlobDisk]]:
    """Factory: `blob_disks(2)` makes 2 page blobs with known bytes in a fresh container."""

    def make(count: int, *, size: int = 64 * 1024, permissions: str = "rw") -> list[BlobDisk]:
        container = azurite.create_container()
        disks = []
        for index in range(count):
            name = f"disk{index}.vhd"
            content = (f"disk {index} of {container}\n".encode() * (size // 32 + 1))[:size]
            azurite.create_page_blob(name, size, content, container=container)
            sas = azurite.blob_sas(container, name, permissions=permissions)
            disks.append(BlobDisk(container, name, content, sas))
        return disks

    return make


# --- CLI --------------------------------------------------------------------------------------


def _cli_sas(args) -> int:
    server = Azurite.from_state(json.loads(Path(args.json).read_text()))
    now = _utcnow()
    expiry = now - timedelta(hours=1) if args.expired else None
    start = now + timedelta(hours=1) if args.not_yet_valid else None
    uris = {}
    for name in args.blobs:
        if args.page_blob_size:
            server.create_page_blob(name, args.page_blob_size, container=args.container)
        else:
            server.create_container(args.container)
        uris[name] = server.blob_sas(
            args.container,
            name,
            permissions=args.permissions,
            expiry=expiry,
            start=start,
            bad_signature=args.bad_signature,
        )
    print(json.dumps(uris, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    registry = Azurite.registry
    parser, commands, up = registry.command_line(
        __doc__.splitlines()[0], "start Azurite detached and record it"
    )
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=0)
    up.add_argument("--tls", action="store_true", help="serve HTTPS (self-signed certificate)")
    sas = commands.add_parser("sas", help="print SAS URIs for named blobs as JSON")
    sas.add_argument("--json", required=True)
    sas.add_argument("--container", default=DEFAULT_CONTAINER)
    sas.add_argument("--page-blob-size", type=int, help="create the blobs as page blobs first")
    sas.add_argument("--permissions", default="rw")
    variant = sas.add_mutually_exclusive_group()
    variant.add_argument("--expired", action="store_true")
    variant.add_argument("--not-yet-valid", action="store_true")
    variant.add_argument("--bad-signature", action="store_true")
    sas.add_argument("blobs", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "sas":
        return _cli_sas(args)
    status = registry.run_command(
        args,
        lambda: start_azurite(
            args.base_dir or tempfile.gettempdir(),
            host=args.host,
            port=args.port,
            tls=args.tls,
            owned=False,
        ),
    )
    if args.command == "down":  # the state file goes with the service it describes
        Path(args.json).unlink(missing_ok=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
