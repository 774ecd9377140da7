"""Fail when the test suite left anything of its harness behind on this machine.

Usage: python tests/check_leftovers.py

Looks for what only our harness makes: loop devices backed by its images, mounts below its
temporary directories, network namespaces and links named acvs-*, Azurite or sshd processes
started from its directories, and harness state records. Run as the suite's last stage.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HARNESS_MARKERS = ("appconsistent-", "acvs-", "vmsnapshot-demo.")
STATE_DIRS = (Path("/run/appconsistent-harness"), Path("/run/acvs-fleet"))


def marked(text: str) -> bool:
    return any(marker in text for marker in HARNESS_MARKERS)


def loop_devices() -> list[str]:
    listing = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False)
    return [line for line in listing.stdout.splitlines() if marked(line)]


def mounts() -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        return [line.split()[4] for line in handle if marked(line.split()[4])]


def namespaces_and_links() -> list[str]:
    found = []
    for command in (["ip", "netns", "list"], ["ip", "-o", "link", "show"]):
        listing = subprocess.run(command, capture_output=True, text=True, check=False)
        found += [
            line.split()[0 if command[1] == "netns" else 1]
            for line in listing.stdout.splitlines()
            if "acvs-" in line
        ]
    return found


def processes() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marked(command) or ("azurite" in command and "node" in command):
            found.append(f"{entry.name}: {command[:120]}")
    return found


def state_records() -> list[str]:
    """Records the harness keeps while something of it exists (not its lock files)."""
    return [
        str(path)
        for directory in STATE_DIRS
        if directory.is_dir()
        for path in directory.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    ]


def main() -> int:
    checks = {
        "loop devices": loop_devices(),
        "mounts": mounts(),
        "namespaces and links": namespaces_and_links(),
        "processes": processes(),
        "harness state records": state_records(),
    }
    for what, items in checks.items():
        for item in items:
            print(f"left behind ({what}): {item}")
    total = sum(len(items) for items in checks.values())
    print(f"leftovers: {total} found ({', '.join(checks)} checked)")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
