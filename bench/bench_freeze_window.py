"""Frozen window ÷ the same snapshot calls made without freezing, for 1, 4, 8 and 16 disks.

In one process, with the collection's own pieces: `BlobEndpoint` (connections opened before, as
the module does) and `Guardian` on two loop filesystems (ext4 and xfs) made for the run, against
Azurite on 127.0.0.1. Each repetition runs, in rotating order:

* unfrozen: the connections renewed (one properties call per disk, as the module does right
            before its freeze), then one thread per disk, each `create_snapshot()`, all joined
            (what `_snapshot_all` does); only the calls are timed;
* frozen:   `Guardian.start()`, the same renewal, `freeze()`, the same parallel calls, `thaw()`;
            the window is the guardian's `frozen_window_ms` (first FIFREEZE to last FITHAW, on
            its clock);
* kernel:   FIFREEZE then FITHAW of the same mounts by bare ioctls, no snapshot: what the kernel
            alone costs, the floor under any frozen window.

The window splits into the kernel's freeze and thaw time (as the guardian measured its ioctls)
and the hold between them: the calls plus the module's hand-offs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import tempfile
import threading
import time
from typing import Callable

import benchlib
from benchlib import Target, median, ms_since, p90

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._blob_rest import (
    BlobEndpoint,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._guardian import (
    FIFREEZE,
    FITHAW,
    Guardian,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._rcu_expedite import (
    RCU_EXPEDITED,
    prepare,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._sas import parse_sas_uri
from harness.azurite import start_azurite
from harness.loopfs import make_loop_filesystem

NAME = "freeze_window"
DISK_COUNTS = (1, 4, 8, 16)
MAX_FREEZE_SECONDS = 30
RATIO_LIMIT = 1.3
DIFF_LIMIT_MS = 5.0
WARMUP = 3
FSTYPES = ("ext4", "xfs")
COLD_PAUSE = 0.2
# The table's columns: (header, row key).
COLUMNS = (
    ("disks", "disks"),
    ("calls", "calls_unfrozen_ms"),
    ("window", "window_ms"),
    ("ratio", "ratio"),
    ("diff", "diff_ms"),
    ("freeze", "freeze_ms"),
    ("thaw", "thaw_ms"),
    ("hold", "hold_ms"),
    ("hold/calls", "hold_ratio"),
    ("hold-calls", "hold_diff_ms"),
    ("hand-off", "handoff_ms"),
)


def parallel_snapshots(endpoints: list[BlobEndpoint], metadata: dict[str, str]) -> float:
    """One thread per disk, as the module does; the wall time of all calls in ms."""
    results: list = [None] * len(endpoints)

    def take(index: int) -> None:
        results[index] = endpoints[index].create_snapshot(metadata)

    start = time.monotonic_ns()
    threads = [threading.Thread(target=take, args=(i,)) for i in range(len(endpoints))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = ms_since(start)
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"snapshot calls failed: {failed}")
    return elapsed


def renew(endpoints: list[BlobEndpoint]) -> None:
    """One properties call per disk, one after the other: the module's `_refresh`."""
    for endpoint in endpoints:
        endpoint.open()


def unfrozen_round(endpoints: list[BlobEndpoint], metadata: dict[str, str]) -> float:
    """The calls as the module makes them inside the window, without the freeze."""
    renew(endpoints)
    return parallel_snapshots(endpoints, metadata)


def frozen_round(mounts: list[str], endpoints, metadata) -> dict:
    """As the module does it, expediting included (expedite_freeze defaults to true)."""
    rcu = prepare(True)
    guardian = Guardian(mounts, MAX_FREEZE_SECONDS, rcu_fd=rcu.fd, rcu_earlier=rcu.earlier)
    guardian.start()
    try:
        renew(endpoints)
        guardian.freeze()
        calls = parallel_snapshots(endpoints, metadata)
        report = guardian.thaw()
    finally:
        guardian.close()
        rcu.close()
    if report.thaw_forced or report.errors or len(report.frozen_mounts) != len(mounts):
        raise RuntimeError(f"the freeze went wrong: {report}")
    return {
        "window": report.frozen_window_ms,
        "freeze": report.freeze_ms,
        "thaw": report.thaw_ms,
        "calls_frozen": calls,
        "hold": report.frozen_window_ms - report.freeze_ms - report.thaw_ms,
    }


