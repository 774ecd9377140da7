"""Blob service faults, injected by the loopback fault proxy in front of Azurite.

Each fault ends with the reference's code, a thaw within the deadline (measured from outside),
the post-script run whenever the pre-script ran, the snapshots that the service really holds,
and a status document (local file and status blob) that says what happened; or, when the
status blob itself is the fault, a clear warning that it could not be written.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Callable

import pytest
from fault_support import run_module_process, snapshot_args, summary, warnings_of

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_document import (
    parse_status_document,
)
from harness.faultproxy import (
    INTERNAL_ERROR,
    SERVER_BUSY,
    SNAPSHOT_COUNT_EXCEEDED,
    SNAPSHOT_RATE_EXCEEDED,
    FaultProxy,
    Rule,
    any_request,
    for_blob,
    is_open,
    is_snapshot,
    storage_error,
)

DEADLINE = 3
BOUND = DEADLINE + 1.0
ALL_SCRIPTS = ["pre-start", "pre-end", "post-start", "post-end"]


@dataclass(frozen=True)
class Fault:
    name: str
    rules: Callable[[list[str]], list[Rule]]  # from the disks' blob names
    code: int
    taken: tuple[int, ...] | None  # snapshots each disk holds afterwards (None: not checked)
    scripts: bool = True  # the pre- and post-script ran
    disks: int = 1
    health: int | None = None
    refuse_first: bool = False
    args: dict = field(default_factory=dict)


def on_snapshot(**rule) -> Callable[[list[str]], list[Rule]]:
    return lambda names: [Rule(is_snapshot, **rule)]


def on_second_disk(**rule) -> Callable[[list[str]], list[Rule]]:
    return lambda names: [Rule(for_blob(names[1], is_snapshot), **rule)]


FAULTS = [
    Fault("connection refused", lambda names: [], 76, (0,), scripts=False, refuse_first=True),
    Fault("connection refused while frozen", on_snapshot(action="refuse"), 76, (0,)),
    Fault(
        "reset mid-request once: the one retry works", on_snapshot(action="reset", times=1), 0, (1,)
    ),
    Fault("reset mid-request every time", on_snapshot(action="reset"), 76, (0,)),
    Fault("black hole while frozen", on_snapshot(action="blackhole"), 76, (0,)),
    Fault(
        "black hole at connect",
        lambda names: [Rule(is_open, action="blackhole")],
        76,
        (0,),
        scripts=False,
    ),
    Fault("slow responses within the timeout", on_snapshot(delay=0.5), 0, (1,)),
    # The service takes the snapshot after the module gave up: only the run's word is checked.
    Fault("slow responses beyond the deadline", on_snapshot(delay=DEADLINE + 1), 76, None),
    Fault(
        "answer trickled past the deadline: the call ends at its deadline",
        on_snapshot(action="trickle", delay=0.02, **INTERNAL_ERROR),
        76,
        (0,),
    ),
    Fault("HTTP 500", on_snapshot(**INTERNAL_ERROR), 76, (0,)),
    Fault("HTTP 503 with throttling headers", on_snapshot(**SERVER_BUSY), 173, (0,)),
    Fault("409 snapshot rate exceeded", on_snapshot(**SNAPSHOT_RATE_EXCEEDED), 173, (0,)),
    Fault("409 snapshot count exceeded", on_snapshot(**SNAPSHOT_COUNT_EXCEEDED), 85, (0,)),
    Fault(
        "503 at connect: nothing quiesced",
        lambda names: [Rule(is_open, **SERVER_BUSY)],
        173,
        (0,),
        scripts=False,
    ),
    Fault(
        "one disk of three fails (500)",
        on_second_disk(**INTERNAL_ERROR),
        76,
        (1, 0, 1),
        disks=3,
        health=761,
    ),
    Fault(
        "one disk of three at its snapshot limit",
        on_second_disk(**SNAPSHOT_COUNT_EXCEEDED),
        85,
        (1, 0, 1),
        disks=3,
    ),
    Fault(
        "one disk of three reset every time",
        on_second_disk(action="reset"),
        76,
        (1, 0, 1),
        disks=3,
        health=761,
    ),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[fault.name for fault in FAULTS])
def test_blob_service_fault(
    figures, app, meter, proxy, proxied_disks, azurite, loop_ext4, run_dirs, tmp_path, fault
):
    scenario = figures.scenario(
        "blob-faults", "blob", "the blob service fails, slows or throttles", deadline=DEADLINE
    )
    with scenario.case(fault.name) as case:
        disks = proxied_disks(fault.disks)
        status_sas = azurite.status_blob_sas(container=azurite.create_container())
        proxy.rules[:] = fault.rules([disk.name for disk in disks])
        if fault.refuse_first:
            proxy.refuse()
        args = snapshot_args(
            disks, app, run_dirs, [loop_ext4],
            max_freeze_seconds=DEADLINE, status_blob_uri=status_sas, **fault.args,
        )  # fmt: skip
        result, process = run_module_process(args, tmp_path)
        case.module_output(process)
        proxy.release()
        case.frozen(meter, process.started, BOUND)
        case.check(result and result.get("status_code") == fault.code, summary(result))
        case.check(
            app.entries() == (ALL_SCRIPTS if fault.scripts else []),
            f"scripts: {app.entries()}",
        )
        case.check(app.lock_free(), "the application's lock is still held")
        if fault.taken is not None:
            held = [len(azurite.list_snapshots(disk.container, disk.name)) for disk in disks]
            case.check(held == list(fault.taken), f"snapshots in the service: {held}")
        local = case.outputs(tmp_path / "state", tmp_path / "logs")
        container, name = status_sas.split("?")[0].split("/")[-2:]
        text = azurite.read_blob(container, name).decode()
        case.save("status-blob.json", text)
        for where, document in (("local", local and local["blob"]), ("blob", text)):
            parsed = parse_status_document(document) if isinstance(document, str) else document
            case.check(parsed and parsed["code"] == fault.code, f"{where} status document code")
            if parsed and fault.health:
                case.check(parsed["health_code"] == fault.health, f"{where} health code")
            if parsed and fault.code not in (0, 1):
                failed = [info for info in parsed["snapshots"] if not info["isSuccessful"]]
                case.check(
                    all(info["errorMessage"] for info in failed), "a failed disk without a reason"
                )
        scenario.note(f"code {fault.code}")


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


REPORT_FAULTS = {
    "status blob answers 500": ("status", [Rule(any_request, **INTERNAL_ERROR)]),
    "status blob refused": ("status", "refused"),
    "status blob black hole": ("status", [Rule(any_request, action="blackhole")]),
    "log blob answers 403": (
        "logs",
        [Rule(any_request, **storage_error(403, "AuthenticationFailed", "Signature mismatch."))],
    ),
}


@pytest.mark.parametrize("label", list(REPORT_FAULTS))
def test_status_or_log_blob_cannot_be_written(
    figures, app, meter, blob_disks, azurite, loop_ext4, run_dirs, tmp_path, label
):
    """The snapshot stands; the result says clearly which report could not be written."""
    scenario = figures.scenario(
        "report-blob-faults", "blob", "the status or log blob fails", deadline=DEADLINE
    )
    which, rules = REPORT_FAULTS[label]
    what = "status" if which == "status" else "log"
    with scenario.case(label) as case:
        sas = (azurite.status_blob_sas if which == "status" else azurite.log_blob_sas)(
            container=azurite.create_container()
        )
        proxy = FaultProxy(azurite.host, azurite.port)
        try:
            if rules == "refused":
                target = sas.replace(sas.split("/")[2], f"127.0.0.1:{dead_port()}")
            else:
                proxy.rules[:] = rules
                target = proxy.url_for(sas)
            args = snapshot_args(
                blob_disks(1), app, run_dirs, [loop_ext4],
                max_freeze_seconds=DEADLINE, snapshot_timeout=1, **{f"{which}_blob_uri": target},
            )  # fmt: skip
            result, process = run_module_process(args, tmp_path)
        finally:
            proxy.close()
        case.module_output(process)
        case.frozen(meter, process.started, BOUND)
        case.check(result and result.get("status_code") == 0, summary(result))
        case.check(
            any(f"The {what} blob could not be written" in text for text in warnings_of(result)),
            f"no clear warning about the {what} blob: {warnings_of(result)}",
        )
        local = case.outputs(tmp_path / "state", tmp_path / "logs")
        case.check(local and local["code"] == 0, "the local status document was not written")
        case.check(app.entries() == ALL_SCRIPTS, f"scripts: {app.entries()}")
