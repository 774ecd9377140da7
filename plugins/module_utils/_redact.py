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
    scrubbing_module(AnsibleModule, **spec)  # the same, also for its constructor's errors

Register a bearer token as soon as it is received (``register(token)``), before it is used or
logged; values shorter than ``MIN_SECRET_LENGTH`` are ignored (they would blank common words).

Spellings matched for each registered value, also mixed within one value, in any letter case:
raw; percent-encoded any number of times, upper- or lower-case hex, also ``%u00XX``; ``+`` or
``%20`` for a blank, and a blank in any spelling for ``+`` (a form decoder's work); ``-`` and
``_`` for ``+`` and ``/`` (base64url); the ``=`` padding left off; JSON ``\\u00XX``, C ``\\xXX``
and ``\\U000000XX`` escapes, and a backslash (in any spelling) before any character that is not
a letter or digit; HTML ``&#NN;``, ``&#xNN;`` (the ``;`` optional), ``&amp;``, ``&lt;``,
``&gt;``, ``&quot;`` (also ``&amp;#61;``); quoted-printable ``=XX``; base64 and URL-safe base64
of the value and of any text containing it (3 alignments). Besides, any run of base64 or
encoded characters that, decoded, holds 12 consecutive characters of a registered value (a
value cut short) or that is itself a piece of 8 or more characters of one (a value split across
two lines or two headers) is redacted. A run is decoded through every reversible spelling at
once rather than by one pattern per spelling: escapes of any kind (also octal ``\\163`` and
``\\u{73}``), NULs and zero-width characters between characters (UTF-16), fullwidth forms,
characters set apart by blanks or colons, hexadecimal and base32 of the text, rot13 and the
text reversed; a base64 value (a signature, a key) is also found by the hexadecimal of the bytes
it encodes (``hmac.digest().hex()``, ``repr()`` of those bytes).

Everything here is compiled when a secret is registered, never while filesystems are frozen.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import threading
import unicodedata
from re import Pattern
from typing import Any, Callable
from urllib.parse import unquote

REDACTED = "REDACTED"
MIN_SECRET_LENGTH = 6
# A run of at least this many characters of a registered value counts as a leak of it.
FRAGMENT_LENGTH = 12
# A whole run (between characters that cannot belong to a secret) this long that is a piece of
# a registered value is a leak too: what is left of a value split across lines or headers.
PIECE_LENGTH = 8
# Values up to this long (signatures, keys, tokens) are matched even with every character
# encoded; in longer ones (query strings) letters and digits are matched as they are.
_FULL_SPELLING_LENGTH = 128

# Every repetition in the patterns below is bounded: an unbounded one (a run of 64 KiB of
# backslashes in an error body) costs quadratic time or worse, with the GIL held.

# --- the pattern-based fallback: secrets nobody registered ------------------------------------


def _letter(char: str) -> str:
    """A letter of a parameter name as a server may spell it (any case, see _FALLBACK)."""
    code = ord(char)
    return (
        rf"(?:{char}|%(?:25){{0,3}}{code:02x}|%u00{code:02x}|\\{{1,8}}(?:u00|x){code:02x}"
        rf"|\\{{1,8}}0?{code:o}|&(?:amp;){{0,3}}#0{{0,10}}{code};?|&(?:amp;){{0,3}}#x0{{0,10}}{code:02x};?)"
    )


# "sig" in any spelling: each letter raw, percent-encoded (%73ig), JSON- or HTML-escaped, any case.
_SIG_NAME = "".join(_letter(char) for char in "sig")
# What separates a name from its value: =, %3D (any depth), \u003d, \x3d, &#61;, &#x3d;, ": ".
_SEPARATOR = (
    r"(?:\s*=\s*|%(?:25){0,3}3d|%u003d|\\{1,8}(?:u00|x)3d|\\{1,8}0?75"
    r"|&(?:amp;){0,3}#0{0,10}61;?|&(?:amp;){0,3}#x0{0,10}3d;?"
    r"|\"?\s*:\s*\"?|\s*\\{1,8}\"\s*:\s*\\{1,8}\")"
)
# A value ends at the first character that cannot belong to it; escaped slashes and numeric
# HTML entities (other than &) can.
_VALUE = r"(?:\\{1,8}/|&(?:amp;){0,3}#(?!0{0,10}38;|x0{0,10}26;)x?[0-9a-f]+;|[^&\s\"'<>\\,;)\]}])+"
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
    # A JSON Web Token (what Entra ID and the metadata service hand out), wherever it stands.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}"), REDACTED),
)

# What may stand between the characters of a value without being one: NUL (UTF-16 read as
# bytes), the soft hyphen, zero-width characters.
_FILLERS = "\x00\u00ad\u200b\u200c\u200d\u2060\ufeff"
_DROP_FILLERS = str.maketrans("", "", _FILLERS)
# One character of a value in any spelling: raw (also fullwidth), percent-encoded, escaped (JSON,
# C hex or octal, \\u{...}), an HTML entity; or a filler.
_UNIT = (
    rf"[A-Za-z0-9+/=_-]|[\uff01-\uff5e{_FILLERS}]|%(?:25){{0,3}}[0-9A-Fa-f]{{2}}|%u[0-9A-Fa-f]{{4}}"
    r"|\\{1,8}(?:/|u[0-9A-Fa-f]{4}|u\{[0-9A-Fa-f]{1,6}\}|x[0-9A-Fa-f]{2}|U000[0-9A-Fa-f]{5}|[0-7]{1,3})"
    r"|&(?:amp;){0,3}#(?:[0-9]{1,12}|[xX][0-9A-Fa-f]{1,12});?"
)
# A run that may hold a piece of a secret, in any of its spellings.
_RUN = re.compile(rf"(?:{_UNIT}){{{PIECE_LENGTH},}}")
# Characters, or pairs of hexadecimal digits, set apart by a blank or a colon: "a b c", "61:62".
_SPACER = r"[ \t:]"
_SPACED_RUN = re.compile(rf"(?:(?:{_UNIT}){{1,2}}{_SPACER}){{{PIECE_LENGTH},}}(?:{_UNIT}){{0,2}}")
_SPACERS = re.compile(_SPACER)
# Bytes as Python prints them (repr() of a signature's bytes): b'\x01\xbf\t?*'; the "b" is
# optional, it may have gone with a "sig=" redacted before.
_BYTES_LITERALS = (
    re.compile(rf"'((?:\\.|[^'\\\r\n]){{{PIECE_LENGTH},}})'"),
    re.compile(rf'"((?:\\.|[^"\\\r\n]){{{PIECE_LENGTH},}})"'),
)
_PYTHON_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|[0-7]{1,3}|.)")
_PYTHON_NAMED = {"t": "\t", "n": "\n", "r": "\r"}
_ESCAPE = re.compile(
    r"\\{1,8}(?:u([0-9A-Fa-f]{4})|u\{([0-9A-Fa-f]{1,6})\}|x([0-9A-Fa-f]{2})|U000([0-9A-Fa-f]{5})"
    r"|([0-7]{1,3})|(/))|%u([0-9A-Fa-f]{4})|&#(?:([0-9]{1,12})|[xX]([0-9A-Fa-f]{1,12}));?"
    r"|&(amp|lt|gt|quot|apos);"
)
# Stretches that may be a value's bytes in hexadecimal ("61:62", "6162", "01bf bf09" as xxd
# prints them) or in base32: anywhere in a text, and in a decoded run.
_HEX_RUN = re.compile(rf"(?:[0-9A-Fa-f]{{2}}[\s:-]?){{{FRAGMENT_LENGTH},}}")
_BASE32_RUN = re.compile(
    rf"(?:[A-Z2-7]{{{2 * FRAGMENT_LENGTH},}}|[a-z2-7]{{{2 * FRAGMENT_LENGTH},}})=*"
)
_NAMED_CHARS = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
# base64url and a form decoder's blank, folded into base64 to compare pieces.
_FOLD = str.maketrans({"-": "+", "_": "/", " ": "+"})

