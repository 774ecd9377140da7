# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""SAS URIs: parsing, validation and redaction.

A SAS URI is a secret: its ``sig`` value must never reach output, a log, a status document or an
exception message. Parsing registers the signature and the whole query string with the secret
registry (``_redact``) before anything else, so that ``redact()`` removes them by value in any
spelling. ``SasUri`` keeps the signature only in the query it sends; its repr, str and
``redacted`` show ``sig=REDACTED``.

Refused before anything runs (code 11): a signature that is not clean base64 (a blank or line
break in it, a ``%`` sequence other than ``%2B``, ``%2F``, ``%3D``), a ``sig`` given twice in any
spelling (``sig``, ``SIG``, ``%73ig``), and plain ``http://`` to anything but this machine
(``localhost``, 127.0.0.0/8, ``::1``): http sends the signature in clear text whatever the SAS
says. An emulator on a test network can be allowed by naming its host in the environment
variable ``APPCONSISTENT_VMSNAPSHOT_HTTP_HOSTS`` (comma-separated) of the module's process.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import parse_qsl, unquote, urlsplit

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._redact import (
    MIN_SECRET_LENGTH,
    REDACTED,
    register,
    scrub,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

# Plain http sends the signature in clear text: allowed only to this machine (an emulator).
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
# A clean signature is base64: its alphabet, maybe padded; %2B, %2F and %3D stand for + / =.
_CLEAN_SIGNATURE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
# SAS parameter names (sv, sp, se, sig, skoid, rscd, snapshot, ...) are short words.
_PARAMETER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,11}$")
_BASE64_ESCAPES = re.compile(r"%(2[bB]|2[fF]|3[dD])")
_SAS_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,7})?)?)?Z?$"
)
# Controls, spaces and non-ASCII would break (or inject into) the HTTP request line.
_NOT_URL_SAFE = re.compile(r"[^\x21-\x7e]")


def redact(text: str) -> str:
    """Return text with every registered secret and every `sig=`-like value redacted."""
    return scrub(text)


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
    query: dict[str, str] = field(repr=False, hash=False)
    blob_url: str
    redacted: str
    expiry: datetime | None
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


HTTP_HOSTS_VARIABLE = "APPCONSISTENT_VMSNAPSHOT_HTTP_HOSTS"


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _http_allowed(host: str) -> bool:
    allowed = {name.strip().lower() for name in os.environ.get(HTTP_HOSTS_VARIABLE, "").split(",")}
    return _is_loopback(host) or host.lower() in allowed - {""}


def _name_of(raw_name: str) -> str:
    """A query parameter's name as a server reads it: percent-decoded (twice at most), any case."""
    return unquote(unquote(raw_name.replace("+", " "))).strip().lower()


def _register_secrets(uri: str) -> list[str]:
    """Register the query string and every `sig` value; return the raw `sig` values.

    Done before any check, so that whatever is wrong with the URI, no error shows its secrets.
    """
    query = uri.split("?", 1)[1].split("#", 1)[0] if "?" in uri else ""
    signatures = []
    for pair in query.split("&"):
        name, _sep, value = pair.partition("=")
        for piece in (name, *name.split(";")):
            if not _PARAMETER_NAME.match(_name_of(piece)):
                register(piece)  # maybe the rest of a signature cut by "&"
        if _name_of(name) != "sig":
            continue
        signatures.append(value)
        # The decoded value's pattern also matches its percent-encoded spellings (any depth).
        plain = unquote(unquote(value))
        register(plain)
        for piece in re.split(r"[\s\x00-\x1f\x7f]+", plain):
            register(piece)
    # The whole query too, but not one without a real signature: "sv=1&sig=" as a secret would
    # blank the "sig=" in front of every other SAS.
    if any(len(value) >= MIN_SECRET_LENGTH for value in signatures):
        register(query, fragments=False)
    return signatures


def _signature_problem(signatures: list[str]) -> str | None:
    if not signatures or not any(signatures):
        return "has no signature (sig=)"
    if len(signatures) > 1:
        return "repeats its signature (sig) parameter, in one spelling or another"
    plain = _BASE64_ESCAPES.sub(lambda match: chr(int(match.group(1), 16)), signatures[0])
    if not _CLEAN_SIGNATURE.match(plain):
        return (
            "has a signature (sig=) that is not clean base64 (a blank, a line break or a "
            "percent sequence other than %2B, %2F, %3D in it)"
        )
    return None


def parse_sas_uri(uri: str, *, what: str) -> SasUri:
    """Validate a blob SAS URI; `what` names it in errors ("disk 2", "statusBlobUri")."""

    def invalid(reason: str) -> VmSnapshotError:
        if isinstance(uri, str):
            # The query is never shown: it may hold a signature that no pattern recognises.
            base, has_query = uri.strip().split("?", 1)[0], "?" in uri
            shown = scrub(base) + (f"?<query, {REDACTED}>" if has_query else "")
        else:
            shown = type(uri).__name__
        return VmSnapshotError(
            Status.error_parameter, f"The SAS URI for {what} {reason}: {shown!r}."
        )

    if not isinstance(uri, str) or not uri.strip():
        raise invalid("is empty or not a string")
    uri = uri.strip()
    signatures = _register_secrets(uri)
    if _NOT_URL_SAFE.search(uri):
        raise invalid("contains spaces, control or non-ASCII characters (percent-encode them)")
    try:
        parts = urlsplit(uri)
        port = parts.port
        query_pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise invalid(f"is malformed ({scrub(str(exc))})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise invalid("is not an http(s) URL")
    if parts.username is not None or parts.fragment:
        raise invalid("must not carry user information or a fragment")
    query = dict(query_pairs)
    if len(query) != len(query_pairs):
        raise invalid("repeats a query parameter")
    odd = [name for name, _value in query_pairs if not _PARAMETER_NAME.match(name.lower())]
    if odd:
        raise invalid(
            "has a query parameter whose name is not a SAS parameter name (maybe a piece of the "
            "signature, cut by an unencoded &)"
        )
    problem = _signature_problem(signatures)
    if problem:
        raise invalid(problem)
    host = parts.hostname
    if scheme == "http" and not _http_allowed(host):
        raise invalid(
            f"uses plain http to {host}, which would send its signature in clear text: use "
            "https (http is accepted only to this machine, for an emulator)"
        )
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
        f"sig={REDACTED}" if _name_of(pair.partition("=")[0]) == "sig" else pair
        for pair in parts.query.split("&")
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
        redacted=scrub(f"{blob_url}?{shown_query}"),
        expiry=expiry,
        query_string=parts.query,
    )
