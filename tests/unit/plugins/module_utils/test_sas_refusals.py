"""SAS URIs refused before anything runs: unclean signatures, a repeated sig, http to a remote."""

from __future__ import annotations

import random
import string
from urllib.parse import quote

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._redact import (
    forget_all,
    scrub,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._sas import (
    HTTP_HOSTS_VARIABLE,
    parse_sas_uri,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

BASE = "https://acct.blob.core.windows.net/vhds/disk.vhd"


@pytest.fixture(autouse=True)
def empty_registry():
    forget_all()
    yield
    forget_all()


def signature(seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _char in range(43)) + "="


def _insert(value: str, position: float, piece: str) -> str:
    at = max(1, min(len(value) - 1, int(len(value) * position)))
    return value[:at] + piece + value[at:]


BAD_PIECES = {
    "blank": " ",
    "tab": "\t",
    "line break": "\n",
    "CR LF": "\r\n",
    "percent-encoded blank": "%20",
    "percent-encoded line break": "%0A",
    "percent-encoded percent": "%25",
    "percent-encoded NUL": "%00",
    "percent-encoded quote": "%22",
    "stray percent": "%",
    "plus-encoded blank then text": "%2B%20",
    "ampersand entity": "&amp;",
    "backslash": "\\",
    "non-ASCII": "\u00e9",
    "percent-encoded non-ASCII": "%C3%A9",
}


@pytest.mark.parametrize("position", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("piece", list(BAD_PIECES))
def test_a_signature_that_is_not_clean_base64_is_refused(piece, position):
    sig = signature(int(position * 10))
    bad = _insert(sig, position, BAD_PIECES[piece])
    uri = f"{BASE}?sv=2021-12-02&sp=rw&sig={bad}&se=2030-01-01"
    with pytest.raises(VmSnapshotError) as caught:
        parse_sas_uri(uri, what="disk 0")
    message = caught.value.message
    assert caught.value.status == Status.error_parameter
    # Neither part of the signature is shown, in the error or anything scrubbed afterwards.
    for part in (sig[: int(len(sig) * position)], sig[int(len(sig) * position) :]):
        if len(part) >= 8:
            assert part not in message
            assert part not in scrub(f"echo: {uri}")


@pytest.mark.parametrize(
    "second",
    ["sig", "SIG", "Sig", "%73ig", "s%69g", "si%67", "%2573ig", "%73%69%67", "+sig", "sig+"],
)
@pytest.mark.parametrize("order", ["first", "second"])
def test_a_repeated_signature_in_any_spelling_is_refused(second, order):
    one, two = signature(1), signature(2)
    pairs = [f"sig={one}", f"{second}={two}"]
    if order == "second":
        pairs.reverse()
    uri = f"{BASE}?sv=1&{pairs[0]}&sp=rw&{pairs[1]}"
    with pytest.raises(VmSnapshotError) as caught:
        parse_sas_uri(uri, what="disk 1")
    assert caught.value.status == Status.error_parameter
    for value in (one, two):
        assert value[:12] not in caught.value.message
        assert value[:12] not in scrub(f"server said: {uri}")


@pytest.mark.parametrize(
    "clean", ["abc", signature(3), quote(signature(4), safe=""), "ab+/cd==", "ab%2Bc%2fd%3d"]
)
def test_clean_signatures_are_accepted(clean):
    sas = parse_sas_uri(f"{BASE}?sv=1&sp=rw&sig={clean}", what="disk 0")
    assert sas.query["sig"]
    assert clean not in sas.redacted or len(clean) < 6


@pytest.mark.parametrize(
    "host",
    [
        "10.1.2.3",
        "192.168.0.10",
        "acct.blob.core.windows.net",
        "example.com",
        "[2001:db8::1]",
        "169.254.169.254",
        "0.0.0.0",
        "localhost.example.com",
        "127.0.0.1.example.com",
    ],
)
@pytest.mark.parametrize("spr", ["", "&spr=https", "&spr=https,http"])
def test_plain_http_to_a_remote_host_is_refused(host, spr, monkeypatch):
    monkeypatch.delenv(HTTP_HOSTS_VARIABLE, raising=False)
    uri = f"http://{host}/acct/c/b?sv=1&sp=rw{spr}&sig={signature(5)}"
    with pytest.raises(VmSnapshotError) as caught:
        parse_sas_uri(uri, what="disk 0")
    assert "plain http" in caught.value.message and "https" in caught.value.message
    assert signature(5)[:12] not in caught.value.message


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:10000", "127.8.9.10:1", "localhost:10000", "[::1]:10000"]
)
def test_plain_http_to_this_machine_is_accepted(host, monkeypatch):
    monkeypatch.delenv(HTTP_HOSTS_VARIABLE, raising=False)
    sas = parse_sas_uri(f"http://{host}/acct/c/b?sv=1&spr=https&sig=abc", what="disk 0")
    assert sas.scheme == "http"


def test_plain_http_to_a_named_test_host_is_accepted(monkeypatch):
    monkeypatch.setenv(HTTP_HOSTS_VARIABLE, " 10.231.4.1 , emulator.test")
    for host in ("10.231.4.1:10000", "emulator.test", "EMULATOR.test"):
        assert parse_sas_uri(f"http://{host}/acct/c/b?sig=abc", what="d").scheme == "http"
    with pytest.raises(VmSnapshotError):
        parse_sas_uri("http://10.231.4.2/acct/c/b?sig=abc", what="d")


def test_parsing_registers_the_signature_for_value_redaction():
    sig = signature(6)
    parse_sas_uri(f"{BASE}?sv=1&sp=rw&sig={quote(sig, safe='')}", what="disk 0")
    assert sig not in scrub(f"the server echoed {sig} and {quote(quote(sig, safe=''), safe='')}")
