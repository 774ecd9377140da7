"""Fail when any file under the given directories holds a SAS signature or a storage account key.

Usage: python tests/scan_secrets.py DIR [DIR ...]

The test suite keeps every stage's output (pytest, ansible-playbook -vvv, module results, status
documents and logs copied there by the tests; the fault suite's under tests/output/faults) under
tests/output; this scan is its last stage. It finds a signature however it was written: plain
(`sig=...`), percent-encoded once or twice (a SAS nested in another URL: `sig%3D...`), JSON- or
backslash-escaped (`sig\\u003d...`), an Authorization `SharedKey <account>:<signature>`, a
connection string's `AccountKey=...`, or a bare 64-byte account key in base64.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# What separates "sig" from its value: =, %3D, %253D, \u003d (any case).
_EQUALS = r"(?:=|%3[dD]|%253[dD]|\\u003[dD])"
# A signature is base64, maybe percent-encoded: at least 16 such characters. Ours are redacted.
SAS_SIGNATURE = re.compile(rf"(?i)sig{_EQUALS}(?!REDACTED)([A-Za-z0-9%+/=]{{16,}})")
ACCOUNT_KEY = re.compile(rf"(?i)AccountKey{_EQUALS}(?!REDACTED)([A-Za-z0-9+/=%]{{40,}})")
SHARED_KEY = re.compile(r"SharedKey(?:Lite)? [^\s:\"']+:(?!REDACTED)([A-Za-z0-9+/]{20,}=*)")
# A storage account key is 64 random bytes: 88 base64 characters ending in "==".
BARE_KEY = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{86}==(?![A-Za-z0-9+/=])")
# Azurite's well-known development key: it must not show up in anything we print either.
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
PATTERNS = (SAS_SIGNATURE, ACCOUNT_KEY, SHARED_KEY, BARE_KEY)


def scan_text(text: str) -> list[str]:
    """Return the (shortened) secrets found in text, each once per place it appears."""
    found: dict[int, str] = {}
    for pattern in PATTERNS:
        for match in pattern.finditer(text):
            found.setdefault(match.start(), match.group(0)[:12] + "…")
    return [found[start] for start in sorted(found)]


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
