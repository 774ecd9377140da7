"""The demo's proof, from the blob service's own word, not the module's.

Usage: proof.py WORK_DIR
Reads the status document from the status blob, lists each disk's snapshots, reads every snapshot
back and compares it with the disk, and shows that the application was held during the snapshot
and is writing again.
"""

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / ".cache" / "collections")]

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_document import (  # noqa: E402
    parse_status_document,
)
from harness.azurite import Azurite  # noqa: E402

work = Path(sys.argv[1])
server = Azurite.from_state(json.loads((work / "azurite.json").read_text()))
status = parse_status_document(server.read_blob("status", "status.json").decode())
print(
    f"status blob: code {status['code']}, {status['consistency']}-consistent, "
    f"task {status['task_id']}"
)
failures = 0
for name in json.loads((work / "disks.json").read_text()):
    snapshots = server.list_snapshots("disks", name)
    if len(snapshots) != 1:
        failures += 1
        print(f"{name}: expected one snapshot, found {len(snapshots)}")
        continue
    snapshot = snapshots[0]
    taken = server.read_snapshot("disks", name, snapshot["snapshot"])
    same = taken == server.read_blob("disks", name)
    failures += not same
    print(
        f"{name}: snapshot {snapshot['snapshot']} "
        f"(stamped {snapshot['metadata'].get('appconsistentLevel')}), "
        f"reads back {'identical to' if same else 'DIFFERENT from'} the disk"
    )
events = (work / "app" / "events.log").read_text().splitlines()
print(f"application: {events[-1]} (by the pre- and post-scripts)")
before = int((work / "app" / "count").read_text())
time.sleep(0.5)
after = int((work / "app" / "count").read_text())
print(f"application: still writing ({before} -> {after} records in 0.5 s)")
failures += status["consistency"] != "application" or after <= before
print("PROOF HOLDS" if not failures else f"PROOF FAILED ({failures} problems)")
sys.exit(1 if failures else 0)
