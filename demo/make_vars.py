"""Print the demo's extra vars (JSON) for the configure, preflight and snapshot playbooks.

Usage: make_vars.py WORK_DIR DEMO_DIR MOUNT_POINT...
The configuration goes below WORK_DIR/etc/azure so the demo never touches this machine's
/etc/azure; on a real host the role's default is /etc/azure.
"""

import json
import sys
import time
from pathlib import Path

work, demo, *mounts = sys.argv[1:]
disks = json.loads(Path(f"{work}/disks.json").read_text())
status_blob = json.loads(Path(f"{work}/status.json").read_text())["status.json"]
config_dir = f"{work}/etc/azure"
print(
    json.dumps(
        {
            "configure_prepost_config_dir": config_dir,
            "configure_prepost_pre_script_src": f"{demo}/pre-script.sh",
            "configure_prepost_pre_script_params": [f"{work}/app"],
            "configure_prepost_post_script_src": f"{demo}/post-script.sh",
            "configure_prepost_post_script_params": [f"{work}/app"],
            "configure_prepost_timeout_seconds": 15,
            "configure_prepost_continue_backup_on_failure": True,
            "snapshot_disks": list(disks.values()),
            "snapshot_status_blob_uri": status_blob,
            "snapshot_freeze_mounts": mounts,
            "snapshot_config_path": f"{config_dir}/VMSnapshotScriptPluginConfig.json",
            "snapshot_state_dir": f"{work}/state",
            "snapshot_log_dir": f"{work}/log",
            "snapshot_backup_metadata": {"job": "demo"},
            "snapshot_task_id": f"demo-{int(time.time())}",
            "snapshot_required_consistency": "application",
        }
    )
)
