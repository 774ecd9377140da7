"""Fail when any file under the given directories holds a SAS signature or a storage account key.

Usage: python tests/scan_secrets.py DIR [DIR ...]

The test suite keeps every stage's output (pytest, ansible-playbook -vvv, module results, status
documents and logs copied there by the tests) under tests/output; this scan is its last stage.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# A SAS signature is base64 (often percent-encoded): sig=<value>. Ours are always redacted.
SAS_SIGNATURE = re.compile(r"sig=(?!REDACTED)([A-Za-z0-9%+/=]{16,})")
ACCOUNT_KEY = re.compile(r"AccountKey=(?!REDACTED)([A-Za-z0-9+/=]{40,})")
# Azurite's well-known development key: it must not show up in anything we print either.
DEV_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
PATTERNS = (SAS_SIGNATURE, ACCOUNT_KEY, re.compile(re.escape(DEV_KEY)))


def scan_text(text: str) -> list[str]:
    """Return the (shortened) secrets found in text."""
    hits = []
    for pattern in PATTERNS:
        hits.extend(match.group(0)[:12] + "…" for match in pattern.finditer(text))
    return hits


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
