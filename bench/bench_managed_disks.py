"""Frozen window with managed disks ÷ the same snapshot calls made without freezing (1, 4 disks).

In one process, with the collection's own pieces: `ManagedDiskEndpoint` (token and connection
ready before, as the module does) against the Resource Manager stand-in
(`tests/harness/armstandin.py`; Azure itself is not reached, the stand-in follows the published
REST specification and takes a real Azurite blob snapshot per call), and `Guardian` on one ext4
loop filesystem made for the run. Each repetition runs, in alternating order:

* unfrozen: one thread per disk, each `create_snapshot()` (a PUT answered 202), all joined;
* frozen:   `Guardian.start()`, `freeze()`, the same parallel calls, `thaw()`; the window is the
            guardian's `frozen_window_ms`.

Only the PUT's acceptance is inside the window (it fixes the snapshot's point in time); the
operation's end and the background copy are followed after the thaw and are not measured here.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from typing import Callable

import benchlib
from benchlib import Target, median, ms_since, p90

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._guardian import Guardian
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._managed_disk import (
    ManagedDiskEndpoint,
    settings_from_params,
    targets_from_params,
)
from harness.armstandin import start_standin
from harness.azurite import start_azurite
from harness.loopfs import make_loop_filesystem

NAME = "managed_disks"
DISK_COUNTS = (1, 4)
MAX_FREEZE_SECONDS = 30
RATIO_LIMIT = 1.3  # as bench_freeze_window
COLD_PAUSE = 0.2
COLUMNS = [
    ("disks", "disks"),
    ("calls unfrozen", "calls_unfrozen_ms"),
    ("p90", "calls_unfrozen_p90_ms"),
    ("frozen window", "window_ms"),
    ("p90", "window_p90_ms"),
    ("calls frozen", "calls_frozen_ms"),
    ("hold", "hold_ms"),
    ("hold / calls", "hold_ratio"),
    ("window / calls", "ratio"),
    ("window - calls", "diff_ms"),
]


def parallel_snapshots(endpoints: list[ManagedDiskEndpoint], counter: list[int]) -> float:
    """Every disk's PUT at once, each to a new snapshot name: ms until all were answered."""
    results: list = [None] * len(endpoints)
    counter[0] += 1

    def take(index: int) -> None:
        results[index] = endpoints[index].create_snapshot(
            {"appconsistentLevel": "application", "round": str(counter[0])},
            deadline=time.monotonic() + 10,
        )

    for endpoint in endpoints:  # a new name per round: the stand-in would answer 200 otherwise
        target = endpoint.target
        endpoint.target = type(target)(
            target.disk_id, target.snapshot_resource_group, f"bench-{counter[0]}-{id(endpoint)}"
        )
    start = time.monotonic_ns()
    threads = [threading.Thread(target=take, args=(i,)) for i in range(len(endpoints))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = ms_since(start)
    if not all(result and result.ok for result in results):
        raise RuntimeError(f"a snapshot call failed: {results}")
    return elapsed


def frozen_round(mounts: list[str], endpoints, counter) -> dict:
    guardian = Guardian(mounts, MAX_FREEZE_SECONDS)
    guardian.start()
    try:
        guardian.freeze()
        calls = parallel_snapshots(endpoints, counter)
        report = guardian.thaw()
    finally:
        guardian.close()
    if report.thaw_forced:
        raise RuntimeError(f"the freeze went wrong: {report}")
    hold = report.frozen_window_ms - report.freeze_ms - report.thaw_ms
    return {"window": report.frozen_window_ms, "calls": calls, "hold": hold}


def run(reps: int, log: Callable[[str], None] = print) -> dict:
    rows = []
    counter = [0]
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(tempfile.TemporaryDirectory(prefix="acvs-bench-md-"))
        azurite = start_azurite(base)
        stack.callback(azurite.stop)
        standin = start_standin(azurite.state(), base)
        stack.callback(standin.stop)
        filesystem = make_loop_filesystem("ext4")
        stack.callback(filesystem.teardown)
        mounts = [filesystem.mount_point]
        for count in DISK_COUNTS:
            ids = [
                standin.add_disk(f"bench-n{count}-d{i}", size_bytes=64 * 1024) for i in range(count)
            ]
            params = {
                "managed_disks": [{"id": disk_id} for disk_id in ids],
                "arm_endpoint": standin.arm_endpoint,
                "imds_endpoint": standin.imds_endpoint,
                "ca_path": standin.ca_file,
            }
            settings = settings_from_params(params)
            endpoints = [
                ManagedDiskEndpoint(target, settings, timeout=10)
                for target in targets_from_params(params)
            ]
            for endpoint in endpoints:
                endpoint.open()
                stack.callback(endpoint.close)
            unfrozen, frozen = [], []
            for rep in range(reps + 1):  # the first round warms up
                order = ("unfrozen", "frozen") if rep % 2 else ("frozen", "unfrozen")
                for kind in order:
                    time.sleep(COLD_PAUSE)
                    if kind == "unfrozen":
                        value = parallel_snapshots(endpoints, counter)
                        if rep:
                            unfrozen.append(value)
                    else:
                        value = frozen_round(mounts, endpoints, counter)
                        if rep:
                            frozen.append(value)
            row = {
                "disks": count,
                "calls_unfrozen_ms": median(unfrozen),
                "calls_unfrozen_p90_ms": p90(unfrozen),
                "window_ms": median([f["window"] for f in frozen]),
                "window_p90_ms": p90([f["window"] for f in frozen]),
                "calls_frozen_ms": median([f["calls"] for f in frozen]),
                "hold_ms": median([f["hold"] for f in frozen]),
            }
            row.update(
                ratio=round(row["window_ms"] / row["calls_unfrozen_ms"], 3),
                diff_ms=round(row["window_ms"] - row["calls_unfrozen_ms"], 3),
                hold_ratio=round(row["hold_ms"] / row["calls_unfrozen_ms"], 3),
            )
            rows.append(row)
            log(
                f"  {count} managed disk(s): window {row['window_ms']:.1f} ms, calls unfrozen "
                f"{row['calls_unfrozen_ms']:.1f} ms"
            )
    tables = [
        benchlib.table(
            "Frozen window with managed disks vs the same PUTs unfrozen (Resource Manager "
            f"stand-in on Azurite, not Azure; ext4 loop filesystem; medians of {reps}; ms)",
            COLUMNS,
            rows,
        )
    ]
    bound = "bounded by the kernel's FIFREEZE/FITHAW (see freeze_window's kernel table)"
    targets = []
    for r in rows:
        n = r["disks"]
        targets += [
            Target(f"managed window / calls, {n} disks", r["ratio"], RATIO_LIMIT, "x", bound),
            Target(f"managed hold / calls, {n} disks (kernel ioctls taken out)",
                   r["hold_ratio"], RATIO_LIMIT, "x"),
        ]  # fmt: skip
    return {
        "name": NAME,
        "params": {"reps": reps, "disk_counts": list(DISK_COUNTS), "cold_pause_s": COLD_PAUSE},
        "rows": rows,
        "tables": tables,
        "targets": targets,
        "notes": [
            "hold: window - freeze - thaw (the guardian's own timing of its ioctls): the part "
            "of the window the snapshot calls and the hand-offs take.",
            "Azure itself was not reached: the stand-in's latency is loopback plus a blob "
            "snapshot in Azurite; on Azure the calls take longer and the ratio shrinks.",
        ],
    }


if __name__ == "__main__":
    result = run(3)
    for text in result["tables"]:
        print(text)
