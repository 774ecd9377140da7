# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""The secret registry: every secret the process knows is redacted by its value, in any spelling.

A pattern such as ``sig=<value>`` misses what a server echoes back in another spelling (the
value twice percent-encoded, JSON- or HTML-escaped, after ``sig: ``, in base64, cut short). So
every secret is registered the moment it is parsed, and ``scrub()`` replaces it wherever and
however it appears. The pattern-based fallback (``sig=``, ``AccountKey=``, ``SharedKey``, in
their encoded spellings) still catches secrets that were never registered.

API (also for other module_utils, e.g. bearer tokens of Resource Manager calls)::

    register(value)          # a secret: SAS signature, SAS query string, account key, token
    scrub(text) -> str       # text with every registered secret and every sig=-like value
                             # replaced by REDACTED
    scrub_obj(obj) -> obj    # the same over dicts, lists, tuples (keys too) and strings
    guard_module(module)     # an AnsibleModule whose exit_json/fail_json/warn scrub first

Register a bearer token as soon as it is received (``register(token)``), before it is used or
logged; values shorter than ``MIN_SECRET_LENGTH`` are ignored (they would blank common words).

Spellings matched for each registered value, also mixed within one value: raw; percent-encoded
any number of times, upper- or lower-case hex; ``+`` or ``%20`` for a blank; JSON ``\\u00XX``
escapes and ``\\/`` (behind any number of backslashes); HTML ``&#NN;``, ``&#xNN;``, ``&amp;``,
``&lt;``, ``&gt;``, ``&quot;`` (also ``&amp;#61;``); base64 and URL-safe base64 of the value and
of any text containing it (3 alignments); and any run of base64 or percent-encoded characters
that holds 12 consecutive characters of a registered signature (a value cut short).

Everything here is compiled when a secret is registered, never while filesystems are frozen.
"""

from __future__ import annotations

import base64
import re
import threading
from re import Pattern
from typing import Any, Callable
from urllib.parse import unquote

REDACTED = "REDACTED"
MIN_SECRET_LENGTH = 6
# A run of at least this many characters of a registered value counts as a leak of it.
FRAGMENT_LENGTH = 12
# Values up to this long (signatures, keys, tokens) are matched even with every character
# encoded; in longer ones (query strings) letters and digits are matched as they are.
_FULL_SPELLING_LENGTH = 128

# --- the pattern-based fallback: secrets nobody registered ------------------------------------

# "sig" in any spelling: s/i/g raw or percent-encoded (%73ig), any case.
_SIG_NAME = r"(?:s|%(?:25)*7[3])(?:i|%(?:25)*6[9])(?:g|%(?:25)*6[7])"
# What separates a name from its value: =, %3D (any depth), \u003d, &#61;, &#x3d;, ": ", ":".
_SEPARATOR = (
    r"(?:\s*=\s*|%(?:25)*3d|\\+u003d|&(?:amp;)*#0*61;|&(?:amp;)*#x0*3d;"
    r"|\"?\s*:\s*\"?|\s*\\+\"\s*:\s*\\+\")"
)
# A value ends at the first character that cannot belong to it; escaped slashes and numeric
# HTML entities (other than &) can.
_VALUE = r"(?:\\+/|&(?:amp;)*#(?!0*38;|x0*26;)x?[0-9a-f]+;|[^&\s\"'<>\\,;)\]}])+"
_FALLBACK: tuple[tuple[Pattern[str], str], ...] = (
    (
        re.compile(
            rf"(?i)(?:(?<![a-z0-9])|(?<=%26)|(?<=%3F)|(?<=%2526)|(?<=%253F))"
            rf"({_SIG_NAME}{_SEPARATOR})(?!REDACTED)({_VALUE})"
        ),
        rf"\g<1>{REDACTED}",
    ),
    (
        re.compile(rf"(?i)\b(AccountKey{_SEPARATOR})(?!REDACTED)({_VALUE})"),
        rf"\g<1>{REDACTED}",
    ),
    (re.compile(r"(?i)\b(SharedKey(?:Lite)?\s+[^\s:\"']+:)([^\s\"'<>\\,;]+)"), rf"\g<1>{REDACTED}"),
    (re.compile(r"(?i)\b(Bearer\s+)(?!REDACTED)([A-Za-z0-9._~+/=-]{8,})"), rf"\g<1>{REDACTED}"),
)

# A run that may hold a piece of a signature, in any of its spellings.
_RUN = re.compile(r"(?:[A-Za-z0-9+/=_-]|%(?:25)*[0-9A-Fa-f]{2}|\\+/|\\+u00[0-9A-Fa-f]{2}){12,}")
_JSON_ESCAPE = re.compile(r"\\+u00([0-9A-Fa-f]{2})|\\+(/)")

_HTML_NAMED = {"&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "apos"}


def _hex_class(code: int) -> str:
    return "".join(f"[{d.upper()}{d.lower()}]" if d.isalpha() else d for d in f"{code:02X}")


def _char_pattern(char: str) -> str:
    """Every spelling of one character: raw, %XX (any depth), \\u00XX, &#NN;, &#xNN;, ..."""
    alternatives = [re.escape(char)]
    code = ord(char)
    if code < 0x100:
        hexa = _hex_class(code)
        alternatives += [
            f"%(?:25)*{hexa}",
            rf"\\+u00{hexa}",
            f"&(?:amp;)*#0*{code};",
            f"&(?:amp;)*#[xX]0*{hexa};",
        ]
    if char in _HTML_NAMED:
        alternatives.append(f"&(?:amp;)*{_HTML_NAMED[char]};")
    if char in '/"\\':
        alternatives.append(r"\\+" + re.escape(char))
    if char == " ":
        alternatives.append(r"\+")
    if char == "+":
        alternatives.append(" ")  # a form decoder turned it into a blank
    return "(?:" + "|".join(alternatives) + ")"


def _light_pattern(char: str) -> str:
    return re.escape(char) if char.isalnum() and char.isascii() else _char_pattern(char)


def _base64_variants(value: str) -> list[str]:
    """The base64 text that only `value` determines, at each of the 3 byte alignments."""
    data = value.encode("utf-8", "surrogatepass")
    variants = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data).decode()
        start, end = -(-4 * shift // 3), (8 * (shift + len(data))) // 6
        piece = encoded[start:end]
        if len(piece) >= MIN_SECRET_LENGTH:
            variants += [piece, piece.replace("+", "-").replace("/", "_")]
    return variants


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: list[str] = []
        # One compiled pattern per value, longest value first: registering compiles one value.
        self._patterns: tuple[tuple[int, Pattern[str]], ...] = ()
        self._fragments: frozenset[str] = frozenset()

    def register(self, value: str, fragments: bool) -> None:
        if not isinstance(value, str) or len(value.strip()) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            if value in self._values:
                return
            self._values.append(value)
            # A long value (a whole query string) keeps its letters and digits literal: its
            # pattern would otherwise cost tens of milliseconds to compile.
            spell = _char_pattern if len(value) <= _FULL_SPELLING_LENGTH else _light_pattern
            spellings = ["".join(spell(char) for char in value)]
            spellings += [re.escape(piece) for piece in _base64_variants(value)]
            pattern = re.compile("|".join(spellings))
            self._patterns = tuple(
                sorted((*self._patterns, (len(value), pattern)), key=lambda item: -item[0])
            )
            if fragments:
                grams = {value[i : i + FRAGMENT_LENGTH] for i in range(len(value))}
                self._fragments = self._fragments | {g for g in grams if len(g) == FRAGMENT_LENGTH}

    def scrub(self, text: str) -> str:
        patterns, fragments = self._patterns, self._fragments
        for _length, pattern in patterns:
            text = pattern.sub(REDACTED, text)
        if fragments:
            text = _RUN.sub(lambda match: _scrub_run(match.group(0), fragments), text)
        return text

    def clear(self) -> None:
        with self._lock:
            self._values, self._patterns, self._fragments = [], (), frozenset()


def _decoded(run: str) -> str:
    """A run with its JSON escapes and (up to three levels of) percent-encoding undone."""
    run = _JSON_ESCAPE.sub(lambda m: m.group(2) or chr(int(m.group(1), 16)), run)
    for _round in range(3):
        decoded = unquote(run)
        if decoded == run:
            break
        run = decoded
    return run


def _scrub_run(run: str, fragments: frozenset[str]) -> str:
    plain = _decoded(run)
    for start in range(len(plain) - FRAGMENT_LENGTH + 1):
        if plain[start : start + FRAGMENT_LENGTH] in fragments:
            return REDACTED
    return run


_REGISTRY = _Registry()


def register(value: str | None, *, fragments: bool = True) -> None:
    """Remember a secret so that `scrub()` redacts it by its value, in every spelling.

    `fragments` (default) also redacts any 12-character piece of it; pass False for values that
    hold public text as well (a whole SAS query string with its `sv=` and `sp=`).
    """
    if value:
        _REGISTRY.register(value, fragments)


def forget_all() -> None:
    """Tests only: start again with an empty registry."""
    _REGISTRY.clear()


def scrub(text: str) -> str:
    """Return `text` with every registered secret and every `sig=`-like value redacted."""
    if not isinstance(text, str) or not text:
        return text
    # The patterns first: a registered value that holds "sig=" must not hide the context they
    # need (a registered query "sv=1&sig=" would otherwise leave the value after it).
    for pattern, replacement in _FALLBACK:
        text = pattern.sub(replacement, text)
    return _REGISTRY.scrub(text)


def scrub_obj(obj: Any) -> Any:
    """`scrub()` every string in a result: dict keys and values, lists, tuples."""
    if isinstance(obj, str):
        return scrub(obj)
    if isinstance(obj, dict):
        return {scrub_obj(key): scrub_obj(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(scrub_obj(item) for item in obj)
    return obj


def _scrubbing(function: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return function(*scrub_obj(args), **scrub_obj(kwargs))

    return call


def guard_module(module: Any) -> Any:
    """Make an AnsibleModule scrub everything it prints: exit_json, fail_json, warn, deprecate.

    The one place where text leaves a module process; call it right after creating the module.
    """
    for name in ("exit_json", "fail_json", "warn", "deprecate"):
        if hasattr(module, name):
            setattr(module, name, _scrubbing(getattr(module, name)))
    return module
