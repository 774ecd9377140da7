"""No signature leaves the process by any spelling: a server that echoes it, input that hides it.

A blob service that repeats the request in its error body, its headers and its reason phrase, in
every spelling of `faultproxy.echo_spellings()` (percent-encoded once and twice, JSON- and
HTML-escaped, `sig: value`, the bare value, base64, a piece of it), at every exchange of a run;
SAS URIs whose signature is not clean base64 or given twice, or that use plain http to a remote
host (refused before anything runs). Every output is read back - module stdout and stderr,
`extension.log`, the local status file, the status and log blobs from Azurite,
`snapshot_restore`, `ansible-playbook -vvv` - and searched for each signature the test handed
out, by value, in every spelling (`scan_secrets.scan_text(known=...)`).
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from fault_support import run_module_process, snapshot_args, summary
from scan_secrets import scan_text

from harness.faultproxy import FaultProxy, Rule, is_open, is_snapshot
from harness.modules import run_playbook

DEADLINE = 3
ALL_SCRIPTS = ["pre-start", "pre-end", "post-start", "post-end"]


def signature_of(sas: str) -> str:
    return next(value for name, value in parse_qsl(urlsplit(sas).query) if name == "sig")


def check_clean(case, name: str, text: str, secrets: list[str]) -> None:
    """Keep an output (the pattern scan runs as it is saved) and look for each secret by value."""
    case.save(name, text)
    hits = scan_text(text, known=secrets)
    if hits:
        case.scenario.secrets += len(hits)
        case.failures.append(f"{name}: {len(hits)} spelling(s) of a known signature: {hits[:3]}")


def read_blob(azurite, sas: str) -> str:
    container, name = sas.split("?")[0].split("/")[-2:]
    try:
        return azurite.read_blob(container, name).decode(errors="replace")
    except Exception:  # not written (its own fault): nothing to scan
        return ""


def check_all_outputs(case, process, tmp_path: Path, azurite, blobs: dict, secrets: list[str]):
    check_clean(case, "module.stdout.json", process.stdout, secrets)
    check_clean(case, "module.stderr.txt", process.stderr, secrets)
    case.module_output(process)
    for path in (tmp_path / "logs" / "extension.log", tmp_path / "state/status/last.status"):
        if path.exists():
            check_clean(case, f"file.{path.name}", path.read_text(errors="replace"), secrets)
    for name, sas in blobs.items():
        check_clean(case, f"blob.{name}.txt", read_blob(azurite, sas), secrets)


# Where the echoing server answers, and what the run's code is then.
ECHO_AT = {
    "snapshot call, 403": (is_snapshot, 403, 76),
    "snapshot call, 500": (is_snapshot, 500, 76),
    "snapshot call, 409": (is_snapshot, 409, 76),
    "connect (properties), 403": (is_open, 403, 76),
}


@pytest.mark.parametrize("where", list(ECHO_AT))
def test_an_echoing_blob_service_gets_no_signature_out(
    figures, app, meter, proxy, proxied_disks, azurite, loop_ext4, run_dirs, tmp_path, where
):
    scenario = figures.scenario(
        "echoed-secrets", "secrets", "a server echoing the SAS in every spelling",
        deadline=DEADLINE,
    )  # fmt: skip
    predicate, status, code = ECHO_AT[where]
    with scenario.case(where) as case:
        disks = proxied_disks(2)
        blobs = {
            "status": azurite.status_blob_sas(container=azurite.create_container()),
            "log": azurite.log_blob_sas(container=azurite.create_container()),
        }
        secrets = [signature_of(disk.sas) for disk in disks]
        proxy.rules[:] = [Rule(predicate, action="echo", status=status)]
        args = snapshot_args(
            disks, app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE,
            status_blob_uri=blobs["status"], logs_blob_uri=blobs["log"],
        )  # fmt: skip
        result, process = run_module_process(args, tmp_path)
        case.frozen(meter, process.started, DEADLINE + 1.0)
        case.check(result and result.get("status_code") in (code, 761), summary(result))
        scripts_expected = ALL_SCRIPTS if predicate is is_snapshot else []
        case.check(app.entries() == scripts_expected, f"scripts: {app.entries()}")
        case.check(app.lock_free(), "the application's lock is still held")
        case.check((tmp_path / "state/status/last.status").exists(), "no status file")
        check_all_outputs(case, process, tmp_path, azurite, blobs, secrets)


@pytest.mark.parametrize("which", ["status", "log"])
def test_an_echoing_report_blob_gets_no_signature_out(
    figures, app, meter, blob_disks, azurite, loop_ext4, run_dirs, tmp_path, which
):
    scenario = figures.scenario(
        "echoed-secrets", "secrets", "a server echoing the SAS in every spelling",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case(f"{which} blob echoes") as case:
        proxy = FaultProxy(azurite.host, azurite.port)
        try:
            proxy.rules[:] = [Rule(lambda method, target: True, action="echo", status=403)]
            sas = (azurite.status_blob_sas if which == "status" else azurite.log_blob_sas)(
                container=azurite.create_container()
            )
            disk = blob_disks(1)[0]
            secrets = [signature_of(sas), signature_of(disk.sas)]
            args = snapshot_args(
                [disk], app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE,
                **{f"{'status' if which == 'status' else 'logs'}_blob_uri": proxy.url_for(sas)},
            )  # fmt: skip
            result, process = run_module_process(args, tmp_path)
        finally:
            proxy.close()
        case.frozen(meter, process.started, DEADLINE + 1.0)
        case.check(result and result.get("status_code") == 0, summary(result))
        case.check(app.entries() == ALL_SCRIPTS, f"scripts: {app.entries()}")
        check_all_outputs(case, process, tmp_path, azurite, {}, secrets)


def _spoil(sas: str, how: str) -> str:
    """The disk's SAS with its signature made unclean, repeated or sent over plain http."""
    base, query = sas.split("?", 1)
    sig = signature_of(sas)
    encoded = quote(sig, safe="")
    rest = query.replace(f"sig={encoded}", "").replace(f"sig={sig}", "").strip("&")
    middle = len(encoded) // 2
    return {
        "blank in the middle": f"{base}?{rest}&sig={encoded[:middle]} {encoded[middle:]}",
        "line break near the end": f"{base}?{rest}&sig={encoded[:-4]}\n{encoded[-4:]}",
        "tab near the start": f"{base}?sig={encoded[:3]}\t{encoded[3:]}&{rest}",
        "%20 inside": f"{base}?{rest}&sig={encoded[:middle]}%20{encoded[middle:]}",
        "%0D%0A inside": f"{base}?{rest}&sig={encoded[:5]}%0D%0A{encoded[5:]}",
        "%25 inside": f"{base}?{rest}&sig={encoded[:middle]}%25{encoded[middle:]}",
        "sig=A&%73ig=B": f"{base}?{rest}&sig=AAAAAAAA&%73ig={encoded}",
        "SIG then sig": f"{base}?SIG={encoded}&{rest}&sig={encoded[::-1]}",
        "sig cut by &": f"{base}?{rest}&sig={encoded[:middle]}&{encoded[middle:]}",
        "http to a remote host": "http://192.0.2.10/" + sas.split("/", 3)[3],
    }[how]


