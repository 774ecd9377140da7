# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Azure Resource Manager connection options of the managed-disk modules."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  arm_endpoint:
    description:
      - The Azure Resource Manager endpoint (HTTPS only; the bearer token never goes in clear
        text). Change it for a sovereign cloud, or for a test stand-in.
    type: str
    default: https://management.azure.com
  imds_endpoint:
    description:
      - The instance metadata service that gives the VM's managed identity its token, used when
        O(access_token) is not given.
    type: str
    default: http://169.254.169.254
  access_token:
    description:
      - A Resource Manager access token (audience C(https://management.azure.com/)), for
        example from an AWX credential on the controller. Without it the VM's managed identity
        is used.
      - Never logged, never written to disk, redacted by value from every output.
    type: str
  managed_identity:
    description:
      - Which user-assigned managed identity to ask IMDS for; at most one key. Without it, the
        VM's system-assigned identity.
    type: dict
    suboptions:
      client_id:
        description: The identity's client ID.
        type: str
      object_id:
        description: The identity's object (principal) ID.
        type: str
      msi_res_id:
        description: The identity's Azure resource ID.
        type: str
  ca_path:
    description:
      - A CA bundle file (or a directory of hashed CA certificates) to check the Resource
        Manager endpoint's certificate with, instead of the system's.
    type: path
"""
