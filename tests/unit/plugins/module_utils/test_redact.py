"""The secret registry: a registered secret is redacted by value, in every spelling and place."""

from __future__ import annotations

import base64
import html
import json
import random
import string
from urllib.parse import quote

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import _redact
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._redact import (
    forget_all,
    guard_module,
    register,
    scrub,
    scrub_obj,
)


@pytest.fixture(autouse=True)
def empty_registry():
    forget_all()
    yield
    forget_all()


def make_signature(seed: int) -> str:
    """A random base64 signature (44 characters, as a SAS's HMAC-SHA256), with + / and =."""
    rng = random.Random(seed)
    body = "".join(rng.choice(string.ascii_letters + string.digits + "+/") for _char in range(42))
    return body[:10] + "+/" + body[12:] + "1="


def _json_escape_all(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" if not c.isalnum() else c for c in text)


def _b64_shifted(text: str, shift: int) -> str:
    return base64.b64encode(("#" * shift + text + "!").encode()).decode()


SPELLINGS = {
    "raw": lambda s: s,
    "percent once, upper": lambda s: quote(s, safe=""),
    "percent once, lower": lambda s: quote(s, safe="").replace("%2F", "%2f").replace("%2B", "%2b"),
    "percent twice": lambda s: quote(quote(s, safe=""), safe=""),
    "percent three times": lambda s: quote(quote(quote(s, safe=""), safe=""), safe=""),
    "percent, every character": lambda s: "".join(f"%{ord(c):02X}" for c in s),
    "plus as blank": lambda s: s.replace("+", " "),
    "JSON-escaped slash": lambda s: s.replace("/", "\\/"),
    "JSON-escaped twice": lambda s: s.replace("/", "\\\\/").replace("=", "\\\\u003d"),
    "JSON \\u escapes": _json_escape_all,
    "json.dumps": lambda s: json.dumps(s)[1:-1],
    "HTML decimal": lambda s: "".join(f"&#{ord(c)};" if not c.isalnum() else c for c in s),
    "HTML hex": lambda s: "".join(f"&#x{ord(c):X};" if not c.isalnum() else c for c in s),
    "HTML hex padded": lambda s: "".join(f"&#x00{ord(c):x};" if c in "+/=" else c for c in s),
    "HTML escaped twice": lambda s: s.replace("=", "&amp;#61;"),
    "mixed": lambda s: quote(s[:20], safe="") + s[20:30].replace("/", "\\/") + html.escape(s[30:]),
    "base64, aligned": lambda s: _b64_shifted(s, 0),
    "base64, shifted by one": lambda s: _b64_shifted(s, 1),
    "base64, shifted by two": lambda s: _b64_shifted(s, 2),
    "URL-safe base64": lambda s: base64.urlsafe_b64encode(("ab" + s).encode()).decode(),
    "first half": lambda s: s[:22],
    "last 14": lambda s: s[-14:],
    "middle 16, percent-encoded": lambda s: quote(s[14:30], safe=""),
}
CONTEXTS = {
    "alone": "{}",
    "in a URL": "https://a.blob.core.windows.net/c/b?sv=1&x={}&sp=r",
    "in JSON": '{{"message": "bad: {}"}}',
    "in XML": "<Error><Message>{}</Message></Error>",
    "after sig: ": "sig: {}",
    "in a header": "x-ms-error-code: {}\r\n",
    "glued to words": "abc{}xyz",
}


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("spelling", list(SPELLINGS))
@pytest.mark.parametrize("context", list(CONTEXTS))
def test_a_registered_signature_is_redacted_in_every_spelling(seed, spelling, context):
    signature = make_signature(seed)
    register(signature)
    leaked = SPELLINGS[spelling](signature)
    text = CONTEXTS[context].format(leaked)
    cleaned = scrub(text)
    assert leaked not in cleaned
    assert "REDACTED" in cleaned
    # Nothing of 12 characters of the signature survives, decoded or not.
    for start in range(len(signature) - 12):
        assert signature[start : start + 12] not in cleaned


@pytest.mark.parametrize("seed", [4, 5])
def test_a_registered_query_string_is_redacted(seed):
    signature = make_signature(seed)
    query = f"sv=2021-12-02&sr=b&sp=rw&sig={quote(signature, safe='')}"
    register(query, fragments=False)
    register(signature)
    for text in (query, quote(query, safe=""), html.escape(query), json.dumps(query)):
        assert signature not in scrub(text)
        assert quote(signature, safe="") not in scrub(text)


def test_registered_bearer_token_is_redacted():
    token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwcyJ9.c2lnbmF0dXJl"
    register(token)
    for text in (f"Authorization: Bearer {token}", json.dumps({"access_token": token}), token):
        cleaned = scrub(text)
        assert token not in cleaned and "c2lnbmF0dXJl" not in cleaned


def test_unregistered_bearer_token_is_redacted_by_pattern():
    assert scrub("Authorization: Bearer abc.def.ghi-jkl") == "Authorization: Bearer REDACTED"


def test_short_values_are_not_registered():
    register("abc")
    register("  ")
    register(None)
    assert scrub("abc and design") == "abc and design"


@pytest.mark.parametrize(
    "text",
    [
        "HTTP 500 InternalError: The server encountered an internal error. Please retry.",
        # What the decoded-run readings look at: hexadecimal, quoted strings, spaced letters.
        "x-ms-request-id: 1234abcd-1234-5678-9abc-0123456789ab; ETag 0x8DC0123456789AB",
        "00000000: 01bf bf09 dfbf 11ff bf1a 1fbf 223f bf2a  ........ (not a secret)",
        "raised: b'\\x01\\x02\\x03\\x04\\x05\\x06\\x07\\x08\\x09' and 'a quoted message here'",
        "a b c d e f g h i j k l m n o p: 12:34:56:78:9a:bc:de:f0:11:22:33:44",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567 nopqrstuvwxyzabcdefghijklm",
    ],
)
def test_text_without_secrets_is_unchanged(text):
    register(make_signature(9))
    assert scrub(text) == text


def test_the_bytes_a_signature_stands_for_are_redacted():
    """The bytes behind a base64 signature (an HMAC digest), in hexadecimal or as Python prints
    them: no spelling of its text matches them."""
    signature = make_signature(10)
    register(signature)
    digest = base64.b64decode(signature)
    for text in (digest.hex(), digest.hex(" ").upper(), f"digest={digest!r}", repr(digest[4:20])):
        assert scrub(text).count("REDACTED") >= 1, text
        assert digest[4:16].hex() not in scrub(text).replace(" ", "").lower()


UNREGISTERED = "Q2xlYW5TaWduYXR1cmVWYWx1ZTAxMjM0NTY3ODlhYmM="
FALLBACK = {
    "sig=": f"?sv=1&sig={UNREGISTERED}&sp=r",
    "SIG=": f"?SIG={UNREGISTERED}",
    "%73ig=": f"?sig=A&%73ig={UNREGISTERED}",
    "sig%3D": f"https%3A%2F%2Fa%2Fc%3Fsig%3D{quote(UNREGISTERED, safe='')}",
    "sig%253D": f"sig%253D{quote(quote(UNREGISTERED, safe=''), safe='')}",
    "sig\\u003d": f'"?sig\\u003d{UNREGISTERED}"',
    "sig\\\\u003d": f'"?sig\\\\u003d{UNREGISTERED}"',
    "sig&#61;": f"?sig&#61;{UNREGISTERED}",
    "sig&#x3d;": f"?sig&#x3d;{UNREGISTERED}",
    "sig&amp;#61;": f"?sig&amp;#61;{UNREGISTERED}",
    "sig: value": f"sig: {UNREGISTERED}",
    "sig = value": f"sig = {UNREGISTERED}",
    'JSON "sig": "value"': json.dumps({"sig": UNREGISTERED}),
    "value with escaped slashes": "sig=" + UNREGISTERED.replace("2", "\\/"),
    "value with HTML entities": "sig=" + UNREGISTERED.replace("=", "&#61;").replace("2", "&#43;"),
    "AccountKey=": f"AccountName=a;AccountKey={UNREGISTERED};",
    "AccountKey%3D": f"AccountKey%3D{UNREGISTERED}",
    "sig in octal escapes": f"?\\163\\151\\147\\075{UNREGISTERED}",
    "sig&#00000115;": f"?&#00000115;ig&#0000061;{UNREGISTERED}",
}


@pytest.mark.parametrize("text", FALLBACK.values(), ids=list(FALLBACK))
def test_unregistered_signatures_are_redacted_by_pattern(text):
    cleaned = scrub(text)
    assert UNREGISTERED[:16] not in cleaned and "REDACTED" in cleaned
    assert scrub(cleaned) == cleaned


def test_scrub_obj_walks_results():
    signature = make_signature(11)
    register(signature)
    result = {
        "msg": f"failed: {signature}",
        signature: [signature, (quote(signature, safe=""), 3)],
        "n": 1,
        "ok": True,
        "none": None,
    }
    cleaned = scrub_obj(result)
    assert signature not in json.dumps(cleaned)
    assert cleaned["n"] == 1 and cleaned["ok"] is True and cleaned["none"] is None
    assert isinstance(cleaned["msg"], str) and isinstance(list(cleaned.values())[1][1], tuple)


def test_guard_module_scrubs_every_exit():
    signature = make_signature(12)
    register(signature)
    calls = []

    class Module:
        def exit_json(self, **kwargs):
            calls.append(("exit", kwargs))

        def fail_json(self, **kwargs):
            calls.append(("fail", kwargs))

        def warn(self, text):
            calls.append(("warn", text))

    module = guard_module(Module())
    module.warn(f"warning {quote(signature, safe='')}")
    module.fail_json(msg=f"failed {signature}", nested={"a": [signature]})
    module.exit_json(changed=True, text=html.escape(signature))
    assert len(calls) == 3
    assert signature[:16] not in json.dumps(calls)


def test_registry_survives_concurrent_registration():
    import threading

    values = [make_signature(100 + i) for i in range(20)]
    threads = [threading.Thread(target=register, args=(value,)) for value in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = " ".join(values)
    assert all(value not in scrub(text) for value in values)
    assert len(_redact._REGISTRY._values) == 20
