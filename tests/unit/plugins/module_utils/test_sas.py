"""SAS URI parsing, validation and redaction."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._sas import (
    parse_sas_time,
    parse_sas_uri,
    redact,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

SIG = "Zm9vYmFyYmF6cXV4c2VjcmV0c2lnbmF0dXJlMDEyMzQ1Njc4OQ%3D%3D"
QUERY = f"sv=2021-12-02&sr=b&sp=rw&se=2030-01-02T03:04:05Z&sig={SIG}"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            f"https://acct.blob.core.windows.net/vhds/osdisk.vhd?{QUERY}",
            ("https", "acct.blob.core.windows.net", 443, "acct", "vhds", "osdisk.vhd"),
        ),
        (
            f"http://127.0.0.1:10000/devstoreaccount1/disks/d0.vhd?{QUERY}",
            ("http", "127.0.0.1", 10000, "devstoreaccount1", "disks", "d0.vhd"),
        ),
        (
            f"http://localhost/devstoreaccount1/disks/a/b/c.vhd?{QUERY}",
            ("http", "localhost", 80, "devstoreaccount1", "disks", "a/b/c.vhd"),
        ),
        (
            f"https://[::1]:8443/acct/c/my%20disk.vhd?{QUERY}",
            ("https", "::1", 8443, "acct", "c", "my disk.vhd"),
        ),
        (
            f"  HTTPS://acct.blob.core.windows.net:444/c/b?{QUERY}  ",
            ("https", "acct.blob.core.windows.net", 444, "acct", "c", "b"),
        ),
    ],
)
def test_parse_valid(uri, expected):
    sas = parse_sas_uri(uri, what="disk 0")
    assert (sas.scheme, sas.host, sas.port, sas.account, sas.container, sas.blob) == expected
    assert sas.query["sig"] == SIG.replace("%3D", "=")
    assert sas.query["sp"] == sas.permissions == "rw"
    assert sas.expiry == datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert "?" not in sas.blob_url and sas.blob_url.endswith(sas.path)
    assert sas.redacted == f"{sas.blob_url}?{QUERY.replace(SIG, 'REDACTED')}"
    # The request keeps the query exactly as given (the signature's own encoding included).
    assert sas.request_target("comp=snapshot") == f"{sas.path}?{QUERY}&comp=snapshot"
    assert sas.request_target() == f"{sas.path}?{QUERY}"
    for shown in (repr(sas), str(sas), sas.redacted, f"{sas}"):
        assert SIG not in shown and SIG.replace("%3D", "=") not in shown
        assert "sig=REDACTED" in shown


def test_no_expiry_and_no_permissions():
    sas = parse_sas_uri("http://127.0.0.1:1/a/c/b?si=policy&sig=abc", what="disk 0")
    assert sas.expiry is None and sas.permissions == ""


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        (None, "is empty or not a string"),
        (42, "is empty or not a string"),
        ("   ", "is empty or not a string"),
        (f"ftp://acct.blob.core.windows.net/c/b?{QUERY}", "is not an http(s) URL"),
        (f"acct.blob.core.windows.net/c/b?{QUERY}", "is not an http(s) URL"),
        (f"https:///c/b?{QUERY}", "is not an http(s) URL"),
        (f"https://acct.blob.core.windows.net/c?{QUERY}", "does not name a container and a blob"),
        (f"https://acct.blob.core.windows.net/c/?{QUERY}", "does not name a container and a blob"),
        (f"https://acct.blob.core.windows.net/?{QUERY}", "does not name a container and a blob"),
        (f"http://127.0.0.1:10000/devstoreaccount1/c?{QUERY}", "does not name a container"),
        ("https://acct.blob.core.windows.net/c/b", "has no signature (sig=)"),
        ("https://acct.blob.core.windows.net/c/b?sv=1&sig=", "has no signature (sig=)"),
        (f"https://acct.blob.core.windows.net/c/b?sv=1&{QUERY}", "repeats a query parameter"),
        (f"https://acct.blob.core.windows.net:99999/c/b?{QUERY}", "is malformed"),
        (f"https://acct.blob.core.windows.net:port/c/b?{QUERY}", "is malformed"),
        (f"https://acct.blob.core.windows.net/c/b?{QUERY}&junk", "is malformed"),
        (f"https://acct.blob.core.windows.net/c/my disk?{QUERY}", "contains spaces, control"),
        (f"https://acct.blob.core.windows.net/c/b\r\nX: y?{QUERY}", "contains spaces, control"),
        (f"https://acct.blob.core.windows.net/c/dïsk?{QUERY}", "non-ASCII"),
        (f"https://user:pw@acct.blob.core.windows.net/c/b?{QUERY}", "must not carry user"),
        (f"https://acct.blob.core.windows.net/c/b?{QUERY}#frag", "must not carry user"),
        (f"https://a.blob.core.windows.net/c/b?se=tomorrow&sig={SIG}", "has an invalid expiry"),
    ],
)
def test_parse_invalid(uri, reason):
    with pytest.raises(VmSnapshotError) as caught:
        parse_sas_uri(uri, what="disk 2")
    error = caught.value
    assert error.status == Status.error_parameter
    assert error.message.startswith("The SAS URI for disk 2 ")
    assert reason in error.message
    assert error.message.endswith(".")
    for shown in (error.message, str(error), repr(error), str(caught.getrepr())):
        assert SIG not in shown and SIG.replace("%3D", "=") not in shown


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"https://a/c/b?{QUERY}", f"https://a/c/b?{QUERY.replace(SIG, 'REDACTED')}"),
        ("?sig=abc+/=&sp=r", "?sig=REDACTED&sp=r"),
        ("GET /c/b?sv=1&SIG=abc HTTP/1.1", "GET /c/b?sv=1&SIG=REDACTED HTTP/1.1"),
        (
            "copy source https%3A%2F%2Fa%2Fc%2Fb%3Fsv%3D1%26sig%3Dabc%252B end",
            "copy source https%3A%2F%2Fa%2Fc%2Fb%3Fsv%3D1%26sig%3DREDACTED end",
        ),
        ("two: ?sig=aaa and &sig=bbb.", "two: ?sig=REDACTED and &sig=REDACTED"),
        ('{"uri": "http://h/c/b?sig=abc"}', '{"uri": "http://h/c/b?sig=REDACTED"}'),
        ("<Url>http://h/c/b?sig=abc</Url>", "<Url>http://h/c/b?sig=REDACTED</Url>"),
        (
            "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=Eby8vdM0==;BlobEndpoint=x",
            "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=REDACTED;BlobEndpoint=x",
        ),
        (
            "Authorization: SharedKey devstoreaccount1:q1w2e3r4t5y6u7==",
            "Authorization: SharedKey devstoreaccount1:REDACTED",
        ),
        ("SharedKeyLite acct:abc=", "SharedKeyLite acct:REDACTED"),
        ("no secrets: design=1 signal=2 assign=3", "no secrets: design=1 signal=2 assign=3"),
        ("sig=REDACTED", "sig=REDACTED"),
        ("", ""),
    ],
)
def test_redact(text, expected):
    assert redact(text) == expected
    assert redact(redact(text)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2030-01-02", datetime(2030, 1, 2, tzinfo=timezone.utc)),
        ("2030-01-02T03:04Z", datetime(2030, 1, 2, 3, 4, tzinfo=timezone.utc)),
        ("2030-01-02T03:04:05Z", datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        ("2030-01-02T03:04:05.1234567Z", datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    ],
)
def test_parse_sas_time(value, expected):
    assert parse_sas_time(value) == expected


@pytest.mark.parametrize("value", ["", "2030", "2030-13-01", "2030-01-02 03:04", "tomorrow"])
def test_parse_sas_time_invalid(value):
    with pytest.raises(ValueError):
        parse_sas_time(value)
