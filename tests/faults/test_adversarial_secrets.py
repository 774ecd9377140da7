"""Secrets in spellings and places the first fault suite did not use.

A blob service or Resource Manager that repeats a signature or a bearer token back in a spelling
`faultproxy.echo_spellings()` does not make: base64url without padding, `%20` or a blank for
`+`, percent-encoding three times with mixed-case hex, HTML entities without `;`, C `\\x`,
`\\U` and `%u` escapes, quoted-printable, upper case, the value split into pieces shorter than
12 characters across lines or headers, JSON inside an XML error body, a `Location` of a 3xx
answer, `x-ms-copy-source`, `WWW-Authenticate`. The suite came back with more: hexadecimal
(also with colons), C octal and `\\u{..}` escapes, UTF-16 bytes, HTML entities with many zeros,
base32, rot13, the value reversed, a tab between characters, the signature's own bytes in
hexadecimal or as Python prints them, and (in text only) zero-width characters between
characters and fullwidth forms. Every output is read back and searched with a decoder that undoes
all of those (`deep_leaks`, written apart from the redaction) as well as `scan_text(known=...)`.

Also: a 64 KiB error body of backslashes (or `%25`, `&amp;`) while frozen. Redaction with an
unbounded pattern took 22 s of CPU with the GIL held for it (quadratic backtracking); the run
must still end within its bound, run the post-script and write its status.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import json
import re
import socket
import threading
import time
import unicodedata
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import pytest
from fault_support import run_module_process, snapshot_args, summary
from scan_secrets import scan_text

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import _redact
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._snapshot_run import (
    JOIN_GRACE_SECONDS,
    REPORT_SECONDS,
)
from harness.faultproxy import Rule, is_snapshot

DEADLINE = 3
ALL_SCRIPTS = ["pre-start", "pre-end", "post-start", "post-end"]
# The run's own start and the status and log blobs after the post-script, as test_deadlines.
RETURN_BOUND = DEADLINE + 10.0


def signature_of(sas: str) -> str:
    return next(value for name, value in parse_qsl(urlsplit(sas).query) if name == "sig")


def read_blob(azurite, sas: str) -> str:
    container, name = sas.split("?")[0].split("/")[-2:]
    try:
        return azurite.read_blob(container, name).decode(errors="replace")
    except Exception:  # not written (its own fault): nothing to scan
        return ""


def _each(text: str, spell) -> str:
    return "".join(spell(char) if not char.isalnum() else char for char in text)


def _split(text: str, size: int, joint: str) -> str:
    return joint.join(text[i : i + size] for i in range(0, len(text), size))


# Each spelling of a value (a signature or a token) that a careless server may write.
SPELLINGS = {
    "base64url, no padding": lambda v: v.replace("+", "-").replace("/", "_").rstrip("="),
    "plus as %20": lambda v: quote(v, safe="").replace("%2B", "%20"),
    "plus as a blank": lambda v: v.replace("+", " "),
    "three times, mixed-case hex": lambda v: (
        quote(quote(quote(v, safe=""), safe=""), safe="").replace("2B", "2b").replace("3D", "3d")
    ),
    "HTML decimal, no semicolon": lambda v: _each(v, lambda c: f"&#{ord(c)}"),
    "HTML hex, padded": lambda v: _each(v, lambda c: f"&#X00{ord(c):X};"),
    "C \\x escapes": lambda v: _each(v, lambda c: f"\\x{ord(c):02x}"),
    "\\U escapes": lambda v: _each(v, lambda c: f"\\U{ord(c):08x}"),
    "%u escapes": lambda v: _each(v, lambda c: f"%u{ord(c):04X}"),
    "quoted-printable": lambda v: _each(v, lambda c: f"={ord(c):02X}"),
    "upper case": str.upper,
    "lower case": str.lower,
    "backslash entity before /": lambda v: v.replace("/", "&#92;/"),
    "split every 9, CRLF": lambda v: _split(v, 9, "\r\n "),
    "split every 10, blank": lambda v: _split(v, 10, " "),
    "JSON in XML": lambda v: html.escape(json.dumps({"\u0073ig": v}).replace("=", "\\u003d")),
    "\\u0073ig\\u003d name": lambda v: f"\\u0073ig\\u003d{quote(v, safe='')}",
    "&#115;ig&#61 name": lambda v: f"&#115;ig&#61{v}",
    "hexadecimal": lambda v: v.encode().hex(),
    "hexadecimal, colons, upper case": lambda v: v.encode().hex(":").upper(),
    "C octal escapes": lambda v: _each(v, lambda c: f"\\{ord(c):03o}"),
    "every character in octal": lambda v: "".join(f"\\{ord(c):o}" for c in v),
    "UTF-16 as escaped bytes": lambda v: "".join(f"{c}\\x00" for c in v),
    "\\u{..} escapes": lambda v: "".join(f"\\u{{{ord(c):x}}}" for c in v),
    "HTML entities, 8 zeros": lambda v: "".join(f"&#00000000{ord(c)};" for c in v),
    "base32": lambda v: base64.b32encode(v.encode()).decode(),
    "rot13": lambda v: codecs.encode(v, "rot13"),
    "reversed": lambda v: v[::-1],
    "a tab between characters": "\t".join,
    "its bytes in hexadecimal": lambda v: _bytes_of(v).hex(),
    "its bytes as Python prints them": lambda v: repr(_bytes_of(v)),
}
# Spellings that only text can carry (not an HTTP header): checked on the redaction itself.
TEXT_SPELLINGS = {
    **SPELLINGS,
    "UTF-16 read as text": lambda v: "".join(f"{c}\x00" for c in v),
    "zero-width space between characters": "\u200b".join,
    "fullwidth": lambda v: "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in v),
}


def _bytes_of(value: str) -> bytes:
    """What a base64 value (a signature) stands for; the UTF-8 of any other value."""
    try:
        return base64.b64decode(value.translate(str.maketrans("-_", "+/")), validate=True)
    except (binascii.Error, ValueError):
        return value.encode()


def _deep_decoded(text: str) -> str:
    """Undo every spelling above (and the existing ones) as far as it goes, then fold."""
    for _round in range(4):
        text = re.sub(
            r"\\+(?:u00|x|U000000)([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text
        )
        text = re.sub(r"%[uU]00([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text)
        text = re.sub(r"=([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), text)
        text = re.sub(r"\\+/", "/", text)
        text = unquote(html.unescape(text))
    return text.translate(str.maketrans("-_ ", "+/+")).lower()


def _whole_text_readings(text: str):
    """The text with each of the later spellings undone over all of it, one at a time."""
    yield text
    yield re.sub(r"\\([0-7]{1,3})", lambda m: chr(int(m.group(1), 8)), text)
    yield re.sub(r"\\u\{([0-9a-fA-F]{1,6})\}", lambda m: chr(int(m.group(1), 16)), text)
    yield re.sub(r"&#0*([0-9]+);", lambda m: chr(int(m.group(1))), text)
    yield re.sub(r"\\x00|[\x00\u200b]|\t", "", text)
    yield unicodedata.normalize("NFKC", text)
    yield codecs.encode(text, "rot13")
    yield text[::-1]
    for stretch in re.findall(r"(?:[0-9A-Fa-f]{2}:?)+", text):
        yield bytes.fromhex(stretch.replace(":", "")).decode("latin-1")
    for stretch in re.findall(r"[A-Z2-7]{16,}=*", text):
        try:
            yield base64.b32decode(stretch).decode("latin-1")
        except (binascii.Error, ValueError):
            continue


def _byte_leaks(text: str, secret: str, piece: int) -> list[str]:
    """Pieces of the bytes a base64 secret stands for, in hexadecimal or as Python prints them."""
    hexa = _bytes_of(secret).hex()
    printed = re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), text)
    readings = (re.sub(r"[\s:]", "", text).lower(), printed.encode("latin-1", "replace").hex())
    for start in range(0, len(hexa) - 2 * piece + 1, 2):
        if any(hexa[start : start + 2 * piece] in reading for reading in readings):
            return [f"bytes {start // 2} of {secret[:4]}…"]
    return []


def deep_leaks(text: str, secrets: list[str], piece: int = 10) -> list[str]:
    """Pieces of `piece` characters of a secret left anywhere in text, in any spelling above;
    also what `scan_text` finds. Pieces split by line breaks are joined again first."""
    hits = [f"scan: {hit}" for hit in scan_text(text, known=secrets)]
    for secret in secrets:
        hits += _byte_leaks(text, secret, piece)
    for reading in _whole_text_readings(text):
        for flat in (reading, re.sub(r"\s+", "", reading)):
            decoded = _deep_decoded(flat)
            for secret in secrets:
                folded = secret.translate(str.maketrans("-_ ", "+/+")).lower()
                for start in range(len(folded) - piece + 1):
                    if folded[start : start + piece] in decoded:
                        hits.append(f"piece {start} of {secret[:4]}…")
                        break
    return hits


def _a_signature(seed: int) -> str:
    """A signature dense in + and / (every 12-character piece holds one of them)."""
    pattern = base64.b64encode(bytes([seed, 0xFB, 0xEF, 0xBE] * 8)).decode()
    return pattern


@pytest.mark.parametrize("context", ["alone", "in XML", "after sig=", "in a header line"])
@pytest.mark.parametrize("spelling", list(TEXT_SPELLINGS))
def test_scrub_redacts_every_spelling(spelling, context):
    """The redaction itself, for each spelling and context: nothing of the value is left."""
    _redact.forget_all()
    try:
        signature = "Ab+/Cd+/Ef+/Gh+/Ij+/Kl+/Mn+/Op+/Qr+/St+/Uv+/Wx=="
        token = "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJodHRwcyJ9." + "x-Y_z" * 30
        _redact.register(signature)
        _redact.register(token)
        for secret in (signature, token):
            spelled = TEXT_SPELLINGS[spelling](secret)
            text = {
                "alone": spelled,
                "in XML": f"<Error><Message>{spelled}</Message></Error>",
                "after sig=": f"https://a/b?sv=1&sig={spelled}&sp=r",
                "in a header line": f'WWW-Authenticate: Bearer error_description="{spelled}"',
            }[context]
            out = _redact.scrub(text)
            assert not deep_leaks(out, [secret]), (spelling, context, out[:300])
    finally:
        _redact.forget_all()


HOSTILE_BODIES = {
    "64 KiB of backslashes": "\\" * 65000,
    "64 KiB of %25": "%25" * 21000,
    "64 KiB of &amp;": "&amp;" * 13000,
    "an entity of 60000 digits": "&#" + "1" * 60000 + ";",
}


@pytest.mark.parametrize("body", list(HOSTILE_BODIES))
def test_scrub_is_linear_on_hostile_text(body):
    """No pattern backtracks: 64 KiB of the worst text is redacted in well under a second."""
    _redact.forget_all()
    try:
        for seed in range(3):
            _redact.register(_a_signature(seed))
        _redact.register("eyJ0eXAiOiJKV1QifQ." + "Q" * 1200)
        started = time.perf_counter()
        _redact.scrub(f"<Message>{HOSTILE_BODIES[body]}</Message>")
        assert time.perf_counter() - started < 1.0
    finally:
        _redact.forget_all()


def _answer_with(secret_text: str, sas: str) -> dict:
    """A 403 that carries `secret_text` in its body (XML and JSON), headers and error code."""
    body = (
        '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code>'
        f"<Message>{secret_text}</Message><Json>{html.escape(json.dumps({'m': secret_text}))}"
        f"</Json></Error>"
    ).encode()
    flat = secret_text.replace("\r", " ").replace("\n", " ")
    half = len(flat) // 2
    return {
        "status": 403,
        "body": body,
        "headers": {
            "Content-Type": "application/xml",
            "x-ms-error-code": flat[:200],
            "x-ms-echo-a": flat[:half],
            "x-ms-echo-b": flat[half:],
            "x-ms-copy-source": sas,
            "WWW-Authenticate": f'SharedAccessSignature error_description="{flat}"',
        },
    }


def _check_outputs(case, process, tmp_path: Path, azurite, blobs: dict, secrets: list[str]):
    texts = {"stdout": process.stdout, "stderr": process.stderr}
    for path in (tmp_path / "logs" / "extension.log", tmp_path / "state/status/last.status"):
        if path.exists():
            texts[path.name] = path.read_text(errors="replace")
    for name, sas in blobs.items():
        texts[f"blob.{name}"] = read_blob(azurite, sas)
    for name, text in texts.items():
        case.save(f"{name}.txt", text)
        hits = deep_leaks(text, secrets)
        if hits:
            case.scenario.secrets += len(hits)
            case.failures.append(f"{name}: {hits[:3]}")
    case.module_output(process)


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_a_blob_service_echoing_in_other_spellings_gets_nothing_out(
    figures, app, meter, proxy, proxied_disks, azurite, loop_ext4, run_dirs, tmp_path, spelling
):
    scenario = figures.scenario(
        "echoed-other-spellings", "secrets",
        "the SAS echoed at the snapshot call in spellings the first suite did not use",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case(spelling) as case:
        disks = proxied_disks(1)
        blobs = {
            "status": azurite.status_blob_sas(container=azurite.create_container()),
            "log": azurite.log_blob_sas(container=azurite.create_container()),
        }
        sig = unquote(signature_of(disks[0].sas))
        secrets = [sig, signature_of(blobs["status"])]
        proxy.rules[:] = [Rule(is_snapshot, **_answer_with(SPELLINGS[spelling](sig), disks[0].sas))]
        args = snapshot_args(
            disks, app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE,
            status_blob_uri=blobs["status"], logs_blob_uri=blobs["log"],
        )  # fmt: skip
        result, process = run_module_process(args, tmp_path)
        case.frozen(meter, process.started, DEADLINE + 1.0)
        case.check(result and result.get("status_code") == 76, summary(result))
        case.check(app.entries() == ALL_SCRIPTS, f"scripts: {app.entries()}")
        case.check(app.lock_free(), "the application's lock is still held")
        case.check((tmp_path / "state/status/last.status").exists(), "no status file")
        _check_outputs(case, process, tmp_path, azurite, blobs, secrets)


class _Listener:
    """A loopback port that records every connection and never answers (a redirect target)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _address = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self._open:
            conn.close()


