#!/usr/bin/python
# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: snapshot
short_description: Take an application-consistent snapshot of this host's disks
version_added: 0.1.0
description:
  - Runs the snapshot core of Azure Backup's VMSnapshot Linux extension on the host, in one
    process - validate, pre-script, freeze the filesystems, snapshot every disk blob in parallel,
    thaw, post-script, report.
  - Pre- and post-scripts come from C(/etc/azure/VMSnapshotScriptPluginConfig.json) exactly as
    the extension reads it (see M(appconsistent.vmsnapshot.prepost_info) to check it read-only).
  - A guardian process thaws every filesystem at O(max_freeze_seconds) or the moment this
    module's process dies, even by SIGKILL; the result says when a thaw was forced.
  - Nothing is written to disk and nothing is imported while the filesystems are frozen; the
    connections to every disk blob are opened and verified before the pre-script runs.
  - Writes the status document in the extension's JSON shape to a local file and, when given,
    to O(status_blob_uri); the run log goes to C(extension.log) in O(log_dir) and, when given,
    to O(logs_blob_uri). No SAS signature appears in any of them.
  - An inconsistent or failed snapshot is a normal result carrying its code; the module fails
    only on bad input, a busy host lock, or an unexpected error.
author:
  - appconsistent.vmsnapshot maintainers (@appconsistent)
attributes:
  check_mode:
    support: full
    details: Runs the prechecks (configuration, scripts, connections to every disk) and reports
      what a real run would get; runs no script, freezes nothing, takes no snapshot.
  diff_mode:
    support: none
extends_documentation_fragment:
  - appconsistent.vmsnapshot.attributes
  - appconsistent.vmsnapshot.attributes.posix
  - appconsistent.vmsnapshot.azure_arm
