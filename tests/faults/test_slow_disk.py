"""A really slow disk: the deadline holds when the filesystem has data to write at freeze time.

The disk is a page blob in Azurite attached as a block device by the blob disk
(``tests/harness/blobdisk.py``: FUSE file, loop device, ext4 on it), with its writes (Put Page
calls) routed through the fault proxy, which holds each one ``delay_ms`` before passing it on:
a disk whose every write takes that long, one after the other (the loop device, in direct
I/O mode, writes whole requests of up to 128 KiB in order: about 2.5 MiB/s at 30 ms). The
kernel has no device-mapper here (no ``dm-delay``), so this is the slow disk built from real
parts.

Two kinds of writers, separate processes, dirty the filesystem:

* the pre-script itself writes ``burst_mib`` MiB (to the page cache) as its last act, so the
  flush before the freeze starts with tens of MiB to write;
* a steady writer appends at a share of the disk's measured write rate through the whole run, so
  data keeps getting dirty while the module flushes and right up to the freeze. At twice the
  disk's rate the disk can never catch up: the run must then refuse to freeze rather than hold
  the application's writes past the deadline.

Each run freezes the slow filesystem and a fast one (a loop mount of this machine's disk). The
fast one, mounted last, is frozen first and thawed last, so its freeze meter (a thread rewriting
one byte every 2 ms) is blocked for the whole window and nothing else. On the slow filesystem a
meter and the steady writer record every blocked write: those that overlap the window are the
freeze's; the others are ext4's journal commits during the flush (a commit holds every inode it
carries until the data queued before its own blocks is written; the same stall comes with any
writeback of that much data, run or no run), reported as a figure, not counted as frozen.

Whatever happens: no write blocked by the freeze longer than the deadline + 1 s, the application
quiesced (from the end of its pre-script to its release by the post-script) no longer than the
deadline + 1 s either, however much the flush before the freeze had to write (invariant 1), both
filesystems writable after the run, the post-script ran and released the application, the
status file written with the run's code, ``thaw_forced`` whenever the window ran over the
deadline, and never a clean success for such a window.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

import pytest
from fault_support import FreezeMeter, ModuleProcess, snapshot_args, summary

from harness.blobdisk import BlobDisk, attach_blob_disk
from harness.faultproxy import FaultProxy, Rule
from harness.records import run

DEADLINE = 2
BOUND = DEADLINE + 1.0
DISK_BYTES = 384 << 20
MKFS = {
    # 4 KiB blocks and few inodes: a small disk that still looks like a real one.
    "ext4": [
        *("mkfs.ext4", "-q", "-F", "-b", "4096", "-i", "65536"),
        *("-E", "lazy_itable_init=0,lazy_journal_init=0"),
    ],
    "xfs": ["mkfs.xfs", "-q", "-f"],
}
RATE_PROBE_MIB = 4
STEADY_REGION_MIB = 160  # the steady writer appends within this much, then starts over


@dataclass(frozen=True)
class Load:
    name: str
    delay_ms: int  # each write of the disk takes this long
    burst_mib: int  # dirtied by the pre-script right before the flush and the freeze
    steady_share: float  # the steady writer's pace, a share of the disk's write rate (0: none)
    fstype: str = "ext4"


LOADS = [
    Load("5 ms a write, 4 MiB from the pre-script", 5, 4, 0),
    Load("30 ms a write, 48 MiB from the pre-script", 30, 48, 0),
    Load("30 ms a write, 48 MiB, steady writer at 1/4 of the disk", 30, 48, 0.25),
    Load("10 ms a write, 16 MiB, steady writer at 1/2 of the disk", 10, 16, 0.5),
    Load("80 ms a write, 64 MiB, steady writer at 1/4 of the disk", 80, 64, 0.25),
    Load("30 ms a write, 16 MiB, steady writer at 2x the disk", 30, 16, 2.0),
    Load("xfs, 30 ms a write, 48 MiB, steady writer at 1/4 of the disk", 30, 48, 0.25, "xfs"),
]

STEADY_WRITER = textwrap.dedent(
    """
    import json, os, signal, sys, time
    path, rate, region = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    chunk = b"s" * 65536
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    written = 0
    stalls = []
    started = time.monotonic()
    print("ready", flush=True)
    while not stop:
        before = time.monotonic()
        os.pwrite(fd, chunk, written % region)  # appends: never rewrites a page in writeback
        after = time.monotonic()
        if after - before >= 0.02:
            stalls.append((before, after))
        written += len(chunk)
        ahead = started + written / rate - after
        if ahead > 0:
            time.sleep(ahead)
    print(json.dumps({"stalls": stalls, "written": written}), flush=True)
    """
)


def is_page_write(method: str, target: str) -> bool:
    return method == "PUT" and "comp=page" in target


@dataclass
class SlowDisk:
    disk: BlobDisk
    proxy: FaultProxy
    sas: str = field(repr=False)  # straight to Azurite: the snapshot call is not slowed

    def slow(self, delay_ms: int) -> None:
        self.proxy.rules[:] = [Rule(is_page_write, delay=delay_ms / 1000)]

    def fast(self) -> None:
        self.proxy.rules.clear()

    def settle(self) -> None:
        """Write everything back at full speed and drop the test files: the next case starts
        with a clean disk."""
        self.fast()
        for name in os.listdir(self.disk.mount_point):
            if name.startswith(("burst", "steady")):
                os.unlink(os.path.join(self.disk.mount_point, name))
        run(["sync", "-f", self.disk.mount_point])

    def write_rate(self) -> float:
        """Bytes a second the disk writes back at its current delay (direct I/O, in order)."""
        probe = os.path.join(self.disk.mount_point, "burst-rate-probe")
        started = time.monotonic()
        count = f"count={RATE_PROBE_MIB}"
        run(["dd", "if=/dev/zero", f"of={probe}", "bs=1M", count, "oflag=direct", "status=none"])
        return (RATE_PROBE_MIB << 20) / (time.monotonic() - started)


@pytest.fixture(scope="module")
def slow_disks(azurite) -> Iterator[Callable[[str], SlowDisk]]:
    """``slow_disks("xfs")``: the module's slow disk with that filesystem, made once."""
    proxy = FaultProxy(azurite.host, azurite.port)
    made: dict[str, SlowDisk] = {}

    def make(fstype: str) -> SlowDisk:
        if fstype not in made:
            container = azurite.create_container()
            azurite.create_page_blob("slow.vhd", DISK_BYTES, container=container)
            sas = azurite.blob_sas(container, "slow.vhd")
            disk = attach_blob_disk(proxy.url_for(sas))
            made[fstype] = SlowDisk(disk, proxy, sas)
            run([*MKFS[fstype], disk.device])
            disk.mount()
        return made[fstype]

    try:
        yield make
    finally:
        proxy.rules.clear()  # the unmounts write back at full speed
        for each in made.values():
            each.disk.teardown()  # before the proxy goes: the disk still writes through it
        proxy.close()


