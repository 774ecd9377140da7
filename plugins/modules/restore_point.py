#!/usr/bin/python
# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: restore_point
short_description: Create an Azure VM restore point and report the consistency Azure achieved
version_added: 0.2.0
description:
  - Creates an Azure VM restore point
    (C(Microsoft.Compute/restorePointCollections/{collection}/restorePoints/{name})) for one VM,
    creating the restore point collection first when it is missing, waits for it within
    O(timeout) and returns the consistency Azure achieved for the restore point and each
    disk, with the restore point's ID.
  - Application consistency (the default) is done by Azure with the VM's own VMSnapshot Linux
    extension, which runs the pre/post scripts the C(appconsistent.vmsnapshot.configure_prepost)
    role deploys. When they fail, Azure may fall back to file-system or crash consistency; this
    module reports what Azure says, the C(restore_point) playbook adds the reason from the VM.
  - Runs on the controller (or any host with the Azure SDK); talks only to Azure Resource
    Manager, with C(azure-mgmt-compute) and C(azure-identity).
  - A rerun with the same O(name) changes nothing and returns the existing restore point.
  - With O(keep), older restore points of the collection are deleted, newest first kept, and only
    after the new one succeeded.
  - Throttling (HTTP 429) is retried after the time Azure asks for (C(Retry-After)), a few times.
  - No secret (client secret, token) appears in the result or in an error message.
author:
  - appconsistent.vmsnapshot maintainers (@appconsistent)
requirements:
  - azure-mgmt-compute
  - azure-identity
extends_documentation_fragment:
  - appconsistent.vmsnapshot.attributes
  - appconsistent.vmsnapshot.attributes.posix
attributes:
  check_mode:
    support: full
    details: Reads the VM, the collection and the restore point, and reports whether one would
      be created (C(changed)); creates and deletes nothing.
  diff_mode:
    support: none
options:
  resource_group:
    description: The VM's resource group (the collection is created in it too).
    type: str
    required: true
  vm_name:
    description: The VM's name.
    type: str
    required: true
  name:
    description:
      - The restore point's name, unique in its collection; e.g. one per scheduled run.
    type: str
    required: true
  collection:
    description: The restore point collection; default C(<vm_name>-restore-points).
    type: str
  consistency_mode:
    description:
      - V(application) asks Azure for an application-consistent restore point (it falls back
        when the VM's scripts fail); V(crash) asks for crash consistency only (no scripts, no
        freeze in the VM).
    type: str
    choices: [application, crash]
    default: application
  exclude_disks:
    description: Managed disks left out of the restore point, by name or resource ID.
    type: list
    elements: str
    default: []
  timeout:
    description:
      - Seconds to wait for the restore point. When it is not done by then the task fails with
        RV(timed_out); Azure goes on, and a rerun with the same O(name) reads its result.
    type: float
    default: 600
  keep:
    description:
      - Keep the newest O(keep) restore points of the collection and delete the older ones, only
        when the new one succeeded. V(0) keeps all.
    type: int
    default: 0
  subscription_id:
    description: The subscription; default from the environment variable C(AZURE_SUBSCRIPTION_ID).
    type: str
  tenant:
    description:
      - The service principal's tenant; default from C(AZURE_TENANT) (what AWX's Microsoft Azure
        Resource Manager credential sets).
    type: str
  client_id:
    description: The service principal's application ID; default from C(AZURE_CLIENT_ID).
    type: str
  secret:
    description: The service principal's secret; default from C(AZURE_SECRET). Never logged.
    type: str
  access_token:
    description:
      - A Resource Manager access token instead of a service principal (for example from
        C(az account get-access-token)). Never logged.
    type: str
  arm_endpoint:
    description:
      - The Resource Manager endpoint (HTTPS only). Change it for a sovereign cloud or a test
        stand-in.
    type: str
    default: https://management.azure.com
  authority_host:
    description: The Microsoft Entra ID authority that issues the service principal's token.
    type: str
    default: https://login.microsoftonline.com
  ca_path:
    description: A CA bundle to check the endpoints' certificates with, instead of the system's.
    type: path
notes:
  - The identity needs, on the VM's resource group, C(Microsoft.Compute/virtualMachines/read),
    C(Microsoft.Compute/restorePointCollections/read), C(.../write),
    C(.../restorePoints/read), C(.../restorePoints/write) and, with O(keep),
    C(.../restorePoints/delete). See the collection's C(docs/restore-points.md) for a custom role.
  - C(AZURE_AD_USER)/C(AZURE_PASSWORD) (user name and password) are not supported; use a service
    principal.
seealso:
  - module: appconsistent.vmsnapshot.prepost_info
"""

EXAMPLES = r"""
- name: Create tonight's application-consistent restore point, keep the newest 7
  appconsistent.vmsnapshot.restore_point:
    resource_group: rg-databases
    vm_name: db01
    name: "nightly-{{ now(utc=true, fmt='%Y%m%dT%H%M') }}"
    keep: 7
  delegate_to: localhost
  register: rp

- name: A crash-consistent restore point without the scratch disk
  appconsistent.vmsnapshot.restore_point:
    resource_group: rg-databases
    vm_name: db01
    name: before-upgrade
    consistency_mode: crash
    exclude_disks: [db01-scratch]
