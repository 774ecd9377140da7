"""``/sys/kernel/rcu_expedited`` has its earlier value again after every run: a normal one, one
whose module is killed while the guardian is inside an expedited FIFREEZE, one whose module and
guardian are both killed there, and one whose FIFREEZE outlasts the deadline.

To hold the guardian inside its FIFREEZE (where the value is 1) for as long as a test needs, the
frozen filesystem's image lives on another loop filesystem that the test freezes itself: the
inner FIFREEZE must write its journal through the loop device onto the frozen outer filesystem,
and waits until the test thaws it (the inner one is mounted without write barriers, so that the
run's syncfs() before the freeze does not wait too). That is also a freeze on a disk that stops
answering, the extreme of a slow disk: the thaw must follow the moment the freeze returns.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fault_support import (
    SOAK,
    ModuleProcess,
    children,
    is_guardian,
    run_family,
    run_module_process,
    snapshot_args,
    summary,
    wait_for,
    wait_gone,
)

RCU = Path("/sys/kernel/rcu_expedited")
SEED = int(os.environ.get("APPCONSISTENT_FAULTS_SEED") or time.time())

pytestmark = pytest.mark.skipif(
    not RCU.exists() or not os.access(RCU, os.W_OK) or Path("/sys/kernel/rcu_normal").read_text()
    .strip() == "1",
    reason="needs a writable /sys/kernel/rcu_expedited without rcu_normal=1",
)  # fmt: skip


def guardian_of(module: int, timeout: float) -> int | None:
    """The module's guardian, not one of its scripts (see `is_guardian`)."""
    found: list[int] = []

    def look() -> bool:
        found.extend(pid for pid in children(module) if is_guardian(pid, module))
        return bool(found)

    wait_for(look, timeout)
    return found[0] if found else None


