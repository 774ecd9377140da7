#!/usr/bin/python
# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: prepost
short_description: Enforce the whole pre/post-script configuration of a host in one task
version_added: 0.2.0
description:
  - Takes the host's whole desired state - the rendered C(VMSnapshotScriptPluginConfig.json)
    files, the optional C(VMSnapshotPluginHost.conf), every script and the files the scripts
    use - and in one run on the host validates all of it, compares it with the host and writes
    only what differs.
  - Nothing is written when any input is wrong (a mode that leaves a file or the directory
    writable by group or other, a configuration the snapshot would reject with 305, bad base64,
    a relative path, the same path twice) or when a path to write is a symbolic link.
  - Files are written atomically (a temp file in the same directory, fsync, rename) through
    directory descriptors opened one level at a time from V(/) with C(O_NOFOLLOW), owned by
    root, configuration files mode 0600 and scripts and support files with their mode.
  - Missing directories are created, including script and support-file directories outside
    O(config_dir), owned by root and mode 0755 (O(config_dir) gets O(config_dir_mode)).
  - Then answers what M(appconsistent.vmsnapshot.prepost_info) answers, with the same engine -
    would the next snapshot be application-consistent, and if not why not - and whether
    O(required_consistency) is met.
  - The M(appconsistent.vmsnapshot.configure_prepost) role calls it once per host.
author:
  - appconsistent.vmsnapshot maintainers (@appconsistent)
extends_documentation_fragment:
  - appconsistent.vmsnapshot.attributes
  - appconsistent.vmsnapshot.attributes.posix
attributes:
  check_mode:
    support: full
    details: Reports what would change; the consistency then describes the host as it is.
  diff_mode:
    support: full
    details: A text diff of configurations and text scripts; binary or large content (over
      256 KiB) is shown as a size and SHA-256 line; owner and mode changes as before/after.
