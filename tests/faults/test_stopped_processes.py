"""Stopped processes: SIGSTOP of the guardian, of the module, or both, while frozen, with or
without SIGKILL of the other one.

A stopped process is alive: no pipe shows EOF, so nothing but the deadline can tell the others
to act. Each case checks, from outside: no write to the frozen filesystem waits longer than the
deadline plus one second; a module that lives on reports the forced thaw (status 2, never an
application-consistent success); no process of the run is left; the next run succeeds. The
deadline, the length of the snapshot call and the moment of the signal vary from case to case.
Every process stopped here is continued in teardown.
"""

from __future__ import annotations

import contextlib
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
)

from harness.faultproxy import Rule, is_snapshot

SEED = int(os.environ.get("APPCONSISTENT_FAULTS_SEED") or time.time())
# (stopped, killed): which process gets SIGSTOP and which SIGKILL, both while frozen.
MODES = (
    ("guardian", None),
    ("guardian", "module"),
    ("module", "guardian"),
    ("module+guardian", None),
)


def next_run_works(case, args, tmp_path, app, meter, bound) -> None:
    result, process = run_module_process(args, tmp_path)
    case.module_output(process, "next")
    case.check(result and result.get("status_code") == 0, f"next run: {summary(result)}")
    case.frozen(meter, process.started, bound)
    case.check(app.lock_free(), "the application's lock is still held after the next run")


@pytest.mark.timeout(240 * SOAK)
@pytest.mark.parametrize(("stopped", "killed"), MODES, ids=str)
def test_stopped_processes_while_frozen(
    figures, make_app, meter, proxy, proxied_disks, loop_ext4, run_dirs, tmp_path, stopped, killed
):
    name = f"stop-{stopped}" + (f"-kill-{killed}" if killed else "")
    rng = random.Random(f"{SEED}-{name}")
    scenario = figures.scenario(
        name,
        "stopped",
        f"SIGSTOP of the {stopped}"
        + (f" and SIGKILL of the {killed}" if killed else "")
        + " while frozen; deadline 2-4 s, call 0.3 s to deadline + 1 s",
    )
    scenario.note("seed", SEED)
    app = make_app()
    disk = proxied_disks(1)[0]
    for index in range(2 * SOAK):
        deadline = rng.choice((2, 3, 4))
        bound = deadline + 1.0
        call = rng.choice((0.3, deadline * 0.5, deadline + 1.0))
        args = snapshot_args([disk], app, run_dirs, [loop_ext4], max_freeze_seconds=deadline)
        label = f"run {index} deadline {deadline} s call {call} s"
        frozen_stopped: list[int] = []
        with scenario.case(label, raise_at_exit=False) as case:
            proxy.rules[:] = [Rule(is_snapshot, delay=call)]
            proxy.snapshot_seen.clear()
            run = ModuleProcess(args, tmp_path)
            try:
                case.check(proxy.snapshot_seen.wait(20), "the run never reached its snapshot")
                case.check(wait_for(lambda: meter.blocked_for() > 0.02, 2), "not frozen")
                time.sleep(rng.uniform(0, min(call, 0.25)))
                guardian = run.guardian()
                family = run_family(run.pid)
                case.check(guardian, "no guardian process")
                targets = {"module": run.pid, "guardian": guardian}
                for who in stopped.split("+"):
                    os.kill(targets[who], signal.SIGSTOP)
                    frozen_stopped.append(targets[who])
                if killed:
                    os.kill(targets[killed], signal.SIGKILL)
                # Writers must go on by the deadline + 1 s, with the stopped processes stopped.
                case.frozen(meter, run.started, bound)
            finally:
                for pid in frozen_stopped:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
            result = run.finish()
            case.module_output(run, "module")
            if killed == "module":
                case.check(result is None, "a killed module printed a result")
            else:
                case.check(
                    result
                    and result["status_code"] == 2
                    and result["thaw_forced"] is True
                    and result["consistency"] != "application",
                    f"expected 2 with a forced thaw: {summary(result)}",
                )
                status = case.outputs(tmp_path / "state", tmp_path / "logs")
                case.check(status and status["code"] == 2, "the status document does not say 2")
                if result:
                    scenario.note(f"forced: {result.get('forced_reason')}")
            case.check(wait_gone(family, 5), f"guardian or deputy {family} outlived the thaw")
            proxy.rules.clear()
            next_run_works(case, args, tmp_path, app, meter, bound)
    scenario.assert_held()
