#!/usr/bin/python
# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: prepost_info
short_description: Check the pre/post-script configuration and predict the snapshot's consistency
version_added: 0.1.0
description:
  - Reads C(/etc/azure/VMSnapshotScriptPluginConfig.json), the optional plugin host file
    C(/etc/azure/VMSnapshotPluginHost.conf) and both scripts exactly as a snapshot run checks
    them, and reports the status code a snapshot would hit, the reason, the effective
    configuration (defaults applied, limits enforced) and the consistency the next snapshot would
    get if the scripts succeed.
  - Never runs a script and never changes anything.
  - A broken configuration is a normal result carrying its code (for example 302
    C(FailedPrepostPreScriptNotFound) or 305 C(FailedPrepostPluginConfigParsing)), not a failure.
  - The permission rules are Azure's - configuration and scripts owned by root with no group or
    other bits, the configuration without owner execute, the host file at most group/other
    readable - plus stricter ones - no symbolic link, no setuid/setgid bit, and every directory
    from V(/) down owned by root and not writable by group or other unless it has the sticky bit.
  - Every file must live on a filesystem whose owners and modes the kernel enforces - ext2/3/4,
    xfs, btrfs, f2fs, jfs, reiserfs, bcachefs, zfs, tmpfs, ramfs, overlay, squashfs or erofs.
    On FUSE, network filesystems (NFS, CIFS/SMB, 9p, virtiofs) and filesystems without Unix
    owners (vfat, exfat, ntfs) the owner and mode are made up by a server or mount options, so a
    file there is refused with the permission code (317, 314, 306, 307).
  - A V(..) in a path is resolved by the kernel, directory by directory - V(link/../x) is the
    V(x) beside the link's target - and every string of the configuration must be valid text
    (a lone surrogate such as C(\ud800) is 305).
  - A snapshot run executes the bytes that passed the check, copied into a sealed in-memory file;
    a change to a script after the check does not change what runs (a warning says so).
author:
  - appconsistent.vmsnapshot maintainers (@appconsistent)
extends_documentation_fragment:
  - appconsistent.vmsnapshot.attributes
  - appconsistent.vmsnapshot.attributes.posix
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
options:
  config_path:
    description:
      - The pre/post-script configuration (JSON) to check.
      - Not used when a plugin host file exists; that file lists the configurations.
    type: path
    default: /etc/azure/VMSnapshotScriptPluginConfig.json
  host_config_path:
    description:
      - The plugin host file (INI, section C([pre_post])). Its C(timeoutInSeconds) lowers the
        1800 second cap and its C(pluginConfigPath<i>) entries list the configurations to run,
        in order. C(pluginName<i>) must be C(ScriptRunner); nothing is imported from it.
      - When the file does not exist at the default path, the single O(config_path) is used.
        When another path is given and does not exist, the result is 313
        C(FailedPrepostPluginhostConfigNotFound).
    type: path
    default: /etc/azure/VMSnapshotPluginHost.conf
notes:
  - Numbers in the JSON must be JSON numbers (fractions are truncated with a warning); a quoted
    number, a boolean or null is rejected with 305. Azure rejects a quoted C(timeoutInSeconds)
    with 304 and accepts a quoted C(ScriptsExecutionPollTimeSeconds).
  - Values Azure silently caps or ignores are capped or ignored the same way, with a warning -
    C(timeoutInSeconds) above 1800 (or above the host file's timeout), negative retry counts,
    C(ScriptsExecutionPollTimeSeconds) outside 1-5, unknown keys.
  - C(timeoutInSeconds) defaults to 10 seconds when absent, as in Azure's code (its template
    says 30). C(ScriptsExecutionPollTimeSeconds) is validated for compatibility only - scripts
    are waited on, not polled.
seealso:
  - module: appconsistent.vmsnapshot.snapshot
"""

EXAMPLES = r"""
- name: Check the pre/post-script configuration
  appconsistent.vmsnapshot.prepost_info:
  register: prepost

- name: Fail unless the next snapshot would be application-consistent
  ansible.builtin.assert:
    that: prepost.consistency == 'application'
    fail_msg: "{{ prepost.status_code }} {{ prepost.status_name }}: {{ prepost.message }}"

