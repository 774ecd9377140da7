"""SIGINT and SIGTERM at varied moments: in the pre-script, while frozen, in the post-script.

The run stops where it is and finishes: thawed (by the guardian), the post-scripts run, the
status written, a JSON result with a code, no KeyboardInterrupt traceback; the application is
released and the filesystem writable. A second signal cannot cut that cleanup short.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest
from fault_support import ModuleProcess, snapshot_args, summary, wait_for

from harness.faultproxy import Rule, is_snapshot

DEADLINE = 3
BOUND = DEADLINE + 1.0
PAIR = ["pre-start", "pre-end", "post-start", "post-end"]


def finished_properly(case, meter, app, run, result, run_dirs, *, post_expected=True) -> None:
    case.module_output(run)
    case.frozen(meter, run.started, BOUND)
    case.check(result is not None, "no JSON result")
    result = result or {}
    case.check(isinstance(result.get("status_code"), int), summary(result))
    case.check("KeyboardInterrupt" not in run.stdout + run.stderr, "KeyboardInterrupt shown")
    if post_expected:
        case.check(app.count("post-end") >= 1, f"the post-script did not run: {app.entries()}")
        case.check(
            (Path(run_dirs["state_dir"]) / "status" / "last.status").exists(), "no status file"
        )
        case.check(
            not (Path(run_dirs["state_dir"]) / "post_script.pending").exists(),
            "the interrupted-run record was left although the post-script ran",
        )
    case.check(app.lock_free(), "the application's lock is held")
    case.check(meter.writable_after(time.monotonic(), 2.0), "the filesystem is not writable")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_frozen(
    figures, make_app, meter, proxy, proxied_disks, loop_ext4, run_dirs, tmp_path, signum
):
    scenario = figures.scenario(
        "signal-while-frozen", "kill", "SIGINT/SIGTERM to the module", deadline=DEADLINE
    )
    proxy.rules[:] = [Rule(is_snapshot, delay=1.5)]
    rng = random.Random(int(signum))
    for index in range(3):
        app = make_app(f"app-{index}")
        args = snapshot_args(
            proxied_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE
        )
        after = rng.uniform(0.05, 1.2)
        with scenario.case(f"{signum.name} +{after:.2f} s into the freeze") as case:
            run = ModuleProcess(args, tmp_path)
            case.check(wait_for(lambda app=app: app.count("pre-end") == 1, 30), "no pre-script")
            case.check(wait_for(lambda: meter.blocked_for() > 0, 10), "never frozen")
            time.sleep(after)
            run.process.send_signal(signum)
            time.sleep(0.05)
            run.process.send_signal(signum)  # a second one must not cut the cleanup short
            result = run.finish()
            finished_properly(case, meter, app, run, result, run_dirs)
            case.check(app.entries() == PAIR, f"journal: {app.entries()}")
            case.check((result or {}).get("status_code") != 0, f"a success: {summary(result)}")
    scenario.assert_held()


@pytest.mark.parametrize("phase", ["pre", "post"])
def test_a_signal_during_a_slow_script(
    figures, make_app, meter, blob_disks, loop_ext4, run_dirs, tmp_path, phase
):
    scenario = figures.scenario(
        "signal-in-a-script", "kill", "SIGINT/SIGTERM to the module", deadline=DEADLINE
    )
    rng = random.Random(len(phase))
    for index, signum in enumerate((signal.SIGINT, signal.SIGTERM)):
        extra = {f"{phase}_extra": "sleep 1.5"}
        app = make_app(f"app-{index}", **extra)
        args = snapshot_args(blob_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
        after = rng.uniform(0.05, 1.0)
        with scenario.case(f"{signum.name} +{after:.2f} s into the {phase}-script") as case:
            run = ModuleProcess(args, tmp_path)
            case.check(
                wait_for(lambda app=app: app.count(f"{phase}-start") == 1, 30), f"no {phase}-script"
            )
            time.sleep(after)
            run.process.send_signal(signum)
            result = run.finish()
            finished_properly(case, meter, app, run, result, run_dirs)
            status = json.loads(
                (Path(run_dirs["state_dir"]) / "status" / "last.status").read_text() or "null"
            )
            case.check(status is not None, "empty status")
    scenario.assert_held()
