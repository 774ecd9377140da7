#!/usr/bin/python
# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: snapshot_restore
short_description: Restore a disk blob from one of its snapshots
version_added: 0.1.0
description:
  - Copies a blob snapshot (for example one taken by M(appconsistent.vmsnapshot.snapshot)) into a
    destination page blob with the Copy Blob call, through SAS URIs, and waits until the copy is
    done. The destination is a new blob (a new disk to attach) or an existing one - the
    snapshot's own base blob included, which puts the disk back as it was.
  - An existing destination is replaced only with O(overwrite). One that already holds this very
    snapshot and was not written since the copy is left alone (C(changed=false)) unless O(force).
    The service keeps those times to the second, so a write within the second the copy ended
    goes unnoticed; use O(force) after such a write.
  - The snapshot's metadata, with the collection's consistency stamp, comes along to the
    destination and is returned.
  - A copy that does not finish within O(wait_timeout) is aborted and the task fails.
  - Talks only to the blob service; it can run on any host, the controller included. No SAS
    signature appears in the result or in an error message, in any spelling (the service's
    answers are scrubbed of every signature the module was given, by value).
  - Plain C(http://) URIs would send the signature in clear text - they are accepted only to
    this machine (an emulator), or to a host named in the environment variable
    C(APPCONSISTENT_VMSNAPSHOT_HTTP_HOSTS) (comma-separated) of the module's process, for an
    emulator on a test network. A signature that is not clean base64 or given twice is refused.
author:
  - appconsistent.vmsnapshot maintainers (@appconsistent)
extends_documentation_fragment:
  - appconsistent.vmsnapshot.attributes
  - appconsistent.vmsnapshot.attributes.posix
attributes:
  check_mode:
    support: full
    details: Reads the snapshot's and the destination's properties and reports what a real run
      would do (RV(action)); copies nothing.
  diff_mode:
    support: none
options:
  snapshot_uri:
    description:
      - SAS URI that can read the snapshot, with the read (C(r)) permission - best a snapshot SAS
        (C(sr=bs)), which reads that one snapshot and nothing else, with C(snapshot=<time>) in
        its query or given as O(snapshot).
      - A container or account SAS of the base blob with O(snapshot) is passed on as it is; the
        blob service decides whether it may read snapshots (Azurite, for one, refuses it).
    type: str
    required: true
  snapshot:
    description:
      - The snapshot's time (the C(snapshot) of a disk in the result of
        M(appconsistent.vmsnapshot.snapshot)), when O(snapshot_uri) does not carry it; it must
        match the time in O(snapshot_uri) when both are given.
    type: str
  destination_uri:
    description:
      - SAS URI of the blob to restore into, with read (C(r)) and write (C(w)) permissions, or
        read and create (C(c)) for a new blob.
      - A disk still attached to a VM holds a lease on its blob; the service then refuses the copy.
    type: str
    required: true
  overwrite:
    description: Replace the content of an existing destination blob.
    type: bool
    default: false
  force:
    description: Copy again even when the destination already holds this snapshot.
    type: bool
    default: false
  timeout:
    description:
      - Timeout in seconds of each call to the blob service, as an absolute bound - connecting,
        sending and reading the whole answer of one call end within it, however slowly the
        service answers. An answer's body is read up to 64 KiB.
    type: float
    default: 30
  wait_timeout:
    description: How long, in seconds, the whole restore may take before the copy is aborted.
    type: float
    default: 3600
notes:
  - Needs only the Python standard library.
  - To restore a whole VM consistently, restore every disk from the snapshots of the same run.
seealso:
  - module: appconsistent.vmsnapshot.snapshot
"""

EXAMPLES = r"""
- name: Restore the data disk into a new blob, to attach as a new disk
  appconsistent.vmsnapshot.snapshot_restore:
    snapshot_uri: "{{ vault_disk_read_sas_uri }}"
    snapshot: "{{ snap.snapshots[0].snapshot }}"
    destination_uri: "{{ vault_new_disk_sas_uri }}"
  register: restored

- name: Put the (detached) disk back as it was at the snapshot
  appconsistent.vmsnapshot.snapshot_restore:
    snapshot_uri: "{{ vault_snapshot_sas_uri }}"
    destination_uri: "{{ vault_disk_sas_uri }}"
    overwrite: true
  delegate_to: localhost
"""

RETURN = r"""
action:
  description: What was done (in check mode, what would be) - C(create) a new blob, C(overwrite)
    an existing one, or C(none) when the destination already holds the snapshot.
  returned: always
  type: str
  sample: create
snapshot:
  description: The snapshot's time.
  returned: always
  type: str
  sample: "2026-11-23T11:38:39.1670000Z"
source:
  description: The snapshot's URL, without a SAS.
  returned: always
  type: str
destination:
  description: The destination blob's URL, without a SAS.
  returned: always
  type: str
blob_type:
  description: The snapshot's blob type (C(PageBlob) for a disk).
  returned: always
  type: str
content_length:
  description: The snapshot's size in bytes.
  returned: always
  type: int
copy_id:
  description: The service's id of the copy; null in check mode when nothing was copied yet.
  returned: always
  type: str
metadata:
  description: The snapshot's metadata, which the destination now carries too.
  returned: always
  type: dict
consistency:
  description: The consistency stamped on the snapshot by M(appconsistent.vmsnapshot.snapshot)
    (C(application), C(filesystem) or C(crash)), or null for a snapshot taken otherwise.
  returned: always
  type: str
  sample: application
duration_ms:
  description: Milliseconds the restore took.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._redact import (
    scrubbing_module,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._restore import (
    request_from_params,
    restore,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    VmSnapshotError,
    result_fields,
)


def main() -> None:
    module = scrubbing_module(  # everything it prints is scrubbed, its own errors too
        AnsibleModule,
        argument_spec=dict(
            snapshot_uri=dict(type="str", required=True, no_log=True),
            snapshot=dict(type="str"),
            destination_uri=dict(type="str", required=True, no_log=True),
            overwrite=dict(type="bool", default=False),
            force=dict(type="bool", default=False),
            timeout=dict(type="float", default=30.0),
            wait_timeout=dict(type="float", default=3600.0),
        ),
        supports_check_mode=True,
    )
    try:
        request = request_from_params(module.params)
        result = restore(request, check_mode=module.check_mode)
    except VmSnapshotError as exc:
        module.fail_json(msg=exc.message, **result_fields(exc.status))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