def in_ioctl(pid: int) -> bool:
    """The process waits in a system call, and that call is ioctl (16 on x86_64, 29 on arm64)."""
    try:
        number = Path(f"/proc/{pid}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return False
    return number in ("16", "29")


def rcu() -> str:
    return RCU.read_text().strip()


@pytest.fixture
def rcu_zero():
    """The tests expect 0 before; whatever happens, the value the machine had is put back."""
    wait_for(lambda: rcu() == "0", 3)  # another run's freeze holds it for milliseconds
    before = rcu()
    if before != "0":
        pytest.skip(f"rcu_expedited is {before} on this machine")
    yield
    # Other runs on this machine expedite their freezes too, for milliseconds: wait them out.
    if not wait_for(lambda: rcu() == before, 3):
        RCU.write_text(before)
        pytest.fail(f"rcu_expedited was left at 1 (put back to {before} by the teardown)")


@pytest.fixture
def nested(loop_filesystem_factory):
    """(outer, inner): inner's image on outer. Teardown thaws outer (ours) whatever happened."""
    outer = loop_filesystem_factory("xfs")
    inner = loop_filesystem_factory("ext4", base_dir=outer.mount_point)
    # Without write barriers a clean inner filesystem's syncfs() (which the run does before it
    # freezes) sends nothing to its disk, while its FIFREEZE still writes the journal: only the
    # FIFREEZE waits for the frozen outer filesystem.
    subprocess.run(["mount", "-o", "remount,barrier=0", inner.mount_point], check=True)
    yield outer, inner
    subprocess.run(["fsfreeze", "-u", outer.mount_point], check=False, capture_output=True)


def hold_outer(outer) -> None:
    os.sync()  # nothing dirty on either: the module's syncfs must not block, only the FIFREEZE
    subprocess.run(["fsfreeze", "-f", outer.mount_point], check=True)


def release_outer(outer) -> None:
    subprocess.run(["fsfreeze", "-u", outer.mount_point], check=True)


@pytest.mark.timeout(120)
def test_a_normal_run_expedites_and_puts_the_value_back(
    figures, make_app, blob_disks, loop_ext4, run_dirs, tmp_path, rcu_zero
):
    scenario = figures.scenario("rcu-normal-run", "rcu", "a normal run with expedite_freeze")
    app = make_app()
    disks = blob_disks(1)
    for expedite in (True, False):
        with scenario.case(f"expedite_freeze={expedite}") as case:
            args = snapshot_args(
                disks, app, run_dirs, [loop_ext4], max_freeze_seconds=5, expedite_freeze=expedite
            )
            result, process = run_module_process(args, tmp_path)
            case.module_output(process)
            case.check(result and result["status_code"] == 0, f"run failed: {summary(result)}")
            case.check(
                result and result.get("freeze_expedited") is expedite,
                f"freeze_expedited is not {expedite}: {result and result.get('freeze_expedited')}",
            )
            if not expedite:
                case.check("off" in (result or {}).get("freeze_expedite_note", ""), "no note")
            case.check(rcu() == "0", f"rcu_expedited is {rcu()} after the run")
    scenario.assert_held()


@pytest.mark.timeout(240 * SOAK)
@pytest.mark.parametrize("killed", ["module", "module+guardian", "guardian+module", "nothing"])
def test_the_value_comes_back_when_the_run_dies_inside_the_freeze(
    figures, make_app, blob_disks, nested, run_dirs, tmp_path, rcu_zero, killed
):
    """Killed while the guardian waits in an expedited FIFREEZE; "nothing": that FIFREEZE
    outlasts the deadline, and the module answers it with a thaw the moment it returns."""
    outer, inner = nested
    rng = random.Random(f"{SEED}-{killed}")
    scenario = figures.scenario(
        f"rcu-kill-{killed}",
        "rcu",
        f"SIGKILL of {killed} inside an expedited FIFREEZE that waits for its disk"
        if killed != "nothing"
        else "an expedited FIFREEZE that outlasts the deadline (its disk stops answering)",
    )
    scenario.note("seed", SEED)
    app = make_app()
    disks = blob_disks(1)
    for index in range(2 * SOAK):
        deadline = rng.choice((2, 3))
        args = snapshot_args(disks, app, run_dirs, [inner], max_freeze_seconds=deadline)
        with scenario.case(f"run {index} deadline {deadline}", raise_at_exit=False) as case:
            hold_outer(outer)
            run = ModuleProcess(args, tmp_path)
            probe = None
            try:
                guardian = guardian_of(run.pid, 20)
                family = run_family(run.pid)
                case.check(guardian, "no guardian")
                # Our guardian inside its FIFREEZE, with the value at 1 (other runs on this
                # machine may set it too: the syscall tells that it is ours that waits).
                case.check(
                    wait_for(lambda g=guardian: in_ioctl(g) and rcu() == "1", 20),
                    "the guardian never waited in an expedited FIFREEZE",
                )
                if killed == "nothing":
                    time.sleep(deadline + rng.uniform(0.3, 1.0))  # past the deadline, still in
                else:
                    time.sleep(rng.uniform(0, 0.3))
                    targets = {"module": run.pid, "guardian": guardian}
                    for who in killed.split("+"):
                        os.kill(targets[who], signal.SIGKILL)
                # A writer in its own process: this one must never block on the filesystem.
                probe = subprocess.Popen(["sh", "-c", f"echo x > '{inner.mount_point}/probe'"])
                release_outer(outer)
                case.check(wait_for(lambda: rcu() == "0", 2.0), "rcu_expedited not 0 within 2 s")
                case.check(
                    wait_for(lambda p=probe: p.poll() == 0, 1.5),
                    "the inner filesystem was not thawed within 1.5 s of its freeze returning",
                )
            finally:
                # Ours: thawed whatever happened (a second thaw is a harmless EINVAL).
                subprocess.run(
                    ["fsfreeze", "-u", outer.mount_point], check=False, capture_output=True
                )
                if probe is not None and probe.poll() is None:
                    subprocess.run(
                        ["fsfreeze", "-u", inner.mount_point], check=False, capture_output=True
                    )
                    probe.wait(30)
            result = run.finish()
            case.module_output(run, "module")
            if killed == "nothing":
                case.check(
                    result and result["status_code"] != 0 and result.get("thaw_forced") is True,
                    f"a freeze past the deadline was not reported as forced: {summary(result)}",
                )
            case.check(wait_gone(family, 5), "guardian or deputy outlived the thaw")
            case.check(rcu() == "0", f"rcu_expedited is {rcu()} at the end")
            result, process = run_module_process(
                snapshot_args(disks, app, run_dirs, [inner], max_freeze_seconds=5), tmp_path
            )
            case.module_output(process, "next")
            case.check(result and result["status_code"] == 0, f"next run: {summary(result)}")
            case.check(rcu() == "0", f"rcu_expedited is {rcu()} after the next run")
    scenario.assert_held()
