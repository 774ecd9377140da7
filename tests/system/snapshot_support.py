"""Shared pieces of the snapshot system tests: script sets, writers, frozen-state probes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
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


@dataclass
class ScriptSet:
    """A pre/post script pair and their configuration, written the way the role deploys them."""

    config_path: Path
    journal: Path

    def entries(self) -> list[str]:
        return self.journal.read_text().split() if self.journal.exists() else []


def write_prepost(
    directory: Path,
    *,
    pre: str = "exit 0",
    post: str = "exit 0",
    timeout: int = 30,
    continue_on_failure: bool = True,
    freeze: bool = True,
) -> ScriptSet:
    """Root-owned 0700 scripts and a 0600 config in `directory` (which must be root's, 0700)."""
    directory.mkdir(mode=0o700, exist_ok=True)
    journal = directory / "journal"
    scripts = {}
    for phase, body in (("pre", pre), ("post", post)):
        path = directory / f"{phase}-script.sh"
        path.write_text(f'#!/bin/sh\necho {phase} >> "{journal}"\n{body}\n')
        path.chmod(0o700)
        scripts[phase] = str(path)
    config = {
        "pluginName": "ScriptRunner",
        "preScriptLocation": scripts["pre"],
        "postScriptLocation": scripts["post"],
        "preScriptParams": [],
        "postScriptParams": [],
        "preScriptNoOfRetries": 0,
        "postScriptNoOfRetries": 0,
        "timeoutInSeconds": timeout,
        "continueBackupOnFailure": continue_on_failure,
        "fsFreezeEnabled": freeze,
    }
    config_path = directory / "VMSnapshotScriptPluginConfig.json"
    config_path.write_text(json.dumps(config))
    config_path.chmod(0o600)
    return ScriptSet(config_path, journal)


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