options:
  managed_disks:
    description:
      - Azure managed disks to snapshot, beside or instead of O(disks). Inside the frozen window
        every disk gets an incremental snapshot (C(Microsoft.Compute/snapshots),
        C(createOption=Copy), C(incremental=true)) through Azure Resource Manager, in parallel.
      - The freeze holds until Resource Manager accepted each snapshot, which fixes its point in
        time; the background copy and the operation's end are followed after the thaw (see
        C(docs/managed-disks.md), which cites Microsoft's documentation for it).
      - "Least privilege: C(Microsoft.Compute/disks/read) on the disks and
        C(Microsoft.Compute/snapshots/read) and C(Microsoft.Compute/snapshots/write) on the
        snapshots' resource group, for the VM's managed identity or the O(access_token)'s
        principal (a custom role; or the built-in Disk Backup Reader on the disks and Disk
        Snapshot Contributor on the resource group)."
      - The token (the VM's managed identity from IMDS, or O(access_token)) and a connection
        are ready before the pre-script; each disk is read once then (its location).
      - Each snapshot carries O(backup_metadata) and the consistency stamp
        (C(appconsistentLevel), C(appconsistentHost)) as tags.
    type: list
    elements: dict
    suboptions:
      id:
        description: The disk's resource ID,
          C(/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.Compute/disks/<name>).
        type: str
        required: true
      snapshot_resource_group:
        description: Where the snapshot goes (same subscription); the disk's resource group when
          not given.
        type: str
      snapshot_name:
        description:
          - The snapshot's name; C({disk}), C({time}) (the run's start, UTC,
            C(20261201T020000Z)) and C({task_id}) (O(task_id), else the time) are replaced.
        type: str
        default: "{disk}-{time}"
      tags:
        description: More tags for the snapshot.
        type: dict
  disks:
    description:
      - Blob SAS URIs, one per disk, each allowing read and write on its page blob.
      - A list, one comma-separated string, or a JSON list in a string (what an AWX survey or a
        credential injector delivers); in every shape the value is masked wherever Ansible
        echoes the module's arguments, C(-vvv) included.
      - Mutually exclusive with O(settings) and O(protected_settings).
    type: raw
  settings:
    description:
      - The extension's public settings as Azure passes them - C(taskId),
        C(commandToExecute), C(commandStartTimeUTCTicks), C(locale), C(vmType), C(objectStr),
        C(logsBlobUri), C(statusBlobUri), C(customSettings).
      - Not logged, since the blob URIs in it carry SAS signatures.
    type: dict
  protected_settings:
    description:
      - The extension's protected settings, decrypted - C(objectStr) is base64 JSON holding
        C(blobSASUri), the list of disk SAS URIs; C(logsBlobUri) and C(statusBlobUri) may be
        given here too.
    type: dict
  config_path:
    description: The script plugin configuration.
    type: path
    default: /etc/azure/VMSnapshotScriptPluginConfig.json
  host_config_path:
    description: The optional plugin host file listing several script plugin configurations.
    type: path
    default: /etc/azure/VMSnapshotPluginHost.conf
  status_blob_uri:
    description: SAS URI of a block blob that receives the status document.
    type: str
  logs_blob_uri:
    description: SAS URI of a block blob that receives the run log.
    type: str
  task_id:
    description:
      - Identifies the backup task; a task already done on this host is reported with
        C(SuccessAlreadyProcessedInput) (code 3) and not done twice.
      - Overrides C(taskId) from O(settings).
    type: str
  backup_metadata:
    description:
      - Metadata set on every snapshot, beside the collection's own consistency stamp
        (C(appconsistentLevel), C(appconsistentHost)).
    type: dict
    default: {}
  freeze_mounts:
    description:
      - When given, exactly these mount points are frozen (each must be an ext3, ext4, xfs or
        btrfs mount point, not a bind mount and not covered by another mount).
      - When not given, every ext3, ext4, xfs and btrfs filesystem is frozen once, children
        before parents and C(/) last; unlike the extension, filesystems on loop devices are
        included.
    type: list
    elements: path
  mounts_to_skip:
    description:
      - Mount points never frozen; skipping one mount point of a filesystem skips that whole
        filesystem. Unlike the extension, C(/) may be skipped.
    type: list
    elements: path
    default: []
  max_freeze_seconds:
    description:
      - The longest a filesystem may stay frozen; the guardian thaws at this deadline.
      - It bounds the application's quiesced time too. From the end of the pre-script, the flush
        of dirty data before the freeze (at most half of this), the freeze and the snapshot
        calls all end within this many seconds, and the post-script runs next.
      - A flush that needs longer (a disk slower than the application's writers, or that much
        dirty data) refuses the freeze (122) instead of holding the application. The kernel
        goes on writing that data back in the background, and the module returns when it is
        done.
      - From 1 to 600; anything else is refused (11) before anything runs.
    type: int
    default: 60
  expedite_freeze:
    description:
      - Write C(1) to C(/sys/kernel/rcu_expedited) right before the first FIFREEZE and put the
        earlier value back as soon as the last FIFREEZE returns (the deputy process, or a
        systemd timer, puts it back if the run dies in between). A cold FIFREEZE then ends RCU
        grace periods with inter-processor interrupts instead of waiting for them, which
        measured tens of milliseconds less frozen window per run.
      - What it does to the machine, for those milliseconds only, is that every CPU takes a few
        more interrupts; the kernel runs this way for its whole boot. It changes nothing when
        C(/sys/kernel/rcu_normal) is C(1), when C(/sys) is read-only, when the kernel lacks
        the file, or when the value is already C(1); the freeze then runs as without it, and
        C(freeze_expedite_note) says why.
      - A value that another program changes while the run holds it is left as that program
        set it.
    type: bool
    default: true
  snapshot_timeout:
    description:
      - Timeout in seconds of one snapshot call; never more than half the freeze deadline.
      - A finite number above 0 and at most 600; anything else is refused (11) before anything
        runs.
    type: float
    default: 10
  log_dir:
    description: Where C(extension.log) is kept.
    type: path
    default: /var/log/azure/Microsoft.Azure.RecoveryServices.VMSnapshotLinux
  state_dir:
    description: Where the host lock, the last task id and the local status file are kept.
    type: path
    default: /var/lib/waagent/Microsoft.Azure.RecoveryServices.VMSnapshotLinux
notes:
  - Needs root and only the Python standard library on the managed host.
seealso:
  - module: appconsistent.vmsnapshot.prepost_info
