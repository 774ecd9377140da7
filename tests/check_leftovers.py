"""Fail when the test suite left anything of its harness behind on this machine.

Usage:
    python tests/check_leftovers.py --before FILE   # at the suite's start
    python tests/check_leftovers.py --since FILE    # its last stage

Looks for what only our harness makes: loop devices backed by its images, mounts below its
temporary directories, network namespaces and links named acvs-*, Azurite or sshd processes
started from its directories, and harness state records.

``--before`` first tears down what killed earlier runs left on record (blob disks, filesystems,
fleets, Resource Manager stand-ins and Azurites whose owning process is gone; never those of a
live process or of a CLI ``up``), then
writes what is still there to FILE. ``--since`` fails on anything found that FILE does not list:
what this run left behind, not what a live run beside it or an earlier machine user holds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import armstandin, azurite, blobdisk, fleet, loopfs
from harness.records import state_dir

HARNESS_MARKERS = ("appconsistent-", "acvs-", "vmsnapshot-demo.")
STATE_DIRS = (Path(state_dir()), fleet.REGISTRY)
# In the order they are reclaimed: a blob disk or a stand-in needs its Azurite until it goes.
REGISTRIES = (
    blobdisk.BlobDisk.registry,
    loopfs.LoopFilesystem.registry,
    fleet.Fleet.registry,
    armstandin.StandinProcess.registry,
    azurite.Azurite.registry,
)


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


def found() -> dict[str, list[str]]:
    return {
        "loop devices": loop_devices(),
        "mounts": mounts(),
        "namespaces and links": namespaces_and_links(),
        "processes": processes(),
        "harness state records": state_records(),
    }


def reclaim_dead_owners() -> list[str]:
    """Tear down the records of killed test processes; a record without an owner is a CLI's.
    What cannot be torn down is said and left: the leftovers stage then lists it as found
    before this run, and the suite still runs."""
    reclaimed = []
    for registry in REGISTRIES:
        for made in registry.leftovers(unowned=False):
            try:
                made.teardown()
            except Exception as exc:  # any failure of a teardown: said, not fatal
                print(f"could not reclaim {made}: {exc}")
            else:
                reclaimed.append(str(made))
    return reclaimed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--before", metavar="FILE", help="reclaim, then record what is there")
    when.add_argument("--since", metavar="FILE", help="fail on what FILE does not list")
    args = parser.parse_args(argv)
    if args.before:
        for what in reclaim_dead_owners():
            print(f"reclaimed from a killed earlier run: {what}")
        Path(args.before).write_text(json.dumps(found(), indent=2), encoding="utf-8")
        return 0
    before = json.loads(Path(args.since).read_text(encoding="utf-8"))
    checks = found()
    for what, items in checks.items():
        for item in items:
            if item in before.get(what, ()):
                print(f"there before this run, not counted ({what}): {item}")
            else:
                print(f"left behind ({what}): {item}")
    total = sum(
        item not in before.get(what, ()) for what, items in checks.items() for item in items
    )
    print(f"leftovers: {total} found ({', '.join(checks)} checked)")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