_HTML_NAMED = {"&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "apos"}


def _hex_class(code: int) -> str:
    return "".join(f"[{d.upper()}{d.lower()}]" if d.isalpha() else d for d in f"{code:02X}")


def _encoded(char: str) -> list[str]:
    """The escaped spellings of one character: %XX (any depth), \\u00XX, \\xXX, &#NN;, ..."""
    code = ord(char)
    if code >= 0x100:
        return []
    hexa = _hex_class(code)
    spellings = [
        f"%(?:25){{0,3}}{hexa}",
        f"%u00{hexa}",
        rf"\\{{1,8}}(?:u00|x|U000000){hexa}",
        f"&(?:amp;){{0,3}}#0{{0,4}}{code};?",
        f"&(?:amp;){{0,3}}#x0{{0,4}}{hexa};?",
        f"=(?:3D){{0,3}}{hexa}",  # quoted-printable
    ]
    if char in _HTML_NAMED:
        spellings.append(f"&(?:amp;){{0,3}}{_HTML_NAMED[char]};")
    return spellings


# A backslash in any spelling, as it may stand before an escaped character (\\/, &#92;/).
_BACKSLASH = "(?:" + "|".join([r"\\{1,8}", *_encoded("\\")]) + ")?"
# What else a character may have become: a form decoder's blank for "+", base64url's - and _.
_STAND_INS = {"+": [" ", *_encoded(" "), "-"], "/": ["_"], " ": [r"\+"]}


def _char_pattern(char: str) -> str:
    """Every spelling of one character: raw, encoded, escaped, what stands in for it."""
    # The raw character last: "=" must not end a match that "=3D" would carry on.
    alternatives = [*_encoded(char), *_STAND_INS.get(char, []), re.escape(char)]
    pattern = "(?:" + "|".join(alternatives) + ")"
    return pattern if char.isalnum() else _BACKSLASH + pattern


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
        # (whole, length, pattern): secrets themselves (whole=False) are redacted before the
        # fallback patterns, texts that hold public parts too (a query) after them.
        self._patterns: tuple[tuple[bool, int, Pattern[str]], ...] = ()
        self._marks = _Marks()

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
            body = value.rstrip("=")
            padding = "".join(f"(?:{spell(char)})?" for char in value[len(body) :])
            spellings = ["".join(spell(char) for char in body) + padding]
            spellings += [re.escape(piece) for piece in _base64_variants(value)]
            # Any letter case: a server or a proxy that upper-cases what it echoes still leaks.
            pattern = re.compile("|".join(spellings), re.IGNORECASE)
            self._patterns = tuple(
                sorted(
                    (*self._patterns, (not fragments, len(value), pattern)),
                    key=lambda item: -item[1],
                )
            )
            if fragments:
                self._marks = self._marks.adding(value)

    def scrub_values(self, text: str, *, whole: bool) -> str:
        for is_whole, _length, pattern in self._patterns:
            if is_whole == whole:
                text = pattern.sub(REDACTED, text)
        return text

    def scrub_runs(self, text: str) -> str:
        """Runs of characters that, decoded, hold a piece of a registered value."""
        marks = self._marks
        if marks.pieces:
            text = _RUN.sub(lambda match: marks.redacted(match.group(0)), text)
            text = _SPACED_RUN.sub(
                lambda match: marks.redacted(match.group(0), _SPACERS.sub("", match.group(0))),
                text,
            )
            text = _HEX_RUN.sub(lambda match: marks.redacted(match.group(0)), text)
            for literal in _BYTES_LITERALS:
                text = literal.sub(
                    lambda match: marks.redacted(
                        match.group(0), _python_literal_hex(match.group(1))
                    ),
                    text,
                )
        return text

    def clear(self) -> None:
        with self._lock:
            self._values, self._patterns, self._marks = [], (), _Marks()


class _Marks:
    """What betrays a registered value in a decoded run: its folded pieces of FRAGMENT_LENGTH
    characters, the folded values themselves (for shorter pieces), and, for a base64 value, the
    hexadecimal pieces of the bytes it encodes. Immutable: a scrub reads one consistent set."""

    def __init__(
        self,
        fragments: frozenset[str] = frozenset(),
        pieces: tuple[str, ...] = (),
        byte_fragments: frozenset[str] = frozenset(),
    ) -> None:
        self.fragments, self.pieces, self.byte_fragments = fragments, pieces, byte_fragments

    def adding(self, value: str) -> _Marks:
        folded = _folded(value)
        hexa = _encoded_bytes(value).hex()
        return _Marks(
            self.fragments | _grams(folded, FRAGMENT_LENGTH),
            (*self.pieces, folded),
            self.byte_fragments | _grams(hexa, 2 * FRAGMENT_LENGTH),
        )

    def redacted(self, run: str, spelt: str | None = None) -> str:
        """REDACTED if `run` (read as `spelt`) betrays a registered value, else `run` as it is."""
        return REDACTED if self._found_in(run if spelt is None else spelt) else run

    def _found_in(self, run: str) -> bool:
        for kind, reading in _readings(run):
            if kind == "bytes":
                if _holds_gram(reading, self.byte_fragments, 2 * FRAGMENT_LENGTH):
                    return True
            elif (
                len(reading) >= PIECE_LENGTH and any(reading in value for value in self.pieces)
            ) or (_holds_gram(reading, self.fragments, FRAGMENT_LENGTH)):
                return True
        return False


def _grams(text: str, length: int) -> frozenset[str]:
    return frozenset(text[i : i + length] for i in range(len(text) - length + 1))


def _holds_gram(text: str, grams: frozenset[str], length: int) -> bool:
    # Slices by map(): this runs for every run of every text scrubbed.
    count = len(text) - length + 1
    return count > 0 and not grams.isdisjoint(
        map(text.__getitem__, map(slice, range(count), range(length, length + count)))
    )


def _encoded_bytes(value: str) -> bytes:
    """The bytes a base64 (or base64url) value stands for; none for any other value."""
    if not re.fullmatch(r"[A-Za-z0-9+/_-]{16,}={0,2}", value):
        return b""
    body = value.rstrip("=").translate(_FOLD)
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        return b""


def _folded(text: str) -> str:
    """Text as pieces of values are compared: lower case, base64url and blanks as base64."""
    return text.translate(_FOLD).lower()


def _unescaped(match: re.Match) -> str:
    json, brace, c_hex, long_hex, octal, slash, percent_u, decimal, html_hex, named = match.groups()
    if slash or named:
        return slash or _NAMED_CHARS[named]
    if octal or decimal:
        code = int(octal, 8) if octal else int(decimal)
    else:
        code = int(json or brace or c_hex or long_hex or percent_u or html_hex, 16)
    return chr(code) if code <= 0x10FFFF else ""


def _decoded(run: str) -> str:
    """A run with its escapes, HTML entities, (up to three levels of) percent-encoding and
    fillers undone. Percent-encoded bytes become characters one for one (Latin-1), so that the
    bytes of a signature are still there to compare.

    By bounded patterns of our own: html.unescape() fails on an entity of 5000 digits.
    """
    for _round in range(3):
        decoded = unquote(_ESCAPE.sub(_unescaped, run), encoding="latin-1")
        if decoded == run:
            break
        run = decoded
    return run.translate(_DROP_FILLERS)


def _python_literal_hex(body: str) -> str:
    """The bytes of a Python bytes literal's body, in hexadecimal (read as such by _readings)."""

    def char(match: re.Match) -> str:
        escape = match.group(1)
        if escape[0] == "x" and len(escape) == 3:
            return chr(int(escape[1:], 16))
        if escape[0] in "01234567":
            return chr(int(escape, 8) & 0xFF)
        return _PYTHON_NAMED.get(escape, escape)

    return _PYTHON_ESCAPE.sub(char, body).encode("latin-1", "replace").hex()


def _readings(run: str):
    """("text", folded) and ("bytes", hexadecimal) readings of a run, one per way a value may
    have been spelt: as it is (fullwidth forms folded by NFKC), rot13, reversed, and what its
    hexadecimal or base32 stretches decode to."""
    plain = _decoded(run)
    # Escapes undone may have spelt bytes (%FB, \xfb) that are no text.
    if plain != run and max(plain, default="") <= "\xff":
        yield "bytes", plain.encode("latin-1").hex()
    text = unicodedata.normalize("NFKC", plain)
    for reading in (text, codecs.encode(text, "rot13"), text[::-1]):
        yield "text", _folded(reading)
    for data in _binary_stretches(text):
        yield "bytes", data.hex()
        yield "text", _folded(data.decode("latin-1"))


def _binary_stretches(text: str):
    """The bytes of each hexadecimal or base32 stretch, at every alignment: a letter before the
    stretch (``x`` in ``x=6162``) may be taken for its first digit."""
    for match in _HEX_RUN.finditer(text):
        digits = re.sub(r"[\s:-]", "", match.group(0))
        for start in (0, 1):
            yield bytes.fromhex(digits[start : start + (len(digits) - start) // 2 * 2])
    for match in _BASE32_RUN.finditer(text):
        body = match.group(0).rstrip("=")
        for start in range(8):
            try:
                yield base64.b32decode(
                    body[start : start + (len(body) - start) // 8 * 8], casefold=True
                )
            except (binascii.Error, ValueError):
                continue


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
    # Registered secrets first: a pattern stops a value at a character it cannot hold (a blank
    # for "+", a "\\U" escape) and would leave the rest in a spelling no value matches then.
    # Registered whole queries last, so that their public parameters stay readable.
    text = _REGISTRY.scrub_values(text, whole=False)
    for pattern, replacement in _FALLBACK:
        text = pattern.sub(replacement, text)
    text = _REGISTRY.scrub_values(text, whole=True)
    return _REGISTRY.scrub_runs(text)


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


def scrubbing_module(module_class: type, **kwargs: Any) -> Any:
    """`module_class(**kwargs)` (an AnsibleModule) whose every output is scrubbed, also what its
    constructor prints: an argument error shows the raw arguments (`invocation.module_args`),
    and a misspelt option's value is under no `no_log`. Use it in place of the constructor and
    of `guard_module()`.
    """

    class Scrubbing(module_class):
        def exit_json(self, **result: Any) -> None:
            super().exit_json(**self._scrubbed(result))

        def fail_json(self, msg: str, **result: Any) -> None:
            super().fail_json(**self._scrubbed({"msg": msg, **result}))

        def warn(self, warning: str) -> None:
            super().warn(scrub(warning))

        def deprecate(self, msg: str, *args: Any, **more: Any) -> None:
            super().deprecate(scrub(msg), *args, **more)

        def _scrubbed(self, result: dict) -> dict:
            params = getattr(self, "params", None)
            if "invocation" not in result and isinstance(params, dict):
                for name, value in params.items():  # by name: a misspelt access_token
                    if _SECRET_NAME.search(str(name)) and isinstance(value, str):
                        register(value)
                hidden = set(getattr(self, "no_log_values", None) or ())
                result["invocation"] = {"module_args": _echoed(params, hidden)}
            return scrub_obj(result)

    return Scrubbing(**kwargs)


# What Ansible shows for a no_log value; shown here too, because the scrub would otherwise
# change the value before Ansible could recognise and mask it.
_NO_LOG_MARK = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
# An argument echoed back is for reading: a 100 000-character option must not make the result
# (and every job event holding it) that long.
_ECHO_LENGTH = 1024


def _echoed(obj: Any, hidden: set[str]) -> Any:
    """The module's arguments as its result echoes them: no_log values masked, long text cut."""
    if isinstance(obj, str):
        if obj in hidden:
            return _NO_LOG_MARK
        return (
            obj if len(obj) <= _ECHO_LENGTH else f"{obj[:_ECHO_LENGTH]}... ({len(obj)} characters)"
        )
    if isinstance(obj, dict):
        return {key: _echoed(value, hidden) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_echoed(value, hidden) for value in obj]
    return obj


# An option whose name says it holds a secret, known or misspelt.
_SECRET_NAME = re.compile(r"(?i)token|secret|passw|credential|signature|account_?key")


def guard_module(module: Any) -> Any:
    """Make an AnsibleModule scrub everything it prints: exit_json, fail_json, warn, deprecate.

    The one place where text leaves a module process; call it right after creating the module.
    """
    for name in ("exit_json", "fail_json", "warn", "deprecate"):
        if hasattr(module, name):
            setattr(module, name, _scrubbing(getattr(module, name)))
    return module