def kernel_round(fds: list[int], parallel: bool = False, expedite: bool = False) -> float:
    """FIFREEZE every mount (one after the other, or all at once), then FITHAW: ms.
    ``expedite``: rcu_expedited is 1 during the FIFREEZE calls, as the guardian sets it."""
    frozen: list[int] = []
    rcu = prepare(expedite) if expedite else None
    if expedite and rcu.fd < 0:
        return float("nan")  # cannot be set here (see the kernel table's note)

    def freeze(fd: int) -> None:
        fcntl.ioctl(fd, FIFREEZE, 0)
        frozen.append(fd)

    try:
        start = time.monotonic_ns()
        if rcu is not None:
            os.pwrite(rcu.fd, b"1", 0)
        if parallel:
            threads = [threading.Thread(target=freeze, args=(fd,)) for fd in fds]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            for fd in fds:
                freeze(fd)
        if rcu is not None:
            os.pwrite(rcu.fd, rcu.earlier, 0)
        while frozen:
            fcntl.ioctl(frozen.pop(), FITHAW, 0)
        return ms_since(start)
    finally:
        for fd in reversed(frozen):
            with contextlib.suppress(OSError):
                fcntl.ioctl(fd, FITHAW, 0)
        if rcu is not None:
            os.pwrite(rcu.fd, rcu.earlier, 0)
            rcu.close()


def cold(round_: Callable[[], object]) -> Callable[[], object]:
    """Run `round_` after a pause: a real run freezes after minutes or hours without a freeze.

    Within ~20 ms of a thaw, the kernel still has the superblock's write locks on their slow
    path and a new FIFREEZE skips its RCU grace periods; 0.2 s later it no longer does.
    """

    def run() -> object:
        time.sleep(COLD_PAUSE)
        return round_()

    return run


def measure_kernel(mounts: list[str], reps: int) -> dict:
    """What the kernel alone costs: bare ioctls, nothing in between, no guardian."""
    fds = [os.open(m, os.O_RDONLY | os.O_DIRECTORY) for m in mounts]
    try:
        rounds = {
            "cold": cold(lambda: kernel_round(fds)),
            "cold_expedited": cold(lambda: kernel_round(fds, expedite=True)),
            "cold_parallel_expedited": cold(
                lambda: kernel_round(fds, parallel=True, expedite=True)
            ),
            "cold_parallel": cold(lambda: kernel_round(fds, parallel=True)),
            "warm": lambda: kernel_round(fds),  # right after the previous round's thaw
        }
        samples = sample(rounds, reps)
    finally:
        for fd in fds:
            os.close(fd)
    return {key: median(values) for key, values in samples.items()}


def sample(rounds: dict[str, Callable[[], object]], reps: int) -> dict[str, list]:
    """Every round once per repetition, in rotating order (no order bias), after a warm-up."""
    samples: dict[str, list] = {key: [] for key in rounds}
    order = list(rounds)
    for rep in range(WARMUP + reps):
        shift = rep % len(order)
        for key in order[shift:] + order[:shift]:
            value = rounds[key]()
            if rep >= WARMUP:
                samples[key].append(value)
    return samples


def run(reps: int, log: Callable[[str], None] = print) -> dict:
    rows = []
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(tempfile.TemporaryDirectory(prefix="acvs-bench-"))
        server = start_azurite(base)
        stack.callback(server.stop)
        filesystems = [make_loop_filesystem(fstype) for fstype in FSTYPES]
        for fs in filesystems:
            stack.callback(fs.teardown)
        mounts = [fs.mount_point for fs in filesystems]
        kernel = measure_kernel(mounts, reps)
        log(
            f"  kernel: FIFREEZE+FITHAW of {len(mounts)} mounts {kernel['cold']:.1f} ms cold, "
            f"{kernel['cold_expedited']:.1f} ms cold expedited, "
            f"{kernel['cold_parallel']:.1f} ms cold in parallel, "
            f"{kernel['cold_parallel_expedited']:.1f} ms cold in parallel expedited, "
            f"{kernel['warm']:.1f} ms warm"
        )
        container = server.create_container()
        metadata = {"appconsistentLevel": "application", "appconsistentHost": platform.node()}
        for count in DISK_COUNTS:
            endpoints = []
            for index in range(count):
                name = f"n{count}-disk{index}.vhd"
                server.create_page_blob(name, 64 * 1024, container=container)
                sas = parse_sas_uri(server.blob_sas(container, name), what=name)
                endpoints.append(BlobEndpoint(sas, timeout=10))
                stack.callback(endpoints[-1].close)
                endpoints[-1].open()
            samples = sample(
                {
                    "unfrozen": cold(lambda e=endpoints: unfrozen_round(e, metadata)),
                    "frozen": cold(lambda e=endpoints: frozen_round(mounts, e, metadata)),
                },
                reps,
            )
            frozen = samples["frozen"]
            row = {
                "disks": count,
                "calls_unfrozen_ms": median(samples["unfrozen"]),
                "calls_unfrozen_p90_ms": p90(samples["unfrozen"]),
                "window_ms": median([f["window"] for f in frozen]),
                "window_p90_ms": p90([f["window"] for f in frozen]),
                "freeze_ms": median([f["freeze"] for f in frozen]),
                "thaw_ms": median([f["thaw"] for f in frozen]),
                "hold_ms": median([f["hold"] for f in frozen]),
                "calls_frozen_ms": median([f["calls_frozen"] for f in frozen]),
                "handoff_ms": median([f["hold"] - f["calls_frozen"] for f in frozen]),
            }
            calls = row["calls_unfrozen_ms"]
            row.update(
                ratio=round(row["window_ms"] / calls, 3),
                diff_ms=round(row["window_ms"] - calls, 3),
                hold_ratio=round(row["hold_ms"] / calls, 3),
                hold_diff_ms=round(row["hold_ms"] - calls, 3),
            )
            rows.append(row)
            log(
                f"  {count:2d} disks: window {row['window_ms']:.1f} ms (freeze "
                f"{row['freeze_ms']:.1f}, hold {row['hold_ms']:.1f}), calls {calls:.1f} ms"
            )
            for endpoint in endpoints:
                endpoint.close()
    return report(rows, kernel, reps)