@pytest.mark.parametrize("status", [301, 307, 308])
def test_a_redirect_is_not_followed_and_its_location_not_shown(
    figures, app, meter, proxy, proxied_disks, azurite, loop_ext4, run_dirs, tmp_path, status
):
    """A 3xx at the snapshot call whose Location holds the SAS (and points at a host that
    never answers): the disk fails, nothing connects there, nothing of the SAS is shown."""
    scenario = figures.scenario(
        "redirected-snapshot-call", "secrets",
        "a 3xx at the snapshot call, Location with the SAS, to a host that never answers",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case(f"HTTP {status}") as case:
        listener = _Listener()
        try:
            disks = proxied_disks(1)
            sig = unquote(signature_of(disks[0].sas))
            query = disks[0].sas.split("?", 1)[1]
            location = f"http://127.0.0.1:{listener.port}/elsewhere/b?{query}"
            proxy.rules[:] = [
                Rule(
                    is_snapshot,
                    status=status,
                    headers={"Location": location, "x-ms-copy-source": disks[0].sas},
                    body=f"<a href='{html.escape(location)}'>moved</a>".encode(),
                )
            ]
            args = snapshot_args(disks, app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
            started = time.monotonic()
            result, process = run_module_process(args, tmp_path)
            took = time.monotonic() - started
        finally:
            listener.close()
        case.frozen(meter, process.started, DEADLINE + 1.0)
        case.check(result and result.get("status_code") == 76, summary(result))
        case.check(listener.connections == 0, f"followed: {listener.connections} connection(s)")
        case.check(took < RETURN_BOUND, f"took {took:.1f} s")
        case.check(app.entries() == ALL_SCRIPTS, f"scripts: {app.entries()}")
        case.check(app.lock_free(), "the application's lock is still held")
        _check_outputs(case, process, tmp_path, azurite, {}, [sig])


@pytest.mark.parametrize("body", list(HOSTILE_BODIES))
def test_a_hostile_error_body_while_frozen_does_not_hold_the_run(
    figures, app, meter, proxy, proxied_disks, azurite, loop_ext4, run_dirs, tmp_path, body
):
    scenario = figures.scenario(
        "hostile-error-body", "deadlines",
        "64 KiB error bodies made to make redaction backtrack, at the snapshot call",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case(body) as case:
        disks = proxied_disks(2)
        secrets = [unquote(signature_of(disk.sas)) for disk in disks]
        xml = (
            "<?xml version='1.0'?><Error><Code>AuthenticationFailed</Code>"
            f"<Message>{HOSTILE_BODIES[body]}</Message></Error>"
        ).encode()
        proxy.rules[:] = [Rule(is_snapshot, status=403, body=xml)]
        args = snapshot_args(disks, app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
        started = time.monotonic()
        result, process = run_module_process(args, tmp_path)
        took = time.monotonic() - started
        slowest = max(scenario.notes.get("slowest return (s)", 0), round(took, 1))
        scenario.notes["slowest return (s)"] = slowest
        case.frozen(meter, process.started, DEADLINE + 1.0)
        case.check(result and result.get("status_code") == 76, summary(result))
        case.check(took < RETURN_BOUND, f"took {took:.1f} s (bound {RETURN_BOUND} s)")
        case.check(app.entries() == ALL_SCRIPTS, f"scripts: {app.entries()}")
        case.check(app.lock_free(), "the application's lock is still held")
        case.check((tmp_path / "state/status/last.status").exists(), "no status file")
        _check_outputs(case, process, tmp_path, azurite, {}, secrets)


MISSPELT_TOKEN = (
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL21hbmFnZW1lbnQuYXp1cmUuY29tLyJ9."
    "c2lnbmF0dXJlLXBhcnQtb2YtdGhlLXRva2Vu"
)


def _misspelt_options(sas: str) -> dict:
    """Options a typo turns into unknown ones: no no_log covers their values."""
    sig = signature_of(sas)
    return {
        "acces_token": MISSPELT_TOKEN,
        "token": MISSPELT_TOKEN[::-1],
        "dissks": [sas.replace("sig=", "SIG=")],
        "status_blob": sas.replace(f"sig={sig}", f"%73ig={sig}"),
    }


def test_scrubbing_module_hides_misspelt_options(capsys, monkeypatch):
    """`_redact.scrubbing_module`: the constructor's own "Unsupported parameters" failure
    shows the raw arguments; none of their secrets may be in it."""
    from ansible.module_utils import basic

    # Made here, not written out: no signature-like literal is committed.
    signature = base64.b64encode(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ").decode()
    sas = f"https://a.blob.core.windows.net/c/b?sv=2021-12-02&sp=rw&sig={quote(signature, safe='')}"
    args = {"disks": [sas], **_misspelt_options(sas)}
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    _redact.forget_all()
    try:
        with pytest.raises(SystemExit):
            _redact.scrubbing_module(
                basic.AnsibleModule,
                argument_spec={"disks": {"type": "list", "elements": "str", "no_log": True}},
            )
    finally:
        _redact.forget_all()
    out = capsys.readouterr().out
    assert "Unsupported parameters" in out, out[:500]
    assert not deep_leaks(out, [signature, MISSPELT_TOKEN]), out
    assert MISSPELT_TOKEN[::-1] not in out  # by its option's name


def test_misspelt_options_carrying_secrets_are_not_echoed(figures, blob_disks, tmp_path):
    scenario = figures.scenario(
        "misspelt-secret-options", "secrets",
        "a token and SAS URIs in misspelt options (ansible-core echoes unknown options)",
    )  # fmt: skip
    with scenario.case("acces_token, token, dissks, status_blob") as case:
        disk = blob_disks(1)[0]
        args = {"disks": [disk.sas], **_misspelt_options(disk.sas)}
        result, process = run_module_process(args, tmp_path, timeout=60)
        case.check(result and result.get("failed"), summary(result))
        for name, text in {"stdout": process.stdout, "stderr": process.stderr}.items():
            hits = deep_leaks(text, [unquote(signature_of(disk.sas)), MISSPELT_TOKEN])
            if hits or MISSPELT_TOKEN[::-1] in text:
                case.scenario.secrets += 1  # one per output that leaks
                case.failures.append(f"{name}: {hits[:3]}")


@pytest.mark.parametrize(
    "spelling", ["base64url, no padding", "plus as %20", "split every 9, CRLF", "upper case"]
)
def test_snapshot_restore_with_a_service_echoing_in_other_spellings(
    figures, proxy, blob_disks, azurite, tmp_path, spelling
):
    scenario = figures.scenario(
        "echoed-other-spellings", "secrets",
        "the SAS echoed at the snapshot call in spellings the first suite did not use",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case(f"snapshot_restore: {spelling}") as case:
        disk = blob_disks(1)[0]
        snapshot = azurite.service.get_blob_client(disk.container, disk.name).create_snapshot()
        source = azurite.blob_sas(
            disk.container, disk.name, permissions="r", snapshot=snapshot["snapshot"]
        )
        destination = azurite.blob_sas(disk.container, "restored.vhd", permissions="rcw")
        secrets = [unquote(signature_of(source)), unquote(signature_of(destination))]
        echoed = " ".join(SPELLINGS[spelling](secret) for secret in secrets)
        proxy.rules[:] = [Rule(lambda method, target: True, **_answer_with(echoed, source))]
        args = {"snapshot_uri": proxy.url_for(source), "destination_uri": destination}
        result, process = run_module_process(
            {**args, "timeout": 2, "wait_timeout": 5}, tmp_path, name="snapshot_restore"
        )
        case.module_output(process)
        case.check(result and result.get("failed"), summary(result))
        for name, text in {"stdout": process.stdout, "stderr": process.stderr}.items():
            hits = deep_leaks(text, secrets)
            if hits:
                case.scenario.secrets += 1
                case.failures.append(f"{name}: {hits[:3]}")


def test_many_disks_with_hostile_error_bodies_do_not_hold_the_run(
    figures, app, meter, proxy, proxied_disks, azurite, loop_ext4, run_dirs, tmp_path
):
    """Redaction costs text x registered secrets: 24 disks, each answered with 64 KiB of
    backslashes, made 24 redactions of 64 KiB against 48 registered values, one after the
    other with the GIL held (16 disks: 10.5 s measured). Only the first KiB of a server's text
    is redacted and kept now (16 disks: 0.15 s). Bound: the documented one, as
    test_deadlines."""
    scenario = figures.scenario(
        "hostile-error-body", "deadlines",
        "64 KiB error bodies made to make redaction backtrack, at the snapshot call",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case("24 disks, 64 KiB of backslashes each") as case:
        disks = proxied_disks(24)
        xml = (
            "<?xml version='1.0'?><Error><Code>AuthenticationFailed</Code>"
            f"<Message>{HOSTILE_BODIES['64 KiB of backslashes']}</Message></Error>"
        ).encode()
        proxy.rules[:] = [Rule(is_snapshot, status=403, body=xml)]
        args = snapshot_args(disks, app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
        started = time.monotonic()
        result, process = run_module_process(args, tmp_path)
        took = time.monotonic() - started
        slowest = max(scenario.notes.get("slowest return (s)", 0), round(took, 1))
        scenario.notes["slowest return (s)"] = slowest
        case.frozen(meter, process.started, DEADLINE + 1.0)
        case.check(result and result.get("status_code") == 76, summary(result))
        bound = DEADLINE + REPORT_SECONDS + JOIN_GRACE_SECONDS + 1.0 + 2.5
        case.check(took < bound, f"took {took:.1f} s (bound {bound} s)")
        case.check(app.entries() == ALL_SCRIPTS, f"scripts: {app.entries()}")
        case.check(app.lock_free(), "the application's lock is still held")
        secrets = [unquote(signature_of(disk.sas)) for disk in disks]
        _check_outputs(case, process, tmp_path, azurite, {}, secrets)