- name: Check a configuration staged at another path
  appconsistent.vmsnapshot.prepost_info:
    config_path: /srv/staging/VMSnapshotScriptPluginConfig.json
"""

RETURN = r"""
configured:
  description: Whether a pre/post-script configuration exists (false only for 316, the normal
    "not configured" case, which gives file-system-consistent snapshots).
  returned: always
  type: bool
  sample: true
status_code:
  description: The status a snapshot run would report for the checks - 1 when every check
    passed, otherwise the reference's code (302-307, 313, 314, 316, 317).
  returned: always
  type: int
  sample: 302
status_name:
  description: The reference's name of RV(status_code).
  returned: always
  type: str
  sample: FailedPrepostPreScriptNotFound
status_aliases:
  description: Other names of the code, such as the names in Azure's documentation.
  returned: always
  type: list
  elements: str
  sample: [Pre-ScriptNotFound]
message:
  description: What was checked and, on failure, exactly what is wrong - the file, the key, the
    value, the owner or mode found and the one needed.
  returned: always
  type: str
  sample: The pre-script '/opt/pre.sh' has mode 0755; it needs no group or other bits, e.g. 0700.
consistency:
  description:
    - What the next snapshot would get if the scripts succeed - V(application),
      V(filesystem) (not configured, or the checks failed with C(continueBackupOnFailure) true)
      or V(none) (the checks failed and C(continueBackupOnFailure) is false, so no snapshot).
  returned: always
  type: str
  sample: application
config:
  description: The effective configuration of the first plugin under Azure's key names, with
    defaults applied and limits enforced; empty when it could not be read.
  returned: always
  type: dict
  sample:
    pluginName: ScriptRunner
    preScriptLocation: /opt/app/pre.sh
    postScriptLocation: /opt/app/post.sh
    preScriptParams: []
    postScriptParams: []
    preScriptNoOfRetries: 0
    postScriptNoOfRetries: 0
    timeoutInSeconds: 30
    continueBackupOnFailure: true
    fsFreezeEnabled: true
    ScriptsExecutionPollTimeSeconds: 3
    appName: null
plugins:
  description: Every plugin in the order it runs, each with its own result. One entry unless a
    plugin host file lists several.
  returned: always
  type: list
  elements: dict
  contains:
    config_path:
      description: The plugin's configuration file.
      type: str
    status_code:
      description: This plugin's status.
      type: int
    status_name:
      description: The name of this plugin's status.
      type: str
    message:
      description: This plugin's result.
      type: str
    config:
      description: This plugin's effective configuration, as RV(config).
      type: dict
"""


from ansible.module_utils.basic import AnsibleModule

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._consistency import (
    predicted_consistency,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._prepost import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_HOST_CONFIG_PATH,
    precheck,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._redact import (
    scrubbing_module,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    describe,
    result_fields,
)


def main() -> None:
    module = scrubbing_module(  # everything it prints is scrubbed, its own errors too
        AnsibleModule,
        argument_spec=dict(
            config_path=dict(type="path", default=DEFAULT_CONFIG_PATH),
            host_config_path=dict(type="path", default=DEFAULT_HOST_CONFIG_PATH),
        ),
        supports_check_mode=True,
        # No syslog line of the arguments: Ansible's would fail with a traceback on a string
        # that is valid JSON but not text (a lone surrogate), before our checks answer 11.
        no_log=True,
    )
    try:
        with precheck(module.params["config_path"], module.params["host_config_path"]) as check:
            plugins = [plugin.as_dict() for plugin in check.plugins]
    except Exception as exc:  # the last resort: a code and a sentence, never a traceback
        module.fail_json(
            msg=f"The check failed unexpectedly ({type(exc).__name__}: {str(exc)!a}).",
            **result_fields(Status.error),
        )
    for warning in check.warnings:
        module.warn(warning)
    module.exit_json(
        changed=False,
        configured=check.configured,
        **result_fields(check.status),
        status_aliases=list(describe(check.status).aliases),
        message=check.message,
        consistency=predicted_consistency(check),
        config=plugins[0]["config"] if plugins else {},
        plugins=plugins,
    )


if __name__ == "__main__":
    main()
