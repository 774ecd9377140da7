"""Never stuck on the network: every exchange of a run ends by an absolute deadline.

A server that trickles the answer (status line, headers or body) one byte at a time, within
every per-read timeout, or never ends a body, at each exchange of a run: the snapshot call while
frozen, the status blob and the log blob after the post-script. Whatever it does, the module
returns within max_freeze_seconds + the post-script's time + the documented margin
(`_snapshot_run`: REPORT_SECONDS + JOIN_GRACE_SECONDS + 1 s), the filesystem is writable again
within the deadline + 1 s, the post-script ran and released the application, the status file
exists and tells the truth. A 201 without the snapshot's time is a failed disk, not a success.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import pytest
from fault_support import (
    ModuleProcess,
    run_module_process,
    snapshot_args,
    summary,
    warnings_of,
)

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._snapshot_run import (
    JOIN_GRACE_SECONDS,
    REPORT_SECONDS,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_document import (
    parse_status_document,
)
from harness.faultproxy import FaultProxy, Rule, any_request, is_open, is_snapshot

DEADLINE = 2
# The documented margin, plus the process's own start (Python, imports, the pre-script) on a
# busy 2-core machine.
MARGIN = REPORT_SECONDS + JOIN_GRACE_SECONDS + 1.0
START_UP = 2.5
ALL_SCRIPTS = ["pre-start", "pre-end", "post-start", "post-end"]
SNAPSHOT_TIME = {"x-ms-snapshot": "2026-01-01T00:00:00.0000000Z"}


@dataclass(frozen=True)
class Stall:
    name: str
    where: str  # "snapshot", "status" or "log"
    rule: Callable[[], Rule]
    code: int  # the run's code
    warning: str | None = None  # a warning the result must carry
    logged: str | None = None  # a line extension.log must carry
    scripts: tuple = tuple(ALL_SCRIPTS)  # the scripts that must have run
    args: dict = field(default_factory=dict)


def trickle_head(delay: float) -> Callable[[], Rule]:
    return lambda: Rule(any_request, action="trickle_head", delay=delay)


def trickle_body(delay: float, status: int, headers: dict | None = None) -> Callable[[], Rule]:
    return lambda: Rule(
        any_request, action="trickle", delay=delay, status=status, body=b"z" * 5000,
        headers=headers or {},
    )  # fmt: skip


def endless(status: int, headers: dict | None = None) -> Callable[[], Rule]:
    return lambda: Rule(any_request, action="endless", status=status, headers=headers or {})


STALLS = [
    Stall(
        "connect: headers trickled, 0.4 s a byte",
        "open",
        trickle_head(0.4),
        76,
        scripts=(),
        args={"snapshot_timeout": 60},
    ),
    Stall(
        "renewal after the pre-script: headers trickled",
        "refresh",
        trickle_head(0.2),
        0,
        logged="did not answer again",
        args={"snapshot_timeout": 60},
    ),
    Stall("snapshot: headers trickled, 0.6 s a byte", "snapshot", trickle_head(0.6), 76),
    Stall("snapshot: headers trickled, 0.15 s a byte", "snapshot", trickle_head(0.15), 76),
    Stall(
        "snapshot: 201 body trickled, 0.4 s a byte",
        "snapshot",
        trickle_body(0.4, 201, SNAPSHOT_TIME),
        0,
    ),
    Stall("snapshot: 500 body trickled, 0.3 s a byte", "snapshot", trickle_body(0.3, 500), 76),
    Stall("snapshot: endless 201 body", "snapshot", endless(201, SNAPSHOT_TIME), 0),
    Stall("snapshot: endless 503 body", "snapshot", endless(503), 173),
    Stall(
        "snapshot: headers trickled, long snapshot_timeout",
        "snapshot",
        trickle_head(0.5),
        76,
        args={"snapshot_timeout": 60},
    ),
    Stall(
        "status blob: headers trickled, 0.6 s a byte",
        "status",
        trickle_head(0.6),
        0,
        warning="The status blob could not be written",
    ),
    Stall(
        "status blob: body never ends",
        "status",
        endless(201),
        0,
    ),
    Stall(
        "status blob: 500 body trickled, 0.5 s a byte",
        "status",
        trickle_body(0.5, 500),
        0,
        warning="The status blob could not be written",
    ),
    Stall(
        "log blob: headers trickled, 0.3 s a byte",
        "log",
        trickle_head(0.3),
        0,
        warning="The log blob could not be written",
    ),
    Stall(
        "status and log blobs: both trickled",
        "both",
        trickle_head(0.5),
        0,
        warning="The status blob could not be written",
        args={"snapshot_timeout": 60},
    ),
]


@pytest.mark.parametrize("stall", STALLS, ids=[stall.name for stall in STALLS])
def test_a_stalling_server_cannot_hold_the_run(
    figures, app, meter, blob_disks, azurite, loop_ext4, run_dirs, tmp_path, stall
):
    scenario = figures.scenario(
        "network-deadlines", "blob", "answers trickled or endless at every exchange",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case(stall.name) as case:
        disk = blob_disks(1)[0]
        status_sas = azurite.status_blob_sas(container=azurite.create_container())
        log_sas = azurite.log_blob_sas(container=azurite.create_container())
        proxy = FaultProxy(azurite.host, azurite.port)
        try:
            rule = stall.rule()
            rules = [rule]
            if stall.where in ("snapshot", "open", "refresh"):
                rule.matches = is_snapshot if stall.where == "snapshot" else is_open
                disk_sas = proxy.url_for(disk.sas)
            else:
                disk_sas = disk.sas
            if stall.where == "refresh":  # the first properties call (connect) goes through
                rules.insert(0, Rule(is_open, times=1))
            proxy.rules[:] = rules
            blobs = {
                "status_blob_uri": proxy.url_for(status_sas)
                if stall.where in ("status", "both") else status_sas,
                "logs_blob_uri": proxy.url_for(log_sas)
                if stall.where in ("log", "both") else log_sas,
            }  # fmt: skip
            args = snapshot_args(
                [disk], app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE, **blobs,
                **stall.args,
            )  # fmt: skip
            args["disks"] = [disk_sas]
            process = ModuleProcess(args, tmp_path)
            result = process.finish(120)
            took = time.monotonic() - process.started
        finally:
            proxy.close()
        case.module_output(process)
        case.frozen(meter, process.started, DEADLINE + 1.0)
        bound = DEADLINE + MARGIN + START_UP
        case.check(took <= bound, f"the module returned after {took:.1f} s (bound {bound:.1f} s)")
        case.check(result and result.get("status_code") == stall.code, summary(result))
        case.check(app.entries() == list(stall.scripts), f"scripts: {app.entries()}")
        case.check(app.lock_free(), "the application's lock is still held")
        if "pre-end" in app.entries():  # quiesced at all: released within the deadline
            quiesced = app.quiesced_seconds()
            case.check(
                quiesced is not None and quiesced <= DEADLINE + 1.0,
                f"the application stayed quiesced {quiesced} s (max_freeze_seconds {DEADLINE})",
            )
        local = case.outputs(tmp_path / "state", tmp_path / "logs")
        case.check(local and local["blob"]["code"] == stall.code, "the local status document")
        if stall.logged:
            log = tmp_path / "logs" / "extension.log"
            case.check(log.exists() and stall.logged in log.read_text(), "not in the log")
        if stall.warning:
            case.check(
                any(stall.warning in text for text in warnings_of(result)),
                f"no warning {stall.warning!r}: {warnings_of(result)}",
            )
        if stall.where in ("snapshot", "open", "refresh"):
            container, name = status_sas.split("?")[0].split("/")[-2:]
            text = azurite.read_blob(container, name).decode()
            case.save("status-blob.json", text)
            case.check(parse_status_document(text)["code"] == stall.code, "status blob code")
        slowest = max(float(scenario.notes.get("slowest return (s)", 0)), round(took, 1))
        scenario.note("slowest return (s)", f"{slowest:.1f}")
        scenario.note("bound (s)", f"{bound:.1f}")


HEADERS_WITHOUT_EVIDENCE = {
    "no x-ms-snapshot": {},
    "empty x-ms-snapshot": {"x-ms-snapshot": ""},
    "x-ms-snapshot not a time": {"x-ms-snapshot": "soon"},
    "x-ms-snapshot a date only": {"x-ms-snapshot": "2026-01-01"},
}


@pytest.mark.parametrize("status", [200, 201])
@pytest.mark.parametrize("label", list(HEADERS_WITHOUT_EVIDENCE))
def test_a_success_answer_without_a_snapshot_time_is_a_failure(
    figures, app, meter, proxy, proxied_disks, azurite, loop_ext4, run_dirs, tmp_path, label,
    status,
):  # fmt: skip
    scenario = figures.scenario(
        "snapshot-without-evidence", "blob", "200/201 without a valid x-ms-snapshot",
        deadline=DEADLINE,
    )  # fmt: skip
    with scenario.case(f"{status} {label}") as case:
        disks = proxied_disks(2)
        proxy.rules[:] = [
            Rule(is_snapshot, status=status, headers=HEADERS_WITHOUT_EVIDENCE[label], times=1)
        ]
        status_sas = azurite.status_blob_sas(container=azurite.create_container())
        args = snapshot_args(
            disks, app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE,
            status_blob_uri=status_sas,
        )  # fmt: skip
        result, process = run_module_process(args, tmp_path)
        case.module_output(process)
        case.frozen(meter, process.started, DEADLINE + 1.0)
        # One disk without evidence, one real snapshot: some failed (76 with health 761).
        case.check(result and result.get("status_code") == 76, summary(result))
        case.check(result and result.get("consistency") != "application", "called consistent")
        snapshots = (result or {}).get("snapshots", [])
        failed = [s for s in snapshots if not s["ok"]]
        case.check(len(failed) == 1, f"failed disks: {len(failed)}")
        case.check(
            all(s["snapshot"] is None and s["status_code"] == 15 for s in failed),
            "a failed disk with a snapshot time or another code",
        )
        case.check(all("x-ms-snapshot" in (s["error"] or "") for s in failed), "no reason")
        case.check(app.entries() == ALL_SCRIPTS, f"scripts: {app.entries()}")
        case.check(app.lock_free(), "the application's lock is still held")
        local = case.outputs(tmp_path / "state", tmp_path / "logs")
        case.check(local and local["blob"]["code"] == 76, "the local status document")
        container, name = status_sas.split("?")[0].split("/")[-2:]
        text = azurite.read_blob(container, name).decode()
        case.save("status-blob.json", text)
        parsed = parse_status_document(text)
        infos = parsed["snapshots"]
        case.check(
            sum(not info["isSuccessful"] for info in infos) == 1
            and all(info["snapshotUri"] is None for info in infos if not info["isSuccessful"]),
            "the status blob counts a disk without evidence as a success",
        )
        case.check(parsed["health_code"] == 761, "health code")
