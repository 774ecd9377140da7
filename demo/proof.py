"""The demo's proof: a restore, judged by the blob service's word and the restored disks' content.

Usage: proof.py WORK_DIR

WORK_DIR holds the records of the source disks (disk<N>.json, from blobdisk.py up) and of the
restored disks, attached but not mounted (disk<N>-restored.json). The proof holds when
- the status blob says application-consistent, and each disk has one snapshot, stamped so (the
  frozen window it reports is printed beside the snapshot calls inside it, not judged);
- the application says it was held at record N (events.log: "held at record N for T ms");
- each restored filesystem is clean (ext4: e2fsck -fn on the restored disk as it is; xfs: its
  log replayed by a mount, as on any boot after a freeze, then xfs_repair -n) and mounts;
- each restored ledger holds exactly records 1..N, every line complete, byte for byte the first
  N lines of the live ledger: everything written before the pre-script, nothing after it;
- the application is writing again on the live disks.
"""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / ".cache" / "collections")]

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_document import (  # noqa: E402
    parse_status_document,
)
from harness.azurite import Azurite  # noqa: E402

HELD = re.compile(r"held at record (\d+) for (\d+) ms")
RECORD = re.compile(rb"record (\d{8}) \d+\.\d{6}")


def check_and_mount(fstype: str, device: str, mount_point: str) -> str:
    """Check the restored filesystem and mount it; says what was done, raises on a problem."""
    if fstype == "ext4":
        commands = [["e2fsck", "-fn", device], ["mount", device, mount_point]]
        done = "e2fsck -fn clean, mounts"
    else:
        # xfs: nouuid, since the source (same UUID) is still mounted; a frozen XFS leaves its
        # log to replay, so: mount (which replays it), unmount, check, mount again.
        mount = ["mount", "-o", "nouuid", device, mount_point]
        commands = [mount, ["umount", mount_point], ["xfs_repair", "-n", device], mount]
        done = "mounts (log replayed), xfs_repair -n clean"
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()[-300:]
            raise RuntimeError(f"{' '.join(command)} failed: {output}")
    return done


def ledger_problem(restored: bytes, live: bytes, held_at: int) -> str:
    """'' when the restored ledger is exactly records 1..held_at, as the live ledger has them."""
    lines = restored.split(b"\n")
    if lines[-1]:
        return f"its last line is incomplete: {lines[-1][:40]!r}"
    lines.pop()
    for index, line in enumerate(lines, 1):
        match = RECORD.fullmatch(line)
        if not match or int(match.group(1)) != index:
            return f"line {index} is not record {index}: {line[:40]!r}"
    if len(lines) != held_at:
        return f"it holds records 1..{len(lines)}, not 1..{held_at}"
    if not live.startswith(restored):
        return "it differs from the first lines of the live ledger"
    return ""


def frozen_window(telemetry: dict) -> str:
    """The window as the status blob reports it, beside the snapshot calls made inside it."""
    try:
        window, freeze, calls, thaw = (
            float(telemetry[key])
            for key in ("frozenWindowMs", "FreezeTime", "snapshotTimeTaken", "ThawTime")
        )
    except (KeyError, TypeError, ValueError):
        return f"frozen window: not in the status blob's telemetry ({sorted(telemetry)})"
    return (
        f"frozen window {window:.1f} ms: freeze {freeze:.1f}, snapshot calls {calls:.1f},"
        f" thaw {thaw:.1f} (window / calls {window / calls:.2f})"
        if calls > 0
        else f"frozen window {window:.1f} ms, no snapshot calls timed"
    )


def main() -> int:
    work = Path(sys.argv[1])
    failures = []
    server = Azurite.from_state(json.loads((work / "azurite.json").read_text()))
    status = parse_status_document(server.read_blob("status", "status.json").decode())
    print(
        f"status blob: code {status['code']}, {status['consistency']}-consistent, "
        f"task {status['task_id']}"
    )
    if status["consistency"] != "application":
        failures.append("status blob")
    print(frozen_window(status["telemetry"]))
    sources = sorted(work.glob("disk[0-9].json"))
    for source in sources:
        container, name = json.loads(source.read_text())["blob_url"].rsplit("/", 2)[-2:]
        snapshots = server.list_snapshots(container, name)
        stamps = [item["metadata"].get("appconsistentLevel") for item in snapshots]
        if stamps == ["application"]:
            print(f"{name}: one snapshot ({snapshots[0]['snapshot']}), stamped application")
        else:
            print(f"{name}: {len(snapshots)} snapshots, stamped {stamps}")
            failures.append(f"{name} snapshot")

    control = work / "app"
    holds = HELD.findall((control / "events.log").read_text())
    if not holds:
        print("application: never held")
        return verdict([*failures, "hold"])
    held_at = int(holds[-1][0])
    held_ms = holds[-1][1]
    print(f"application: held at record {held_at} for {held_ms} ms (by the pre- and post-scripts)")

    for source in sources:
        disk = json.loads(source.read_text())
        record = source.with_name(f"{source.stem}-restored.json")
        if not record.exists():
            print(f"{source.stem}: no restored disk")
            failures.append(f"{source.stem} restore")
            continue
        restored = json.loads(record.read_text())
        label = f"{restored['blob_url'].rsplit('/', 1)[-1]} ({disk['fstype']})"
        try:
            done = check_and_mount(disk["fstype"], restored["device"], restored["mount_point"])
            ledger = (Path(restored["mount_point"]) / "ledger.txt").read_bytes()
            live = (Path(disk["mount_point"]) / "ledger.txt").read_bytes()
        except (RuntimeError, OSError) as exc:
            print(f"{label}: {exc}")
            failures.append(label)
            continue
        problem = ledger_problem(ledger, live, held_at)
        print(f"{label}: {done}; ledger: {problem or f'records 1..{held_at}, every line complete'}")
        if problem:
            failures.append(f"{label} ledger")

    before = int((control / "count").read_text())
    time.sleep(0.5)
    after = int((control / "count").read_text())
    print(f"application: writing again on the live disks ({before} -> {after} records in 0.5 s)")
    if after <= before or before <= held_at:
        failures.append("application")
    return verdict(failures)


def verdict(failures: list) -> int:
    print("PROOF HOLDS" if not failures else f"PROOF FAILED ({', '.join(failures)})")
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # a proof that cannot be made does not hold
        sys.exit(verdict([f"{type(exc).__name__}: {exc}"]))