"""

EXAMPLES = r"""
- name: Snapshot both data disks, application-consistent when the scripts succeed
  appconsistent.vmsnapshot.snapshot:
    disks: "{{ vault_disk_sas_uris }}"
    status_blob_uri: "{{ vault_status_sas_uri }}"
    backup_metadata:
      job: nightly
  register: snap

- name: Take exactly what Azure Backup would send
  appconsistent.vmsnapshot.snapshot:
    settings: "{{ extension_public_settings }}"
    protected_settings: "{{ extension_protected_settings }}"

- name: Freeze only the database filesystem
  appconsistent.vmsnapshot.snapshot:
    disks: "{{ vault_disk_sas_uris }}"
    freeze_mounts: [/var/lib/postgresql]
    max_freeze_seconds: 20
"""

RETURN = r"""
consistency:
  description: What the snapshot is - C(application), C(filesystem), C(crash) or C(none).
  returned: always
  type: str
  sample: application
status_code:
  description: The extension's status code (0 application-consistent, 1 success, 300-318 scripts,
    121-123 freeze, 76/85/173/761 snapshot, 402 too late, ...).
  returned: always
  type: int
  sample: 0
status_name:
  description: The extension's name of RV(status_code).
  returned: always
  type: str
  sample: success_appconsistent
message:
  description: What happened, in a sentence.
  returned: always
  type: str
snapshots:
  description: One entry per disk, in the order of the disks.
  returned: always
  type: list
  elements: dict
  contains:
    blob_url:
      description: The disk blob's URL without its SAS query.
      type: str
    snapshot:
      description: The snapshot timestamp, or null when it failed.
      type: str
    ok:
      description: Whether this disk's snapshot was taken.
      type: bool
    error:
      description: Why it failed (redacted).
      type: str
frozen_mounts:
  description: The mount points that were frozen, in freeze order.
  returned: always
  type: list
  elements: str
thaw_forced:
  description:
    - True whenever the thaw was not the guardian's answer to this run's thaw request - the
      deadline, a process of the run that died or stopped, or a frozen window longer than
      O(max_freeze_seconds). The run then fails (C(status_code) 2).
  returned: always
  type: bool
forced_reason:
  description: Why the thaw was forced (C(deadline), C(guardian died), C(guardian stopped
    answering), C(parent died), C(window over the deadline)), or null.
  returned: always
  type: str
freeze_expedited:
  description: True when C(/sys/kernel/rcu_expedited) was 1 during the FIFREEZE calls.
  returned: when filesystems were frozen
  type: bool
freeze_expedite_note:
  description: Why the freeze was not expedited (option off, C(rcu_normal) is 1, C(/sys)
    read-only, no such file, already 1), or null.
  returned: when filesystems were frozen
  type: str
