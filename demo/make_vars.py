"""Print the demo's extra vars (JSON): for the snapshot job's playbooks, or for the restore.

Usage:
    make_vars.py snapshot WORK_DIR DEMO_DIR MOUNT_POINT...
        the configure, preflight and snapshot playbooks' vars: the disks are the SAS URIs in
        WORK_DIR/disk<N>.sas (0600 files), the MOUNT_POINTs the filesystems to freeze.
    make_vars.py restore WORK_DIR
        the restore playbook's restore_disks: each disk's one snapshot (through a SAS that reads
        only that snapshot) into the blob that WORK_DIR/disk<N>-restored.sas names.

The configuration goes below WORK_DIR/etc/azure so the demo never touches this machine's
/etc/azure; on a real host the role's default is /etc/azure. The output holds SAS URIs: write it
to a file only the owner can read.
"""

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def disk_sas_files(work: Path) -> list[Path]:
    return sorted(work.glob("disk[0-9].sas"))


def snapshot_vars(work: Path, demo: str, mounts: list[str]) -> dict:
    status_blob = json.loads((work / "status.json").read_text())["status.json"]
    config_dir = f"{work}/etc/azure"
    return {
        "configure_prepost_config_dir": config_dir,
        "configure_prepost_pre_script_src": f"{demo}/pre-script.sh",
        "configure_prepost_pre_script_params": [f"{work}/app"],
        "configure_prepost_post_script_src": f"{demo}/post-script.sh",
        "configure_prepost_post_script_params": [f"{work}/app"],
        "configure_prepost_timeout_seconds": 15,
        "configure_prepost_continue_backup_on_failure": True,
        "snapshot_disks": [path.read_text().strip() for path in disk_sas_files(work)],
        "snapshot_status_blob_uri": status_blob,
        "snapshot_freeze_mounts": mounts,
        "snapshot_config_path": f"{config_dir}/VMSnapshotScriptPluginConfig.json",
        "snapshot_state_dir": f"{work}/state",
        "snapshot_log_dir": f"{work}/log",
        "snapshot_backup_metadata": {"job": "demo"},
        "snapshot_task_id": f"demo-{int(time.time())}",
        "snapshot_required_consistency": "application",
    }


def restore_vars(work: Path) -> dict:
    from harness.azurite import Azurite

    server = Azurite.from_state(json.loads((work / "azurite.json").read_text()))
    disks = []
    for sas_file in disk_sas_files(work):
        container, name = sas_file.read_text().split("?", 1)[0].rsplit("/", 2)[-2:]
        snapshots = server.list_snapshots(container, name)
        if len(snapshots) != 1:
            sys.exit(f"{name}: expected one snapshot, found {len(snapshots)}")
        snapshot = snapshots[0]["snapshot"]
        disks.append(
            {
                # A snapshot SAS (sr=bs): it reads this one snapshot only.
                "snapshot_uri": server.blob_sas(
                    container, name, permissions="r", snapshot=snapshot
                ),
                "destination_uri": (work / f"{sas_file.stem}-restored.sas").read_text().strip(),
            }
        )
    return {"restore_disks": disks, "restore_wait_timeout": 300}


def main() -> None:
    what, work, *rest = sys.argv[1:]
    if what == "snapshot":
        demo, *mounts = rest
        print(json.dumps(snapshot_vars(Path(work), demo, mounts)))
    elif what == "restore" and not rest:
        print(json.dumps(restore_vars(Path(work))))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
