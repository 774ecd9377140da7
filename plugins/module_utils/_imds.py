# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""The Resource Manager access token: the VM's managed identity from the instance metadata
service (IMDS), or a token the caller passed.

IMDS: `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=<audience>` with the
header `Metadata: true`, optionally `client_id`, `object_id` or `msi_res_id` to pick a
user-assigned identity (Microsoft's documentation, "How to use managed identities for Azure
resources on an Azure VM to acquire an access token"). The token lives only in this process's
memory: it is registered with `_redact` the moment it is read, never written anywhere.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import urlencode

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._arm_rest import (
    MANAGEMENT_RESOURCE,
    ArmConnection,
    describe,
    short,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._redact import register
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

# A bearer token's characters (RFC 6750, b64token): anything else (a blank, a line break) would
# break or inject into the Authorization header, and http.client's error would show the token.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
DEFAULT_IMDS_ENDPOINT = "http://169.254.169.254"
IMDS_API_VERSION = "2018-02-01"
TOKEN_PATH = "/metadata/identity/oauth2/token"


def imds_token(
    endpoint: str,
    *,
    timeout: float,
    deadline: float | None = None,
    client_id: str | None = None,
    object_id: str | None = None,
    msi_res_id: str | None = None,
) -> str:
    """The managed identity's Resource Manager token; VmSnapshotError (15) when there is none."""
    query = {"api-version": IMDS_API_VERSION, "resource": MANAGEMENT_RESOURCE}
    for name, value in (
        ("client_id", client_id),
        ("object_id", object_id),
        ("msi_res_id", msi_res_id),
    ):
        if value:
            query[name] = value
    connection = ArmConnection(endpoint, timeout=timeout)
    where = f"The instance metadata service at {connection.origin}"
    try:
        response = connection.request(
            "GET",
            f"{TOKEN_PATH}?{urlencode(query)}",
            headers={"Metadata": "true"},
            deadline=deadline,
        )
    except VmSnapshotError:
        raise
    except Exception as exc:  # unreachable, refused, timed out, not HTTP
        raise VmSnapshotError(
            Status.error_http_failure,
            f"{where} gave no managed-identity token: {describe(exc)} (is this an Azure VM "
            "with a managed identity? Or pass access_token).",
        ) from None
    finally:
        connection.close()
    token = response.json().get("access_token") if response.ok else None
    if isinstance(token, str) and token:
        register(token)
        if not _BEARER_TOKEN.fullmatch(token):
            raise VmSnapshotError(
                Status.error_http_failure,
                f"{where} gave a token with characters a bearer token cannot hold (RFC 6750).",
            )
        return token
    answer = response.json()
    detail = short(str(answer.get("error_description") or answer.get("error") or ""))
    raise VmSnapshotError(
        Status.error_http_failure,
        f"{where} gave no managed-identity token: HTTP {response.status} {detail} (is a "
        "managed identity assigned to the VM, and the right one chosen?).",
    )


class TokenSource:
    """One token for every disk of a run, fetched once (under a lock) before the pre-script."""

    def __init__(
        self,
        *,
        access_token: str | None = None,
        imds_endpoint: str = DEFAULT_IMDS_ENDPOINT,
        client_id: str | None = None,
        object_id: str | None = None,
        msi_res_id: str | None = None,
    ) -> None:
        if access_token:
            register(access_token)
            if not _BEARER_TOKEN.fullmatch(access_token):
                raise VmSnapshotError(
                    Status.error_parameter,
                    "access_token holds characters a bearer token cannot hold (RFC 6750: "
                    "letters, digits and -._~+/ with = at the end): a blank or a line break?",
                )
        self._token = access_token or None
        self._given = bool(access_token)
        self.imds_endpoint = imds_endpoint
        self._identity = {"client_id": client_id, "object_id": object_id, "msi_res_id": msi_res_id}
        self._lock = threading.Lock()
        self._error: VmSnapshotError | None = None

    def __repr__(self) -> str:  # never the token
        return f"TokenSource(given={self._given}, imds={self.imds_endpoint!r})"

    @property
    def source(self) -> str:
        return "access_token" if self._given else "managed identity (IMDS)"

    def token(self, *, timeout: float, deadline: float | None = None) -> str:
        """The token; the first failure is remembered so every disk reports the same one."""
        with self._lock:
            if self._token:
                return self._token
            if self._error is not None:
                raise self._error
            try:
                self._token = imds_token(
                    self.imds_endpoint, timeout=timeout, deadline=deadline, **self._identity
                )
            except VmSnapshotError as exc:
                self._error = exc
                raise
            return self._token
