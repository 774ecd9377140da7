"""Deadlines against servers the fault proxy cannot play: raw sockets on loopback.

A blob endpoint whose TLS handshake never completes (it accepts and says nothing), one that
answers the snapshot call with `100 Continue` forever, one that sends a status line and then a
header line every 0.3 s forever, one that sends a hundred `100 Continue` answers each with 99
headers, one that half-closes after the status line. At the snapshot call (while frozen) and at
the status blob (after the post-script). Whatever it does: the module returns within
max_freeze_seconds + the documented margin + the process's start, the filesystem is writable
again within the deadline + 1 s, the post-script ran, the application is released and the
status file is written with the right code.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import threading
import time
from urllib.parse import quote

import pytest
from fault_support import run_module_process, snapshot_args, summary, warnings_of

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._snapshot_run import (
    JOIN_GRACE_SECONDS,
    REPORT_SECONDS,
)

DEADLINE = 2
MARGIN = REPORT_SECONDS + JOIN_GRACE_SECONDS + 1.0
START_UP = 2.5
ALL_SCRIPTS = ["pre-start", "pre-end", "post-start", "post-end"]
HEAD_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\nx-ms-blob-type: PageBlob\r\n"
    b'ETag: "0x1"\r\nLast-Modified: Mon, 07 Dec 2026 00:00:00 GMT\r\n\r\n'
)


class RawServer:
    """A loopback HTTP endpoint that answers HEAD like a page blob and misbehaves otherwise."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.requests: list[str] = []
        self._connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def sas(self, container: str, blob: str, permissions: str = "rw", scheme: str = "http") -> str:
        signature = base64.b64encode(os.urandom(32)).decode()
        return (
            f"{scheme}://127.0.0.1:{self.port}/devstoreaccount1/{container}/{blob}?sv=2021-12-02"
            f"&sr=b&sp={permissions}&se=2030-01-01T00:00:00Z&sig={quote(signature, safe='')}"
        )

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for conn in self._connections:
            with contextlib.suppress(OSError):
                conn.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _address = self.sock.accept()
            except OSError:
                return
            self._connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if self.behaviour == "tls-never-completes":
                self.stop.wait(120)  # accepted, never a byte of the handshake
                return
            buffer = b""
            while not self.stop.is_set():
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _sep, buffer = buffer.partition(b"\r\n\r\n")
                request_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
                self.requests.append(request_line)
                if request_line.startswith("HEAD "):
                    conn.sendall(HEAD_ANSWER)
                    continue
                self._misbehave(conn)
                return

    def _misbehave(self, conn: socket.socket) -> None:
        if self.behaviour == "100-continue-forever":
            while not self.stop.is_set():
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" * 64)
        elif self.behaviour == "headers-forever":
            conn.sendall(b"HTTP/1.1 201 Created\r\n")
            while not self.stop.wait(0.3):
                conn.sendall(b"x-ms-request-id: 0\r\n")
        elif self.behaviour == "continues-with-99-headers":
            headers = b"".join(b"x-h%d: v\r\n" % i for i in range(99))
            for _answer in range(100):
                conn.sendall(b"HTTP/1.1 100 Continue\r\n" + headers + b"\r\n")
                if self.stop.wait(0.05):
                    return
            self.stop.wait(120)
        elif self.behaviour == "half-closed-after-status-line":
            conn.sendall(b"HTTP/1.1 201 Created\r\n")
            conn.shutdown(socket.SHUT_WR)
            self.stop.wait(120)


BEHAVIOURS = [
    "100-continue-forever",
    "headers-forever",
    "continues-with-99-headers",
    "half-closed-after-status-line",
]


def _bounded_run(case, meter, app, args: dict, tmp_path, codes: tuple, bound: float) -> dict:
    started = time.monotonic()
    result, process = run_module_process(args, tmp_path, timeout=120)
    took = time.monotonic() - started
    case.module_output(process)
    case.frozen(meter, process.started, DEADLINE + 1.0)
    case.check(result and result.get("status_code") in codes, summary(result))
    case.check(took <= bound, f"returned after {took:.1f} s (bound {bound:.1f} s)")
    case.check(app.entries() == ALL_SCRIPTS, f"scripts: {app.entries()}")
    case.check(app.lock_free(), "the application's lock is still held")
    case.check((tmp_path / "state/status/last.status").exists(), "no status file")
    notes = case.scenario.notes
    notes["slowest return (s)"] = max(notes.get("slowest return (s)", 0), round(took, 1))
    notes["bound (s)"] = round(bound, 1)
    return result or {}


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_a_raw_server_at_the_snapshot_call(
    figures, app, meter, blob_disks, loop_ext4, run_dirs, tmp_path, behaviour
):
    scenario = figures.scenario(
        "raw-socket-deadlines", "deadlines",
        "raw servers: TLS never completing, 100 Continue forever, headers forever, half-close",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case(f"snapshot call: {behaviour}") as case:
        server = RawServer(behaviour)
        try:
            good = blob_disks(1)[0]
            args = snapshot_args([good], app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
            args["disks"].append(server.sas("c", "disk.vhd"))
            # One disk of two fails: 76 (health 761), never application-consistent.
            _bounded_run(case, meter, app, args, tmp_path, (76,), DEADLINE + MARGIN + START_UP)
            case.check(
                any("comp=snapshot" in line for line in server.requests), "no snapshot call came"
            )
        finally:
            server.close()


# A status line and then the end of the connection is a 201 with no headers: for the status
# blob that is an answer (no evidence is asked of it), so that one is not here.
@pytest.mark.parametrize("behaviour", ["tls-never-completes", *BEHAVIOURS[:3]])
def test_a_raw_server_as_the_status_blob(
    figures, app, meter, blob_disks, loop_ext4, run_dirs, tmp_path, behaviour
):
    scenario = figures.scenario(
        "raw-socket-deadlines", "deadlines",
        "raw servers: TLS never completing, 100 Continue forever, headers forever, half-close",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case(f"status blob: {behaviour}") as case:
        server = RawServer(behaviour)
        try:
            scheme = "https" if behaviour == "tls-never-completes" else "http"
            args = snapshot_args(
                blob_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE,
                status_blob_uri=server.sas("status", "status.json", "rcw", scheme),
                snapshot_timeout=3.0,
            )  # fmt: skip
            # The status blob is written after the post-script, within snapshot_timeout (it may
            # also be tried at the start of the run).
            bound = DEADLINE + MARGIN + START_UP + 2 * 3.0
            result = _bounded_run(case, meter, app, args, tmp_path, (0,), bound)
            warned = " ".join(warnings_of(result))
            case.check("status" in warned.lower(), f"no warning about the status blob: {warned}")
        finally:
            server.close()