"""

RETURN = r"""
restore_point:
  description: The restore point (null in check mode when it would be created).
  returned: success, or failure once Azure answered
  type: dict
  contains:
    id:
      description: The restore point's resource ID.
      type: str
    name:
      description: Its name.
      type: str
    provisioning_state:
      description: Azure's C(provisioningState) (C(Succeeded), C(Failed), ...).
      type: str
    consistency_mode:
      description: Azure's C(consistencyMode) as it answered it.
      type: str
      sample: FileSystemConsistent
    consistency:
      description: The consistency achieved - V(application), V(filesystem), V(crash) or V(none)
        (not succeeded).
      type: str
    time_created:
      description: When Azure took it (ISO 8601).
      type: str
    disks:
      description:
        - Every managed disk of the VM. Azure reports one consistency per restore point, taken
          across all included disks at once, so every included disk has that consistency;
          excluded ones say V(excluded).
      type: list
      elements: dict
  sample:
    id: /subscriptions/0000/.../restorePointCollections/db01-restore-points/restorePoints/nightly
    consistency: application
    disks:
      - id: /subscriptions/0000/resourceGroups/rg/providers/Microsoft.Compute/disks/db01-os
        consistency: application
        excluded: false
collection_id:
  description: The restore point collection's ID (null in check mode when it would be created).
  returned: always
  type: str
created_collection:
  description: Whether the collection was (or, in check mode, would be) created.
  returned: always
  type: bool
requested_consistency:
  description: O(consistency_mode).
  returned: always
  type: str
timed_out:
  description: Whether the restore point was not done within O(timeout).
  returned: always
  type: bool
deleted:
  description: IDs of the older restore points deleted by O(keep).
  returned: always
  type: list
  elements: str
wait_seconds:
  description: How long the restore point took (or was waited for).
  returned: when one was created
  type: float
azure_code:
  description: Azure's error code when Azure refused or failed the operation.
  returned: failure
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import (
    _restore_point,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._redact import (
    scrubbing_module,
)

# AWX's "Microsoft Azure Resource Manager" credential injects these (as azure.azcollection reads).
ENVIRONMENT = {
    "subscription_id": "AZURE_SUBSCRIPTION_ID",
    "tenant": "AZURE_TENANT",
    "client_id": "AZURE_CLIENT_ID",
    "secret": "AZURE_SECRET",
}


def main() -> None:
    module = scrubbing_module(  # everything it prints is scrubbed, its own errors too
        AnsibleModule,
        argument_spec=dict(
            resource_group=dict(type="str", required=True),
            vm_name=dict(type="str", required=True),
            name=dict(type="str", required=True),
            collection=dict(type="str"),
            consistency_mode=dict(
                type="str", choices=["application", "crash"], default="application"
            ),
            exclude_disks=dict(type="list", elements="str", default=[]),
            timeout=dict(type="float", default=600.0),
            keep=dict(type="int", default=0),
            subscription_id=dict(type="str"),
            tenant=dict(type="str"),
            client_id=dict(type="str"),
            secret=dict(type="str", no_log=True),
            access_token=dict(type="str", no_log=True),
            arm_endpoint=dict(type="str", default=_restore_point.ARM_ENDPOINT),
            authority_host=dict(type="str", default=_restore_point.AUTHORITY_HOST),
            ca_path=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        _restore_point.sdk()
    except ImportError as exc:
        module.fail_json(
            msg=missing_required_lib("azure-mgmt-compute and azure-identity"), exception=str(exc)
        )
    for option, variable in ENVIRONMENT.items():
        if not params[option]:
            params[option] = os.environ.get(variable) or None
    if not params["subscription_id"]:
        module.fail_json(msg="No subscription: give subscription_id or set AZURE_SUBSCRIPTION_ID.")
    if params["timeout"] <= 0 or params["keep"] < 0:
        module.fail_json(msg="timeout must be above 0 and keep 0 or more.")
    creds = _restore_point.Credentials(
        subscription_id=params["subscription_id"],
        tenant=params["tenant"],
        client_id=params["client_id"],
        secret=params["secret"],
        access_token=params["access_token"],
        authority_host=params["authority_host"],
    )
    request = _restore_point.Request(
        resource_group=params["resource_group"],
        vm_name=params["vm_name"],
        name=params["name"],
        collection=params["collection"] or f"{params['vm_name']}-restore-points",
        consistency_mode=params["consistency_mode"],
        exclude_disks=params["exclude_disks"],
        timeout=params["timeout"],
        keep=params["keep"],
        arm_endpoint=params["arm_endpoint"].rstrip("/"),
        ca_path=params["ca_path"],
    )
    try:
        arm = _restore_point.client(creds, request)
        result = _restore_point.run(arm, request, check_mode=module.check_mode)
    except _restore_point.RestorePointError as exc:
        module.fail_json(msg=str(exc), **exc.facts)
    point = result.get("restore_point") or {}
    if point.get("provisioning_state") not in (None, "Succeeded"):
        module.fail_json(
            msg=f"Restore point {request.name!r} of VM {request.vm_name!r} is "
            f"{point.get('provisioning_state')}.",
            **result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
