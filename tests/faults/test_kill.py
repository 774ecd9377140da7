"""Kill and crash: SIGKILL of the module at random points, of the guardian, of both.

After each: no write to the frozen filesystem waits longer than the deadline plus one second
(measured from outside by the freeze meter), the application's lock is free again (its
post-script ran, in the same run or first thing in the next one), no process of the killed run
is left, and the next run takes an application-consistent snapshot.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
from fault_support import (
    SOAK,
    ModuleProcess,
    run_family,
    run_module_process,
    snapshot_args,
    summary,
    wait_for,
    wait_gone,
    warnings_of,
)

from harness.faultproxy import Rule, is_snapshot

DEADLINE = 2  # max_freeze_seconds of these runs
BOUND = DEADLINE + 1.0  # the invariant: nothing stays frozen longer than this
KILL_RUNS = 50 * SOAK
SEED = int(os.environ.get("APPCONSISTENT_FAULTS_SEED") or time.time())
RECOVERED = "stopped after its pre-script started"
# Where the kill lands: spread over the whole run, each point reached on purpose.
STRATA = ("startup", "pre-script", "frozen", "post-script", "anywhere")


def new_entries(app, before: int) -> list[str]:
    return app.entries()[before:]


def phase_at_kill(run: ModuleProcess, app, before: int, proxy) -> str:
    """Where the run was when it was killed, from the journal and the proxy's log."""
    if run.process.poll() is not None:
        return "after exit"
    entries = new_entries(app, before)
    if "post-end" in entries:
        return "after post-script"
    if "post-start" in entries:
        return "post-script"
    if proxy.snapshot_seen.is_set():
        return "frozen"
    if "pre-end" in entries:
        return "before freeze"
    if "pre-start" in entries:
        return "pre-script"
    return "before pre-script"


def reach(stratum: str, run: ModuleProcess, app, before: int, proxy, rng: random.Random) -> None:
    """Wait until the run is at the stratum's point, plus a random extra moment."""

    def started(entry: str) -> bool:
        return entry in new_entries(app, before) or run.process.poll() is not None

    if stratum == "startup":
        time.sleep(rng.uniform(0, 0.2))
    elif stratum == "pre-script":
        wait_for(lambda: started("pre-start"), 10)
        time.sleep(rng.uniform(0, 0.08))
    elif stratum == "frozen":
        wait_for(lambda: proxy.snapshot_seen.is_set() or run.process.poll() is not None, 10)
        time.sleep(rng.uniform(0, 0.12))
    elif stratum == "post-script":
        wait_for(lambda: started("post-start"), 10)
        time.sleep(rng.uniform(0, 0.08))
    else:
        time.sleep(rng.uniform(0, 0.8))


def next_run_works(case, args, tmp_path, app, meter) -> dict:
    """The run after a kill: application-consistent, the application's lock free again."""
    result, process = run_module_process(args, tmp_path)
    case.module_output(process, "next")
    case.check(result and result.get("status_code") == 0, f"next run: {summary(result)}")
    case.frozen(meter, process.started, BOUND)
    case.check(
        app.count("post-start") >= app.count("pre-start"),
        f"a pre-script was never followed by its post-script: {app.entries()[-8:]}",
    )
    case.check(app.lock_free(), "the application's lock is still held after the next run")
    return result or {}