thaw_backstop:
  description:
    - What thaws if the module, the guardian and its deputy are all killed while frozen -
      C(systemd-timer) (a transient timer armed before the freeze, firing shortly after the
      deadline and doing nothing once the run thawed), or C(deputy) when the host does not run
      systemd (then nothing outside the run's processes does).
  returned: when filesystems were frozen
  type: str
  sample: systemd-timer
thaw_backstop_note:
  description: Why no systemd timer was armed, or null.
  returned: when filesystems were frozen
  type: str
timings:
  description: Milliseconds spent in each phase - C(connect_ms), C(pre_ms), C(sync_ms) (syncfs of
    every mount before the freeze, outside the window), C(freeze_ms),
    C(snapshot_ms), C(thaw_ms), C(post_ms), C(frozen_window_ms); a phase that did not run is absent.
  returned: always
  type: dict
scripts:
  description:
    - Per phase (C(pre), C(post)), each script's exit code, attempts, duration and the tail of
      its output.
    - C(recovered_post) is present when an earlier run on this host died after its pre-script
      started; its post-scripts were run first, and a warning says so.
  returned: always
  type: dict
status_file:
  description: The local status document.
  returned: when not in check mode
  type: str
"""

import os
import platform
import signal
import sys

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._managed_disk import (
    ARM_ARGUMENT_SPEC,
    with_managed_disks,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._prepost_config import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_HOST_CONFIG_PATH,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._redact import (
    scrubbing_module,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._sas import redact
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._snapshot_options import (
    request_from_params,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._snapshot_run import (
    DEFAULT_LOG_DIR,
    DEFAULT_MAX_FREEZE_SECONDS,
    DEFAULT_SNAPSHOT_TIMEOUT,
    DEFAULT_STATE_DIR,
    RunInterrupted,
    run_snapshot,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
    result_fields,
)

# Every signal whose default action ends the process (a closed terminal or ssh session sends
# SIGHUP, Ctrl-\ SIGQUIT): ended where it stands, the run would leave the post-script undone.
_STOPPING_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
)


def _interrupt_once(signum: int, _frame: object) -> None:
    """A stopping signal: the run stops where it is and finishes (thaw, post-scripts, status).
    Later signals are ignored, so that they cannot cut that cleanup short."""
    for each in _STOPPING_SIGNALS:
        signal.signal(each, signal.SIG_IGN)
    raise RunInterrupted(signal.Signals(signum).name)


def main() -> None:
    module = scrubbing_module(  # everything it prints is scrubbed, its own errors too
        AnsibleModule,
        argument_spec=dict(
            # raw: parsed by _snapshot_options, so that no_log masks the value as it came
            disks=dict(type="raw", no_log=True),
            settings=dict(type="dict", no_log=True),
            protected_settings=dict(type="dict", no_log=True),
            config_path=dict(type="path", default=DEFAULT_CONFIG_PATH),
            host_config_path=dict(type="path", default=DEFAULT_HOST_CONFIG_PATH),
            status_blob_uri=dict(type="str", no_log=True),
            logs_blob_uri=dict(type="str", no_log=True),
            task_id=dict(type="str"),
            managed_disks=dict(
                type="list",
                elements="dict",
                options=dict(
                    id=dict(type="str", required=True),
                    snapshot_resource_group=dict(type="str"),
                    snapshot_name=dict(type="str", default="{disk}-{time}"),
                    tags=dict(type="dict"),
                ),
            ),
            **ARM_ARGUMENT_SPEC,
            backup_metadata=dict(type="dict", default={}),
            freeze_mounts=dict(type="list", elements="path"),
            mounts_to_skip=dict(type="list", elements="path", default=[]),
            max_freeze_seconds=dict(type="int", default=DEFAULT_MAX_FREEZE_SECONDS),
            snapshot_timeout=dict(type="float", default=DEFAULT_SNAPSHOT_TIMEOUT),
            expedite_freeze=dict(type="bool", default=True),
            log_dir=dict(type="path", default=DEFAULT_LOG_DIR),
            state_dir=dict(type="path", default=DEFAULT_STATE_DIR),
        ),
        mutually_exclusive=[("disks", "settings"), ("disks", "protected_settings")],
        required_one_of=[("disks", "settings", "protected_settings", "managed_disks")],
        supports_check_mode=True,
        # No syslog line of the arguments: Ansible's would fail with a traceback on a string
        # that is valid JSON but not text (a lone surrogate), before our checks answer 11.
        no_log=True,
    )
    if sys.version_info < (3, 9) or os.geteuid() != 0:
        module.fail_json(
            msg=f"The snapshot module needs root and Python 3.9 or later; it runs as uid "
            f"{os.geteuid()} under Python {platform.python_version()} (use become, or set "
            "ansible_python_interpreter).",
            **result_fields(Status.error),
        )
    try:
        request = with_managed_disks(request_from_params(module.params), module.params)
        for each in _STOPPING_SIGNALS:
            signal.signal(each, _interrupt_once)
        result = run_snapshot(request, check_mode=module.check_mode)
    except VmSnapshotError as exc:
        module.fail_json(msg=exc.message, **result_fields(exc.status))
    except RunInterrupted as exc:  # before the run could take it over: nothing ran
        module.fail_json(
            msg=f"The run was interrupted by {exc.signal_name}; it did nothing.",
            **result_fields(Status.error),
        )
    except Exception as exc:  # the last resort: a code and a sentence, never a traceback
        module.fail_json(
            msg=f"The snapshot run failed unexpectedly: {redact(str(exc))}",
            **result_fields(Status.error),
        )
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
