"""Shared pieces of the snapshot system tests: writers and frozen-state probes (script sets:
tests/harness/scriptset.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

WRITER = r"""
import json, os, sys, time
path, out = sys.argv[1], sys.argv[2]
stamps = []
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    os.write(fd, b"x" * 64)
    stamps.append(time.monotonic())
    time.sleep(0.0005)
gaps = [b - a for a, b in zip(stamps, stamps[1:])]
with open(out, "w") as handle:
    json.dump({"writes": len(stamps), "max_gap_ms": max(gaps) * 1000}, handle)
"""


def start_writer(mount_point: str, report: Path, seconds: float) -> subprocess.Popen:
    """A process appending to a file on `mount_point` every half millisecond."""
    target = os.path.join(mount_point, "writer.log")
    return subprocess.Popen([sys.executable, "-c", WRITER, target, str(report), str(seconds)])


def writer_report(process: subprocess.Popen, report: Path) -> dict:
    process.wait(timeout=60)
    return json.loads(report.read_text())


def writable_within(mount_point: str, seconds: float) -> bool:
    """Try a write (and fsync) in a child process, so a frozen filesystem never blocks the test."""
    probe = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os,sys; fd=os.open(sys.argv[1], os.O_WRONLY|os.O_CREAT, 0o600); "
            "os.write(fd, b'probe'); os.fsync(fd)",
            os.path.join(mount_point, f"probe-{time.monotonic_ns()}"),
        ]
    )
    try:
        return probe.wait(timeout=seconds) == 0
    except subprocess.TimeoutExpired:
        # Blocked on the frozen filesystem: it finishes (and is reaped) once someone thaws.
        return False