class SteadyWriter:
    """A process appending to the slow filesystem at ``rate`` bytes a second."""

    def __init__(self, path: str, rate: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", STEADY_WRITER, path, str(rate), str(STEADY_REGION_MIB << 20)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.process.stdout.readline()

    def stop(self) -> dict:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        out, _err = self.process.communicate(timeout=60)
        return json.loads(out.strip().splitlines()[-1])


def longest(stalls: list, window: tuple[float, float] | None = None) -> float:
    """The longest of ``stalls`` ((start, end) pairs) that overlaps ``window``."""
    if window is None:
        return 0.0
    overlapping = (end - start for start, end in stalls if start < window[1] and end > window[0])
    return max(overlapping, default=0.0)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("load", LOADS, ids=[load.name for load in LOADS])
def test_the_deadline_holds_on_a_slow_disk(
    figures, make_app, slow_disks, loop_filesystem_factory, run_dirs, tmp_path, load
):
    slow_disk = slow_disks(load.fstype)
    # Mounted after the slow disk: frozen first, thawed last.
    fast = loop_filesystem_factory("ext4")
    scenario = figures.scenario(
        f"slow-disk-{'' if load.fstype == 'ext4' else load.fstype + '-'}"
        f"{load.delay_ms}ms-{load.burst_mib}mib"
        + (f"-steady-{load.steady_share:g}" if load.steady_share else ""),
        "slow disk",
        f"{load.fstype}, {load.delay_ms} ms a write, {load.burst_mib} MiB dirtied by the pre-script"
        + (
            f", a steady writer at {load.steady_share:g} x the disk's rate"
            if load.steady_share
            else ""
        ),
        deadline=DEADLINE,
    )
    mount = slow_disk.disk.mount_point
    burst = os.path.join(mount, "burst")
    app = make_app(
        pre_extra=f"dd if=/dev/zero of='{burst}' bs=1M count={load.burst_mib} status=none",
    )
    slow_disk.settle()
    slow_disk.slow(load.delay_ms)
    rate = slow_disk.write_rate()
    scenario.note("disk (MiB/s)", f"{rate / (1 << 20):.2f}")
    meter, slow_meter = FreezeMeter(fast.mount_point), FreezeMeter(mount)
    writer = None
    try:
        with scenario.case(load.name) as case:
            if load.steady_share:
                writer = SteadyWriter(os.path.join(mount, "steady"), rate * load.steady_share)
            # The fast filesystem's meter is blocked for the whole window and nothing else (no
            # journal commit of the slow disk holds it).
            args = snapshot_args(
                [SimpleNamespace(sas=slow_disk.sas)], app, run_dirs, [fast, slow_disk.disk],
                max_freeze_seconds=DEADLINE,
            )  # fmt: skip
            process = ModuleProcess(args, tmp_path)
            result = process.finish(300)
            case.module_output(process)
            case.frozen(meter, process.started, BOUND)
            window_stalls = [stall for stall in meter.stalls if stall[1] >= process.started]
            window = max(window_stalls, key=lambda stall: stall[1] - stall[0], default=None)
            case.check(
                slow_meter.writable_after(time.monotonic(), BOUND), "the slow disk stays frozen"
            )
            slow_stalls = [stall for stall in slow_meter.stalls if stall[1] >= process.started]
            steady_stalls = writer.stop()["stalls"] if writer is not None else []
            stalls = {"fast": window_stalls, "slow": slow_stalls, "steady": steady_stalls}
            case.save("stalls.json", json.dumps({"started": process.started, **stalls}))
            writer = None
            blocked = max(longest(slow_stalls, window), longest(steady_stalls, window))
            case.check(blocked <= BOUND, f"a write to the slow disk was blocked {blocked:.3f} s")
            scenario.note("slow disk, frozen (ms)", f"{blocked * 1000:.0f}")
            whole_run = (process.started, time.monotonic())
            journal = max(longest(slow_stalls, whole_run), longest(steady_stalls, whole_run))
            scenario.note("slow disk, journal during the flush (ms)", f"{journal * 1000:.0f}")
            case.check(result is not None, "no JSON result")
            result = result or {}
            timings = result.get("timings", {})
            frozen_ms = timings.get("frozen_window_ms", 0.0)
            code = result.get("status_code")
            scenario.note("status", code)
            scenario.note("sync (ms)", f"{timings.get('sync_ms', 0):.0f}")
            scenario.note("freeze (ms)", f"{timings.get('freeze_ms', 0):.0f}")
            scenario.note("window (ms)", f"{frozen_ms:.0f}")
            if frozen_ms > DEADLINE * 1000:
                case.check(
                    result.get("thaw_forced") is True, f"over, not forced: {summary(result)}"
                )
                case.check(
                    code != 0 and result.get("consistency") != "application",
                    f"a window of {frozen_ms:.0f} ms reported as a success: {summary(result)}",
                )
            if code == 0:
                case.check(result.get("consistency") == "application", summary(result))
            if code == 122 and not frozen_ms:  # a refused flush says why, not only its code
                case.check("Not frozen" in result.get("message", ""), summary(result))
            if frozen_ms:
                frozen_mounts = [fast.mount_point, mount]
                case.check(result.get("frozen_mounts") == frozen_mounts, "not frozen fast first")
                case.check(window is not None, "the fast filesystem's meter saw no window")
            case.check(app.count("post-start") == app.count("pre-start") == 1, app.entries())
            case.check(app.lock_free(), "the application's lock is still held")
            quiesced = app.quiesced_seconds()
            case.check(quiesced is not None, "the scripts did not record the quiesced time")
            quiesced = quiesced or 0.0
            scenario.note("application quiesced (ms)", f"{quiesced * 1000:.0f}")
            case.check(quiesced <= BOUND, f"the application stayed quiesced {quiesced:.1f} s")
            local = case.outputs(tmp_path / "state", tmp_path / "logs")
            case.check(local and local["blob"]["code"] == code, "the local status document")
    finally:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.stop()
        slow_meter.stop()
        meter.stop()
        app.stop_helpers()
    print(f"\nfigures: {json.dumps(scenario.as_dict())}")  # the README's row, with pytest -s
    scenario.assert_held()