options:
  state:
    description:
      - V(present) creates or repairs every file given; V(absent) removes them (only their
        paths are needed) and the host file carrying O(host_config_marker).
    type: str
    choices: [present, absent]
    default: present
  config_dir:
    description: The configuration directory; created with O(config_dir_mode) when missing.
    type: path
    default: /etc/azure
  config_dir_mode:
    description:
      - Mode of O(config_dir), an octal string. Group or other write, setuid, setgid and the
        sticky bit are refused (the snapshot would fail with 317).
    type: str
    default: "0755"
  configs:
    description: The plugin configurations (JSON), each checked as a snapshot run reads it.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path of the file.
        type: path
        required: true
      content:
        description: The JSON text. Not needed with O(state=absent).
        type: str
  host_config:
    description:
      - The plugin host file (INI) listing several configurations. Leave out for one plugin.
    type: dict
    suboptions:
      path:
        description: Absolute path of the file.
        type: path
        required: true
      content:
        description: The INI text.
        type: str
        required: true
  host_config_path:
    description: Where a host file written earlier is looked for when O(host_config) is not given.
    type: path
    default: /etc/azure/VMSnapshotPluginHost.conf
  host_config_marker:
    description:
      - First bytes of a host file this module may remove at O(host_config_path) when
        O(host_config) is not given or O(state=absent). Without it no host file is removed.
    type: str
  scripts:
    description: The scripts, each with its content in base64 (binary-safe).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path on the host.
        type: path
        required: true
      content:
        description: The content, base64-encoded. Not needed with O(state=absent).
        type: str
      mode:
        description: Octal mode; group and other bits, setuid and setgid are refused.
        type: str
        default: "0700"
  support_files:
    description: Files the scripts use besides themselves, as O(scripts).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path on the host.
        type: path
        required: true
      content:
        description: The content, base64-encoded. Not needed with O(state=absent).
        type: str
      mode:
        description: Octal mode; group or other write, setuid and setgid are refused.
        type: str
        default: "0700"
  check_config_path:
    description:
      - The configuration checked afterwards, as
        O(appconsistent.vmsnapshot.prepost_info#module:config_path).
    type: path
    default: /etc/azure/VMSnapshotScriptPluginConfig.json
  check_host_config_path:
    description:
      - The host file checked afterwards, as
        O(appconsistent.vmsnapshot.prepost_info#module:host_config_path).
    type: path
    default: /etc/azure/VMSnapshotPluginHost.conf
  required_consistency:
    description: When set, RV(meets_required) says whether the next snapshot reaches it.
    type: str
    choices: [application, filesystem, crash, none]
  fail_below_required:
    description:
      - Fail the task, after the changes, when RV(meets_required) is false, with RV(msg) as the
        message and every return value kept.
      - In check mode with changes pending it warns instead, because the check then describes
        the host as it is.
      - Saves a separate assert task per host on every nightly run.
    type: bool
    default: false
notes:
  - Existing directories above the files are not changed except O(config_dir)'s mode; a
    directory the snapshot would refuse shows up in RV(status_code) and RV(message).
  - A symbolic link among the directories is followed only when root owns it and the directory
    holding it is not writable by group or other; a symbolic link at a file's own path is refused.
seealso:
  - module: appconsistent.vmsnapshot.prepost_info
"""

EXAMPLES = r"""
- name: Enforce one plugin with its two scripts
  appconsistent.vmsnapshot.prepost:
    configs:
      - path: /etc/azure/VMSnapshotScriptPluginConfig.json
        content: "{{ lookup('ansible.builtin.template', 'plugin_config.json.j2') }}"
    scripts:
      - path: /opt/app/pre.sh
        content: "{{ lookup('ansible.builtin.file', 'pre.sh', rstrip=false) | b64encode }}"
      - path: /opt/app/post.sh
        content: "{{ lookup('ansible.builtin.file', 'post.sh', rstrip=false) | b64encode }}"
    required_consistency: application
    fail_below_required: true
  register: prepost
"""

RETURN = r"""
msg:
  description: One sentence - the consistency the next snapshot would get and, when it falls short
    of O(required_consistency), the status code, its name and the reason.
  returned: always
  type: str
  sample: The next snapshot would be application-consistent.
changes:
  description: One line per change made (or, in check mode, to be made).
  returned: always
  type: list
  elements: str
  sample:
    - created directory /opt/capside/azure
    - rewrote /etc/azure/VMSnapshotScriptPluginConfig.json
validated:
  description: False in check mode with changes pending - the check then describes the host as
    it is.
  returned: always
  type: bool
configured:
  description: As M(appconsistent.vmsnapshot.prepost_info).
  returned: always
  type: bool
status_code:
  description: As M(appconsistent.vmsnapshot.prepost_info) - 1 when every check passed.
  returned: always
  type: int
  sample: 1
status_name:
  description: The name of RV(status_code).
  returned: always
  type: str
  sample: success
status_aliases:
  description: Other names of the code.
  returned: always
  type: list
  elements: str
message:
  description: What was checked and, on failure, what is wrong.
  returned: always
  type: str
consistency:
  description: V(application), V(filesystem) or V(none), as
    M(appconsistent.vmsnapshot.prepost_info).
  returned: always
  type: str
  sample: application
meets_required:
  description: Whether RV(consistency) reaches O(required_consistency); null when it is not set.
  returned: always
  type: bool
plugins:
  description: Every plugin's own result, as M(appconsistent.vmsnapshot.prepost_info).
  returned: always
  type: list
  elements: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._consistency import (
    predicted_consistency,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._prepost import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_HOST_CONFIG_PATH,
    precheck,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._prepost_apply import (
    ApplyError,
    apply,
    diffs,
    meets,
    plan,
    summary,
    validate,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._redact import (
    scrubbing_module,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    describe,
    result_fields,
)

_FILE = dict(
    path=dict(type="path", required=True),
    content=dict(type="str", no_log=True),  # base64 of whole scripts: kept out of the invocation
    mode=dict(type="str", default="0700"),
)


def main() -> None:
    module = scrubbing_module(  # everything it prints is scrubbed, its own errors too
        AnsibleModule,
        argument_spec=dict(
            state=dict(type="str", choices=["present", "absent"], default="present"),
            config_dir=dict(type="path", default="/etc/azure"),
            config_dir_mode=dict(type="str", default="0755"),
            configs=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(path=dict(type="path", required=True), content=dict(type="str")),
            ),
            host_config=dict(
                type="dict",
                options=dict(
                    path=dict(type="path", required=True), content=dict(type="str", required=True)
                ),
            ),
            host_config_path=dict(type="path", default=DEFAULT_HOST_CONFIG_PATH),
            host_config_marker=dict(type="str"),
            scripts=dict(type="list", elements="dict", default=[], options=_FILE),
            support_files=dict(type="list", elements="dict", default=[], options=_FILE),
            check_config_path=dict(type="path", default=DEFAULT_CONFIG_PATH),
            check_host_config_path=dict(type="path", default=DEFAULT_HOST_CONFIG_PATH),
            required_consistency=dict(
                type="str", choices=["application", "filesystem", "crash", "none"]
            ),
            fail_below_required=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    marker = params["host_config_marker"]
    stale = None
    if marker and (params["state"] == "absent" or not params["host_config"]):
        stale = (params["host_config_path"], marker.encode("utf-8"))
    try:
        dir_mode, desired = validate(params)
        todo = plan(dir_mode, params["config_dir"], desired, params["state"], stale)
        if todo.changed and not module.check_mode:
            apply(todo)
    except ApplyError as exc:
        module.fail_json(msg=f"Nothing was changed: {exc}", changed=False)
    except OSError as exc:
        module.fail_json(
            msg=f"Writing the configuration failed: {exc}", exception=traceback.format_exc()
        )
    with precheck(params["check_config_path"], params["check_host_config_path"]) as check:
        plugins = [plugin.as_dict() for plugin in check.plugins]
    for warning in check.warnings:
        module.warn(warning)
    consistency = predicted_consistency(check)
    required = params["required_consistency"]
    met = meets(consistency, required)
    verdict = f"The next snapshot would be {consistency}-consistent"
    if met is False:
        verdict += (
            f", short of the required {required}: status {int(check.status)} "
            f"({check.status.name}): {check.message}"
        )
        if module.check_mode and todo.changed:
            module.warn(
                f"{verdict} Changes are pending, so this describes the host as it is now; the "
                "check is repeated after the changes are applied."
            )
    result = dict(
        msg=verdict if verdict.endswith(".") else verdict + ".",
        changed=todo.changed,
        changes=summary(todo),
        validated=not (module.check_mode and todo.changed),
        configured=check.configured,
        **result_fields(check.status),
        status_aliases=list(describe(check.status).aliases),
        message=check.message,
        consistency=consistency,
        meets_required=met,
        plugins=plugins,
    )
    if module._diff and todo.changed:
        result["diff"] = diffs(todo)
    if met is False and params["fail_below_required"] and result["validated"]:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