@pytest.mark.timeout(300 * SOAK)
def test_sigkill_of_the_module_at_random_points(
    figures, make_app, meter, proxy, proxied_disks, loop_ext4, run_dirs, tmp_path
):
    scenario = figures.scenario(
        "kill-module-random",
        "kill",
        "SIGKILL of the module before, during, after the freeze",
        deadline=DEADLINE,
    )
    scenario.note("seed", SEED)
    rng = random.Random(SEED)
    app = make_app(pre_extra="sleep 0.1", post_extra="sleep 0.1")
    disk = proxied_disks(1)[0]
    args = snapshot_args([disk], app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
    slow_snapshot = Rule(is_snapshot, delay=0.2)  # a frozen window worth aiming at
    for index in range(KILL_RUNS):
        stratum = STRATA[index % len(STRATA)]
        with scenario.case(f"run {index} ({stratum})", raise_at_exit=False) as case:
            proxy.rules[:] = [slow_snapshot]
            proxy.snapshot_seen.clear()
            before = len(app.entries())
            run = ModuleProcess(args, tmp_path)
            reach(stratum, run, app, before, proxy, rng)
            phase = phase_at_kill(run, app, before, proxy)
            family = run_family(run.pid)
            frozen_now = meter.blocked_for() > 0.01
            run.kill()
            run.finish()
            case.module_output(run, "killed")
            scenario.note(f"killed {phase}")
            if frozen_now:
                scenario.note("frozen at the kill (meter)")
            case.frozen(meter, run.started, BOUND)
            case.check(wait_gone(family, 5), f"guardian or deputy {family} outlived the thaw")
            case.check(app.pre_scripts_done(), "an orphaned pre-script did not end")
            proxy.rules.clear()
            result = next_run_works(case, args, tmp_path, app, meter)
            if any(RECOVERED in warning for warning in warnings_of(result)):
                scenario.note("post-script run by the next run")
    scenario.assert_held()


def frozen_run(args, tmp_path, proxy, meter, case) -> ModuleProcess:
    """Start a run whose snapshot call hangs for 3 s; return it once it is frozen."""
    proxy.rules[:] = [Rule(is_snapshot, delay=3)]
    proxy.snapshot_seen.clear()
    run = ModuleProcess(args, tmp_path)
    case.check(proxy.snapshot_seen.wait(20), "the run never reached its snapshot call")
    case.check(wait_for(lambda: meter.blocked_for() > 0.05, 2), "not frozen during the call")
    return run


@pytest.mark.timeout(120 * SOAK)
def test_sigkill_of_the_guardian(
    figures, make_app, meter, proxy, proxied_disks, loop_ext4, run_dirs, tmp_path
):
    """The module thaws at once, reports the forced thaw (2) and still runs the post-script."""
    scenario = figures.scenario(
        "kill-guardian", "kill", "SIGKILL of the freeze guardian", deadline=DEADLINE + 8
    )
    app = make_app()
    disk = proxied_disks(1)[0]
    args = snapshot_args([disk], app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE + 8)
    for index in range(3 * SOAK):
        with scenario.case(f"run {index}", raise_at_exit=False) as case:
            run = frozen_run(args, tmp_path, proxy, meter, case)
            guardian = run.guardian()
            case.check(guardian, "no guardian process")
            os.kill(guardian, signal.SIGKILL)
            killed = time.monotonic()
            case.check(meter.writable_after(killed, 2.0), "not thawed within 2 s of the kill")
            result = run.finish()
            case.module_output(run, "module")
            case.frozen(meter, run.started, DEADLINE + 8 + 1)
            case.check(
                result and result["status_code"] == 2 and result["thaw_forced"] is True,
                f"expected 2 with a forced thaw: {summary(result)}",
            )
            status = case.outputs(tmp_path / "state", tmp_path / "logs")
            case.check(status and status["code"] == 2, "the status document does not say 2")
            case.check(app.entries()[-2:] == ["post-start", "post-end"], "no post-script")
            proxy.rules.clear()
            next_run_works(case, args, tmp_path, app, meter)
    scenario.assert_held()


@pytest.mark.timeout(120 * SOAK)
@pytest.mark.parametrize("first", ["module", "guardian"])
def test_sigkill_of_module_and_guardian_at_once(
    figures, make_app, meter, proxy, proxied_disks, loop_ext4, run_dirs, tmp_path, first
):
    """Both die within microseconds: the guardian's deputy thaws, the next run runs the post."""
    scenario = figures.scenario(
        "kill-both",
        "kill",
        "SIGKILL of module and guardian back to back (either first)",
        deadline=DEADLINE + 8,
    )
    app = make_app()
    disk = proxied_disks(1)[0]
    args = snapshot_args([disk], app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE + 8)
    for index in range(3 * SOAK):
        with scenario.case(f"{first} first, run {index}", raise_at_exit=False) as case:
            run = frozen_run(args, tmp_path, proxy, meter, case)
            guardian = run.guardian()
            family = run_family(run.pid)
            targets = [run.pid, guardian] if first == "module" else [guardian, run.pid]
            for pid in targets:
                os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            case.check(meter.writable_after(killed, 2.0), "not thawed within 2 s of the kills")
            run.finish()
            case.module_output(run, "killed")
            case.frozen(meter, run.started, DEADLINE + 8 + 1)
            case.check(wait_gone(family, 5), "the deputy did not end after thawing")
            proxy.rules.clear()
            result = next_run_works(case, args, tmp_path, app, meter)
            case.check(
                any(RECOVERED in warning for warning in warnings_of(result)),
                "the next run did not report running the interrupted run's post-script",
            )
    scenario.assert_held()
