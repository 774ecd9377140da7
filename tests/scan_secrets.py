"""Fail when any file under the given directories holds a SAS signature or a storage account key.

Usage: python tests/scan_secrets.py DIR [DIR ...]

The test suite keeps every stage's output (pytest, ansible-playbook -vvv, module results, status
documents and logs copied there by the tests; the fault suite's under tests/output/faults) under
tests/output; this scan is its last stage. It finds a signature however it was written: plain
(`sig=...`, `SIG=`, `%73ig=`), percent-encoded at any depth (a SAS nested in another URL:
`sig%3D...`, `sig%253D...`), JSON- or backslash-escaped (`sig\\u003d...`, `\\/`), HTML-escaped
(`sig&#61;`, `sig&#x3d;`, `&amp;`), after `sig: ` or `"sig": "`, `sig=` inside base64 text, an
Authorization `SharedKey <account>:<signature>`, a connection string's `AccountKey=...`, or a bare
64-byte account key in base64. Tests that know the signatures they handed out pass them to
`scan_text(text, known=...)`, which also finds each by value in every spelling and any piece of
12 characters of it.
"""

from __future__ import annotations

import base64
import html
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, unquote

# "sig" as a server may spell it: plain or percent-encoded letters (%73ig), any case.
_SIG = r"(?:s|%(?:25)*73)(?:i|%(?:25)*69)(?:g|%(?:25)*67)"
# What separates a name from its value: =, %3D, %253D, \u003d (any backslashes), &#61;, &#x3d;
# (also &amp;#61;), ": ", " = ", and JSON's ":" with its quotes.
_EQUALS = (
    r"(?:\s*=\s*|%(?:25)*3[dD]|\\+u003[dD]|&(?:amp;)*#0*61;|&(?:amp;)*#[xX]0*3[dD];"
    r"|\"?\s*:\s*\"?|\\+\"\s*:\s*\\+\")"
)
# A signature is base64, maybe percent-encoded or escaped: at least 16 such characters.
_VALUE = r"(?:[A-Za-z0-9+/=]|%(?:25)*[0-9A-Fa-f]{2}|\\+/|&(?:amp;)*#x?[0-9A-Fa-f]+;)"
# "sig" starts a name: after no letter, or after a percent-encoded character (%26, %253F).
_START = r"(?:(?<![a-z])|(?<=%[0-9a-f]{2})|(?<=%25[0-9a-f]{2})|(?<=%2525[0-9a-f]{2}))"
SAS_SIGNATURE = re.compile(rf"(?i){_START}{_SIG}{_EQUALS}(?!REDACTED)({_VALUE}{{16,}})")
ACCOUNT_KEY = re.compile(rf"(?i)AccountKey{_EQUALS}(?!REDACTED)([A-Za-z0-9+/=%]{{40,}})")
SHARED_KEY = re.compile(r"SharedKey(?:Lite)? [^\s:\"']+:(?!REDACTED)([A-Za-z0-9+/]{20,}=*)")
# A storage account key is 64 random bytes: 88 base64 characters ending in "==".
BARE_KEY = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{86}==(?![A-Za-z0-9+/=])")
# "sig=" inside base64 text, at each of the 3 alignments, followed by more base64.
SIG_IN_BASE64 = re.compile(r"(?:c2lnP|NpZz|zaWc9)[A-Za-z0-9+/]{20,}")
# Azurite's well-known development key: it must not show up in anything we print either.
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
PATTERNS = (SAS_SIGNATURE, ACCOUNT_KEY, SHARED_KEY, BARE_KEY, SIG_IN_BASE64)
# A piece this long of a known secret counts as a leak of it.
KNOWN_PIECE = 12


def _spellings(value: str) -> set[str]:
    """A known secret as it may be written: raw, percent-encoded (once, twice, lower-case hex),
    JSON-escaped, HTML-escaped, base64 at each alignment, and its pieces of KNOWN_PIECE chars."""
    once = quote(value, safe="")
    found = {value, once, quote(once, safe=""), once.lower(), value.replace("/", "\\/")}
    found.add(value.replace("=", "&#61;").replace("/", "&#47;").replace("+", "&#43;"))
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + value.encode()).decode()
        found.add(encoded[-(-4 * shift // 3) : (8 * (shift + len(value))) // 6])
    pieces = {value[i : i + KNOWN_PIECE] for i in range(len(value) - KNOWN_PIECE + 1)}
    return {text for text in found | pieces if len(text) >= KNOWN_PIECE}


def scan_text(text: str, known: Iterable[str] = ()) -> list[str]:
    """Return the (shortened) secrets found in text, each once per place it appears.

    `known` are secret values a test handed out (SAS signatures): each is looked for in every
    spelling of `_spellings()`, besides the patterns that find any `sig=`-like value.
    """
    found: dict[int, str] = {}
    for pattern in PATTERNS:
        for match in pattern.finditer(text):
            found.setdefault(match.start(), match.group(0)[:12] + "…")
    decoded = _decoded(text)
    for value in known:
        for spelling in _spellings(value):
            for where in (text, decoded):
                start = where.find(spelling)
                if start >= 0:
                    found.setdefault(-1 - start, f"known secret {spelling[:6]}…")
    return [found[start] for start in sorted(found, key=abs)]


def _decoded(text: str) -> str:
    """Text with percent-encoding (three levels), JSON \\u00XX and HTML entities undone."""
    text = re.sub(r"\\+u00([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text)
    text = re.sub(r"\\+/", "/", text)
    for _round in range(3):
        text = unquote(html.unescape(text))
    return text


def main(directories: list[str]) -> int:
    files = leaks = 0
    for directory in directories:
        for path in sorted(Path(directory).rglob("*")):
            if not path.is_file():
                continue
            files += 1
            text = path.read_bytes().decode("utf-8", errors="replace")
            for hit in scan_text(text):
                leaks += 1
                print(f"secret found in {path}: {hit}")
    print(f"secrets scan: {files} files, {leaks} secrets found")
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["tests/output"]))
