"""The secrets scan finds a signature or key however it was written, and only then."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from scan_secrets import DEV_KEY, scan_text

SIGNATURE = "Xk2mPq9Rz7vL3nB8cD4fG6hJ1kM5pQ0rS2tU4wY6zA%3D"
LEAKS = {
    "plain": f"https://a.blob.core.windows.net/c/b?sv=2021-12-02&sp=rw&sig={SIGNATURE}",
    "percent-encoded once": f"url=https%3A%2F%2Fa%2Fc%2Fb%3Fsv%3D1%26sig%3D{SIGNATURE}",
    "percent-encoded twice": f"next=https%253A%252F%252Fa%252Fc%253Fsig%253D{SIGNATURE}",
    "JSON-escaped": '{"uri": "https://a/c/b?sv=1\\u0026sig\\u003d' + SIGNATURE + '"}',
    "upper case": f"SIG={SIGNATURE}",
    "connection string": f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={DEV_KEY}",
    "SharedKey header": "Authorization: SharedKey devstoreaccount1:q0VhJrsTm1c4d6yZ8aB2xW3vE5gH7=",
    "bare development key": f"key {DEV_KEY} here",
    "percent-encoded name": f"?sv=1&%73ig={SIGNATURE}",
    "percent-encoded three times": f"sig%25253D{SIGNATURE}",
    "HTML decimal": f"sig&#61;{SIGNATURE}",
    "HTML hex": f"sig&#x3D;{SIGNATURE}",
    "HTML escaped twice": f"sig&amp;#61;{SIGNATURE}",
    "header spelling": f"sig: {SIGNATURE}",
    "JSON member": '{"sig": "' + SIGNATURE + '"}',
    "JSON-escaped slashes": "sig=" + SIGNATURE.replace("2", "\\/"),
    "base64 of sig=": base64.b64encode(f"GET /c/b?sig={SIGNATURE} HTTP/1.1".encode()).decode(),
}
CLEAN = {
    "redacted": "https://a/c/b?sv=1&sig=REDACTED and sig%3DREDACTED",
    "short value": "design=abc",
    "no value": "sig= and sig=&sv=1",
    "script output": "x" * 8192,
    "a key that only ends like one": "config=abcdefghijklmnopqrstuvwxyz",
}


@pytest.mark.parametrize("text", LEAKS.values(), ids=list(LEAKS))
def test_leaks_are_found(text):
    assert scan_text(text)


@pytest.mark.parametrize("text", CLEAN.values(), ids=list(CLEAN))
def test_clean_text_is_clean(text):
    assert scan_text(text) == []


KNOWN = "Qm9ndXNTaWduYXR1cmVGb3JUaGVTY2FubmVyMDEyMzQ1Ng=="
KNOWN_LEAKS = {
    "bare": f"echo {KNOWN} end",
    "percent-encoded": quote(KNOWN, safe=""),
    "percent-encoded twice": quote(quote(KNOWN, safe=""), safe=""),
    "a piece": f"x-ms-error-code: {KNOWN[10:24]}",
    "base64, shifted": base64.b64encode(f"ab{KNOWN}".encode()).decode(),
    "HTML entities": KNOWN.replace("=", "&#61;"),
    "JSON unicode escapes": KNOWN.replace("=", "\\u003d"),
}


@pytest.mark.parametrize("text", KNOWN_LEAKS.values(), ids=list(KNOWN_LEAKS))
def test_a_known_signature_is_found_in_any_spelling(text):
    assert scan_text(text, known=[KNOWN])
    assert scan_text("nothing here; sig=REDACTED", known=[KNOWN]) == []
