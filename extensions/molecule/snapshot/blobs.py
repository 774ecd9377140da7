"""Disks in Azurite for the snapshot scenario, and the check of what the snapshot left there.

    blobs.py disks --azurite azurite.json --out disks.json [--count 2]
    blobs.py check --azurite azurite.json --disks disks.json --result result.json

`disks` makes page blobs with known bytes and writes their read/write SAS URIs, and a status
blob SAS, to --out (mode 0600). `check` uses azure-storage-blob (the independent oracle, with the
account key) to prove that every disk has the snapshot the run reported, stamped
application-consistent, that the snapshot keeps the old bytes after the disk is overwritten, and
that the status document in the status blob says application-consistent. Exit status 1 and a
message on the first mismatch. Needs the repository's tests/ on PYTHONPATH (the harness).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid

from harness.azurite import Azurite

DISK_SIZE = 64 * 1024


def _content(container: str, index: int) -> bytes:
    line = f"disk {index} of {container}, before the snapshot\n".encode()
    return (line * (DISK_SIZE // len(line) + 1))[:DISK_SIZE]


def _azurite(path: str) -> Azurite:
    with open(path) as handle:
        return Azurite.from_state(json.load(handle))


def make_disks(args: argparse.Namespace) -> int:
    server = _azurite(args.azurite)
    container = server.create_container(f"molecule{uuid.uuid4().hex[:12]}")
    disks = []
    for index in range(args.count):
        name = f"disk{index}.vhd"
        server.create_page_blob(name, DISK_SIZE, _content(container, index), container=container)
        disks.append({"name": name, "sas": server.blob_sas(container, name, permissions="rw")})
    state = {
        "container": container,
        "disks": disks,
        "status_sas": server.status_blob_sas(container, "status.json"),
    }
    descriptor = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(state, handle, indent=2)
    print(f"{len(disks)} disks in container {container}")
    return 0


def check(args: argparse.Namespace) -> int:
    server = _azurite(args.azurite)
    with open(args.disks) as handle:
        state = json.load(handle)
    with open(args.result) as handle:
        result = json.load(handle)
    container = state["container"]
    reported = {entry["blob_url"].rsplit("/", 1)[-1]: entry for entry in result["snapshots"]}
    problems = []
    for index, disk in enumerate(state["disks"]):
        name = disk["name"]
        snapshots = server.list_snapshots(container, name)
        taken = reported.get(name, {}).get("snapshot")
        if [item["snapshot"] for item in snapshots] != [taken]:
            problems.append(f"{name}: Azurite has {snapshots}, the run reported {taken!r}")
            continue
        level = snapshots[0]["metadata"].get("appconsistentLevel")
        if level != "application":
            problems.append(f"{name}: snapshot stamped {level!r}, not 'application'")
        old = _content(container, index)
        server.write_pages(container, name, b"after the snapshot\n" * 32)
        if server.read_snapshot(container, name, taken) != old:
            problems.append(f"{name}: the snapshot does not hold the bytes from before it")
        if server.read_blob(container, name) == old:
            problems.append(f"{name}: overwriting the disk did not change it")
    document = json.loads(server.read_blob(container, "status.json"))
    status = document[0]["status"]
    message = json.loads(status["formattedMessage"]["message"])
    if status["code"] != "0" or message["snapshotConsistency"] != 2:
        problems.append(
            f"status blob: code {status['code']!r}, consistency {message['snapshotConsistency']!r}"
        )
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{len(state['disks'])} snapshots hold the old bytes; the status blob says code 0")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    disks = commands.add_parser("disks", help="make page blobs with known bytes")
    disks.add_argument("--azurite", required=True)
    disks.add_argument("--out", required=True)
    disks.add_argument("--count", type=int, default=2)
    disks.set_defaults(run=make_disks)
    verify = commands.add_parser("check", help="check the snapshots against the run's result")
    verify.add_argument("--azurite", required=True)
    verify.add_argument("--disks", required=True)
    verify.add_argument("--result", required=True)
    verify.set_defaults(run=check)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