SPOILED = [
    "blank in the middle",
    "line break near the end",
    "tab near the start",
    "%20 inside",
    "%0D%0A inside",
    "%25 inside",
    "sig=A&%73ig=B",
    "SIG then sig",
    "sig cut by &",
    "http to a remote host",
]


@pytest.mark.parametrize("option", ["disks", "status_blob_uri"])
@pytest.mark.parametrize("how", SPOILED)
def test_a_sas_that_hides_its_signature_is_refused_before_anything_runs(
    figures, app, blob_disks, azurite, loop_ext4, run_dirs, tmp_path, how, option
):
    scenario = figures.scenario(
        "unclean-sas", "secrets", "SAS URIs with unclean, repeated or clear-text signatures",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case(f"{option}: {how}") as case:
        disk = blob_disks(1)[0]
        status = azurite.status_blob_sas(container=azurite.create_container())
        secrets = [signature_of(disk.sas), signature_of(status)]
        args = snapshot_args([disk], app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
        if option == "disks":
            args["disks"] = [_spoil(disk.sas, how)]
        else:
            args["status_blob_uri"] = _spoil(status, how)
        result, process = run_module_process(args, tmp_path)
        case.check(result and result.get("status_code") == 11, summary(result))
        case.check(result and result.get("failed"), "not a failure")
        case.check(app.entries() == [], f"scripts ran: {app.entries()}")
        held = len(azurite.list_snapshots(disk.container, disk.name))
        case.check(held == 0, f"{held} snapshot(s) taken")
        check_all_outputs(case, process, tmp_path, azurite, {}, secrets)


def test_snapshot_restore_with_an_echoing_service_gets_no_signature_out(
    figures, proxy, blob_disks, azurite, tmp_path
):
    scenario = figures.scenario(
        "echoed-secrets", "secrets", "a server echoing the SAS in every spelling",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case("snapshot_restore") as case:
        disk = blob_disks(1)[0]
        snapshot = azurite.service.get_blob_client(disk.container, disk.name).create_snapshot()
        source = azurite.blob_sas(
            disk.container, disk.name, permissions="r", snapshot=snapshot["snapshot"]
        )
        destination = azurite.blob_sas(disk.container, "restored.vhd", permissions="rcw")
        secrets = [signature_of(source), signature_of(destination)]
        proxy.rules[:] = [Rule(lambda method, target: True, action="echo", status=403)]
        for label, args in {
            "echo at the source": {
                "snapshot_uri": proxy.url_for(source),
                "destination_uri": destination,
            },
            "echo at the destination": {
                "snapshot_uri": source,
                "destination_uri": proxy.url_for(destination),
            },
            "unclean destination": {
                "snapshot_uri": source,
                "destination_uri": _spoil(destination, "blank in the middle"),
            },
        }.items():
            started = time.monotonic()
            result, process = run_module_process(
                {**args, "timeout": 2, "wait_timeout": 5}, tmp_path, name="snapshot_restore"
            )
            case.check(result and result.get("failed"), f"{label}: {summary(result)}")
            case.check(time.monotonic() - started < 15, f"{label}: took too long")
            check_clean(case, f"{label}.stdout.json", process.stdout, secrets)
            check_clean(case, f"{label}.stderr.txt", process.stderr, secrets)


PLAYBOOK = """
- name: Snapshot through an echoing service
  hosts: all
  gather_facts: false
  tasks:
    - name: Take the snapshot
      appconsistent.vmsnapshot.snapshot: "{{ snapshot_args }}"
      register: snap
    - name: Show the whole result
      ansible.builtin.debug:
        var: snap
"""


def test_vvv_with_an_echoing_service(
    figures, app, meter, proxy, proxied_disks, azurite, loop_ext4, run_dirs, tmp_path
):
    scenario = figures.scenario(
        "echoed-secrets", "secrets", "a server echoing the SAS in every spelling",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case("ansible-playbook -vvv") as case:
        disks = proxied_disks(1)
        status = azurite.status_blob_sas(container=azurite.create_container())
        secrets = [signature_of(disks[0].sas), signature_of(status)]
        proxy.rules[:] = [Rule(is_snapshot, action="echo", status=403)]
        args = snapshot_args(
            disks, app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE,
            status_blob_uri=proxy.url_for(status),
        )  # fmt: skip
        path = tmp_path / "echo.yml"
        path.write_text(PLAYBOOK)
        started = time.monotonic()
        done = run_playbook(
            str(path),
            extra_vars={"snapshot_args": args},
            options=("-vvv", "-e", "ansible_connection=local"),
        )
        case.frozen(meter, started, DEADLINE + 1.0)
        case.check(done.returncode == 0, f"the playbook failed (rc {done.returncode})")
        case.check('"status_code": 76' in done.stdout, "the run's code is not in the output")
        check_clean(case, "ansible-vvv.txt", done.stdout + "\n" + done.stderr, secrets)
        check_all_outputs_files(case, tmp_path, azurite, {"status": status}, secrets)


def check_all_outputs_files(case, tmp_path: Path, azurite, blobs: dict, secrets: list[str]):
    for path in (tmp_path / "logs" / "extension.log", tmp_path / "state/status/last.status"):
        if path.exists():
            check_clean(case, f"file.{path.name}", path.read_text(errors="replace"), secrets)
    for name, sas in blobs.items():
        check_clean(case, f"blob.{name}.txt", read_blob(azurite, sas), secrets)