def report(rows: list[dict], kernel: dict, reps: int) -> dict:
    tables = [
        benchlib.table(
            f"Frozen window vs the same parallel snapshot calls unfrozen (loop filesystems "
            f"{' + '.join(FSTYPES)}; medians of {reps} repetitions; ms)",
            COLUMNS,
            rows,
        ),
        benchlib.table(
            f"The kernel alone: bare FIFREEZE of {len(FSTYPES)} mounts then FITHAW, nothing in "
            f"between (medians of {reps}; ms)",
            [
                ("cold, one after the other", "cold"),
                ("cold, expedited", "cold_expedited"),
                ("cold, in parallel", "cold_parallel"),
                ("cold, in parallel, expedited", "cold_parallel_expedited"),
                ("warm (right after a thaw)", "warm"),
            ],
            [kernel],
        ),
    ]
    bound = (
        f"bounded by the kernel: a bare FIFREEZE+FITHAW of the same {len(FSTYPES)} mounts, "
        f"nothing in between, takes {kernel['cold']:.1f} ms in this run, "
        f"{kernel['cold_expedited']:.1f} ms expedited (see the README)"
    )
    targets = []
    for r in rows:
        n = r["disks"]
        targets += [
            Target(f"window / calls, {n} disks", r["ratio"], RATIO_LIMIT, "x", bound),
            Target(f"window - calls, {n} disks", r["diff_ms"], DIFF_LIMIT_MS, "ms", bound),
            Target(f"hold / calls, {n} disks (kernel ioctls taken out)", r["hold_ratio"],
                   RATIO_LIMIT, "x"),
            Target(f"hold - calls, {n} disks (kernel ioctls taken out)", r["hold_diff_ms"],
                   DIFF_LIMIT_MS, "ms"),
        ]  # fmt: skip
    notes = [
        "window: the guardian's frozen_window_ms (first FIFREEZE start to last FITHAW end); "
        f"frozen rounds expedite the freeze as the module does ({RCU_EXPEDITED} 1 during the "
        "FIFREEZE calls) and syncfs() every mount before it.",
        "calls: both rounds renew every disk's connection first (one properties call each), as "
        "the module does right before its freeze; only the snapshot calls are timed.",
        "freeze, thaw: the guardian's own timing of its FIFREEZE and FITHAW ioctls.",
        "hold: window - freeze - thaw, while every mount is frozen; hand-off: hold minus the "
        "calls made inside it (pipe round trips to the guardian, its watcher thread).",
        f"Every frozen round starts {COLD_PAUSE} s after the previous thaw, as a real run does "
        "(a freeze within ~20 ms of a thaw is much cheaper; see the kernel table).",
    ]
    return {
        "name": NAME,
        "params": {
            "reps": reps,
            "warmup": WARMUP,
            "disk_counts": list(DISK_COUNTS),
            "filesystems": list(FSTYPES),
            "cold_pause_s": COLD_PAUSE,
        },
        "rows": rows,
        "kernel": kernel,
        "tables": tables,
        "targets": targets,
        "notes": notes,
    }
