"""The demo's managed-disk side (scripts/demo.sh --managed-disks), on the Resource Manager stand-in.

Azure itself is not reached: tests/harness/armstandin.py serves Resource Manager and the
instance metadata service from the published REST specification, and its managed disks are the
demo's page blobs in Azurite.

Usage:
    managed.py disks WORK_DIR
        register WORK_DIR/disk<N>.sas's page blobs as managed disks; print the snapshot vars
        (managed_disks, the stand-in's endpoints and CA) as JSON.
    managed.py restored WORK_DIR RESULT_JSON
        from the restore playbook's registered results, write WORK_DIR/disk<N>-restored.sas: a
        SAS of the page blob behind each restored managed disk (to attach it).
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness.armstandin import StandinProcess  # noqa: E402
from harness.azurite import Azurite  # noqa: E402


def standin(work: Path) -> StandinProcess:
    return StandinProcess(json.loads((work / "arm.json").read_text()))


def disks(work: Path) -> dict:
    arm = standin(work)
    ids = []
    for sas_file in sorted(work.glob("disk[0-9].sas")):
        container, name = sas_file.read_text().split("?", 1)[0].rsplit("/", 2)[-2:]
        ids.append(arm.add_disk(f"vm-demo-{sas_file.stem}", container=container, blob=name))
    return {
        "managed_disks": [{"id": disk_id, "snapshot_name": "{disk}-{task_id}"} for disk_id in ids],
        "arm_endpoint": arm.arm_endpoint,
        "imds_endpoint": arm.imds_endpoint,
        "ca_path": arm.ca_file,
    }


def restored(work: Path, results: Path) -> None:
    arm = standin(work)
    server = Azurite.from_state(json.loads((work / "azurite.json").read_text()))
    for item in json.loads(results.read_text()):
        backing = arm.backing(item["disk_id"])
        source = item["snapshot_id"].rsplit("/", 1)[-1].split("-")[2]  # vm-demo-disk0-<task>
        target = work / f"{source}-restored.sas"
        target.touch(mode=0o600)
        target.write_text(server.blob_sas(backing["container"], backing["blob"]) + "\n")
        print(f"{item['disk_id'].rsplit('/', 1)[-1]}: created from {item['snapshot_id']}")


def main() -> None:
    what, work, *rest = sys.argv[1:]
    if what == "disks" and not rest:
        print(json.dumps(disks(Path(work))))
    elif what == "restored" and len(rest) == 1:
        restored(Path(work), Path(rest[0]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
