# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""SAS URIs: parsing, validation and redaction.

A SAS URI is a secret: its ``sig`` value must never reach output, a log, a status document or an
exception message. ``SasUri`` keeps the signature only in the query it sends; its repr, str and
``redacted`` show ``sig=REDACTED``, and ``redact()`` cleans any free text the same way.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Dict, Optional
from urllib.parse import parse_qsl, unquote, urlsplit

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

REDACTED = "REDACTED"

# Secret values end at the first character that cannot be part of them (base64, percent-encoded).
_END = r"[^&\s\"'<>\\,;)\]}]+"
_SECRETS = (
    # sig=<signature>, also percent-encoded (sig%3D...) when a URL is nested in another.
    (re.compile(rf"(?i)(?:\b|(?<=%26)|(?<=%3F))(sig(?:=|%3D))({_END})"), rf"\g<1>{REDACTED}"),
    # AccountKey=<key> in connection strings.
    (re.compile(rf"(?i)\b(AccountKey=)({_END})"), rf"\g<1>{REDACTED}"),
    # Authorization: SharedKey <account>:<signature> (and SharedKeyLite).
    (re.compile(r"(?i)\b(SharedKey(?:Lite)?\s+[^\s:\"']+:)([^\s\"'<>\\,;]+)"), rf"\g<1>{REDACTED}"),
)
_SAS_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,7})?)?)?Z?$"
)
# Controls, spaces and non-ASCII would break (or inject into) the HTTP request line.
_NOT_URL_SAFE = re.compile(r"[^\x21-\x7e]")


def redact(text: str) -> str:
    """Return text with every SAS signature, account key and SharedKey signature replaced."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


@dataclass(frozen=True)
class SasUri:
    """A validated blob SAS URI. Its repr and str show the redacted form only."""

    scheme: str
    host: str
    port: int
    path: str
    account: str
    container: str
    blob: str
    query: Dict[str, str] = field(repr=False, hash=False)
    blob_url: str
    redacted: str
    expiry: Optional[datetime]
    query_string: str = field(repr=False, hash=False, compare=False)

    def __repr__(self) -> str:
        return f"SasUri({self.redacted!r})"

    def __str__(self) -> str:
        return self.redacted

    @property
    def permissions(self) -> str:
        """The signed permissions (``sp``), or "" when a stored access policy holds them."""
        return self.query.get("sp", "")

    def request_target(self, extra_query: str = "") -> str:
        """The HTTP request target: the blob path with the SAS query (and extra parameters)."""
        query = self.query_string + (f"&{extra_query}" if extra_query else "")
        return f"{self.path}?{query}"


def parse_sas_time(value: str) -> datetime:
    """Parse a SAS time (``se``/``st``: ISO 8601 date or UTC date-time) as an aware datetime."""
    match = _SAS_TIME.match(value)
    if not match:
        raise ValueError(f"{value!r} is not an ISO 8601 UTC time")
    parts = [int(part) if part else 0 for part in match.groups()]
    return datetime(*parts, tzinfo=timezone.utc)


def _is_path_style(host: str) -> bool:
    """Emulators and IP endpoints carry the account in the path, Azure in the host name."""
    if host == "localhost" or "." not in host:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_sas_uri(uri: str, *, what: str) -> SasUri:
    """Validate a blob SAS URI; `what` names it in errors ("disk 2", "statusBlobUri")."""

    def invalid(reason: str) -> VmSnapshotError:
        shown = redact(uri) if isinstance(uri, str) else type(uri).__name__
        return VmSnapshotError(
            Status.error_parameter, f"The SAS URI for {what} {reason}: {shown!r}."
        )

    if not isinstance(uri, str) or not uri.strip():
        raise invalid("is empty or not a string")
    uri = uri.strip()
    if _NOT_URL_SAFE.search(uri):
        raise invalid("contains spaces, control or non-ASCII characters (percent-encode them)")
    try:
        parts = urlsplit(uri)
        port = parts.port
        query_pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise invalid(f"is malformed ({redact(str(exc))})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise invalid("is not an http(s) URL")
    if parts.username is not None or parts.fragment:
        raise invalid("must not carry user information or a fragment")
    query = dict(query_pairs)
    if len(query) != len(query_pairs):
        raise invalid("repeats a query parameter")
    if not query.get("sig"):
        raise invalid("has no signature (sig=)")
    host = parts.hostname
    segments = [unquote(segment) for segment in parts.path.lstrip("/").split("/")]
    if _is_path_style(host):
        account, segments = (segments[0], segments[1:]) if len(segments) > 1 else ("", [])
    else:
        account = host.split(".")[0]
    container, blob = (segments[0], "/".join(segments[1:])) if segments else ("", "")
    if not (account and container and blob):
        raise invalid("does not name a container and a blob")
    expiry = None
    if "se" in query:
        try:
            expiry = parse_sas_time(query["se"])
        except ValueError:
            raise invalid("has an invalid expiry (se=)") from None
    blob_url = f"{scheme}://{parts.netloc}{parts.path}"
    shown_query = "&".join(
        f"sig={REDACTED}" if pair.startswith("sig=") else pair for pair in parts.query.split("&")
    )
    return SasUri(
        scheme=scheme,
        host=host,
        port=port or (443 if scheme == "https" else 80),
        path=parts.path,
        account=account,
        container=container,
        blob=blob,
        query=query,
        blob_url=blob_url,
        redacted=redact(f"{blob_url}?{shown_query}"),
        expiry=expiry,
        query_string=parts.query,
    )
