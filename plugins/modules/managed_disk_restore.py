#!/usr/bin/python
# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: managed_disk_restore
short_description: Create a managed disk from a snapshot
version_added: 0.2.0
description:
  - Creates a new Azure managed disk from a snapshot (for example an incremental snapshot
    taken by M(appconsistent.vmsnapshot.snapshot) with its C(managed_disks) option),
    through the Azure Resource Manager REST API (C(Disks - Create Or Update) with
    C(creationData.createOption=Copy) and the snapshot's ID as C(sourceResourceId)), and waits
    until Azure reports the disk created.
  - A rerun changes nothing - a disk of that name whose source is this snapshot is left alone
    (C(changed=false)). A disk of that name made from anything else is an error; nothing is ever
    overwritten.
  - The new disk carries the snapshot's tags (the consistency stamp among them) and O(tags).
  - Attaching the disk to a VM is a separate step (for example
    C(azure.azcollection.azure_rm_manageddisk) with C(managed_by)).
  - Talks only to Resource Manager (and, for the managed identity, to the instance metadata
    service); it can run on any host with an identity or a token. No token appears in the
    result or in an error message.
author:
  - appconsistent.vmsnapshot maintainers (@appconsistent)
extends_documentation_fragment:
  - appconsistent.vmsnapshot.attributes
  - appconsistent.vmsnapshot.attributes.posix
  - appconsistent.vmsnapshot.azure_arm
attributes:
  check_mode:
    support: full
    details: Reads the snapshot and the target disk and reports what a real run would do
      (RV(action)); creates nothing.
  diff_mode:
    support: none
options:
  snapshot_id:
    description: The snapshot's resource ID (the C(snapshot_id) of a disk in the result of
      M(appconsistent.vmsnapshot.snapshot)).
    type: str
    required: true
  name:
    description: The new disk's name.
    type: str
    required: true
  resource_group:
    description: The new disk's resource group (in the snapshot's subscription); the
      snapshot's resource group when not given.
    type: str
  location:
    description: The new disk's region; the snapshot's when not given (Azure requires the same).
    type: str
  sku:
    description: The disk's storage type, for example C(Premium_LRS); Azure's default when not
      given.
    type: str
  tags:
    description: Tags to add to those the snapshot carries.
    type: dict
  wait:
    description: Wait until Azure reports the disk created.
    type: bool
    default: true
  timeout:
    description: Timeout in seconds of each call to Resource Manager.
    type: float
    default: 30
  wait_timeout:
    description: How long, in seconds, the whole restore may take.
    type: float
    default: 3600
notes:
  - "Least privilege: a role on the target resource group with C(Microsoft.Compute/disks/read),
    C(Microsoft.Compute/disks/write) and C(Microsoft.Compute/snapshots/read) on the snapshot's
    scope (see the collection's README for a custom role definition)."
  - Needs only the Python standard library.
  - To restore a whole VM consistently, restore every disk from the snapshots of the same run.
"""

EXAMPLES = r"""
- name: Restore the data disk from last night's application-consistent snapshot
  appconsistent.vmsnapshot.managed_disk_restore:
    snapshot_id: "{{ run.snapshots[0].snapshot_id }}"
    name: data-restored
    tags:
      restoredBy: ansible

- name: Check only, with a token from an AWX credential
  vars:
    snapshot_prefix: /subscriptions/s1/resourceGroups/rg-bak/providers/Microsoft.Compute/snapshots
  appconsistent.vmsnapshot.managed_disk_restore:
    snapshot_id: "{{ snapshot_prefix }}/data-20261201T020000Z"
    name: data-restored
    resource_group: rg-restore
    access_token: "{{ arm_token }}"
  check_mode: true
  delegate_to: localhost
"""

RETURN = r"""
disk_id:
  description: The new (or already restored) disk's resource ID.
  returned: always
  type: str
snapshot_id:
  description: The snapshot it was made from.
  returned: always
  type: str
action:
  description: C(create) (or would create, in check mode) or C(none) (the disk exists with
    this source).
  returned: always
  type: str
provisioning_state:
  description: Azure's provisioning state of the disk; null in check mode.
  returned: always
  type: str
location:
  description: The disk's region.
  returned: always
  type: str
consistency:
  description: The consistency stamped on the snapshot (C(application), C(filesystem),
    C(crash)), or null for a snapshot taken otherwise.
  returned: always
  type: str
tags:
  description: The snapshot's tags.
  returned: always
  type: dict
duration_ms:
  description: Milliseconds the creation took.
  returned: when a disk was created
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._managed_disk import (
    ARM_ARGUMENT_SPEC,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._managed_restore import (
    request_from_params,
    restore,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._redact import (
    scrub,
    scrubbing_module,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
    result_fields,
)


def main() -> None:
    module = scrubbing_module(  # everything it prints is scrubbed, its own errors too
        AnsibleModule,
        argument_spec=dict(
            snapshot_id=dict(type="str", required=True),
            name=dict(type="str", required=True),
            resource_group=dict(type="str"),
            location=dict(type="str"),
            sku=dict(type="str"),
            tags=dict(type="dict"),
            wait=dict(type="bool", default=True),
            timeout=dict(type="float", default=30.0),
            wait_timeout=dict(type="float", default=3600.0),
            **ARM_ARGUMENT_SPEC,
        ),
        supports_check_mode=True,
    )
    try:
        request = request_from_params(module.params)
        result = restore(request, check_mode=module.check_mode)
    except VmSnapshotError as exc:
        module.fail_json(msg=exc.message, **result_fields(exc.status))
    except Exception as exc:  # the last resort: a code and a sentence, never a traceback
        module.fail_json(
            msg=f"The restore failed unexpectedly: {scrub(str(exc))}",
            **result_fields(Status.error),
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
