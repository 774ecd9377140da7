"""The post-script of a run that died after its pre-script started runs first in the next run.

The run records its configuration (``post_script.pending`` in the state directory) before the
pre-script and removes the record after the post-script; the next run, under the host lock,
runs the recorded configuration's post-scripts after the same permission checks and warns.

The run owns its scripts for their whole life: a script dies with the module (its death
signal), and what it left in its process group or session is ended by the next run before the
post-script (the record names each script's pid and start time), so an interrupted pre-script
can never quiesce the application again after the post-script released it.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from fault_support import (
    ModuleProcess,
    run_module_process,
    snapshot_args,
    summary,
    wait_for,
    warnings_of,
)

RECORD = "post_script.pending"
PAIR = ["pre-start", "pre-end", "post-start", "post-end"]
RECOVERED = ["pre-start", "post-start", "post-end"]
DEADLINE = 3


def killed_in_pre_script(app, args, tmp_path, case, after: float = 0.0) -> None:
    """Kill the module `after` seconds into its pre-script; the pre-script dies with it."""
    run = ModuleProcess(args, tmp_path)
    case.check(wait_for(lambda: "pre-start" in app.entries(), 20), "the pre-script never ran")
    time.sleep(after)
    run.kill()
    run.finish()
    case.module_output(run, "killed")
    time.sleep(0.5)  # longer than the pre-script's own sleep: it would have ended by now
    case.check(app.count("pre-end") == 0, "the pre-script outlived the module")


def test_the_next_run_runs_the_missed_post_script_first(
    figures, make_app, meter, blob_disks, loop_ext4, run_dirs, tmp_path
):
    scenario = figures.scenario(
        "post-script-recovery", "kill", "the recovery of a missed post", deadline=DEADLINE
    )
    app = make_app(pre_extra="sleep 0.3")
    args = snapshot_args(blob_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
    record = Path(run_dirs["state_dir"]) / RECORD
    with scenario.case("killed in the pre-script") as case:
        killed_in_pre_script(app, args, tmp_path, case)
        case.check(record.exists(), "no record of the interrupted run")
        saved = json.loads(record.read_text())
        case.check(saved["config_path"] == app.config_location, f"record: {saved}")
        case.check(not app.lock_free(0.1), "the application was not quiesced by the pre-script")
        result, run = run_module_process(args, tmp_path)
        case.module_output(run, "next")
        case.frozen(meter, run.started, DEADLINE + 1)
        case.check(result and result["status_code"] == 0, summary(result))
        # The killed run's pre-script, its post-script (recovered), then the new run's pair.
        case.check(app.entries() == RECOVERED + PAIR, f"journal: {app.entries()}")
        case.check("recovered_post" in (result or {}).get("scripts", {}), "not in the result")
        case.check(
            any("stopped after its pre-script started" in text for text in warnings_of(result)),
            f"no warning: {warnings_of(result)}",
        )
        case.check(not record.exists(), "the record outlived the recovery")
        case.check(app.lock_free(), "the application's lock is still held")


def test_a_record_whose_scripts_fail_the_checks_runs_nothing(
    figures, app, meter, blob_disks, loop_ext4, run_dirs, tmp_path
):
    scenario = figures.scenario(
        "post-script-recovery", "kill", "the recovery of a missed post", deadline=DEADLINE
    )
    args = snapshot_args(blob_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
    with scenario.case("post-script made world-writable meanwhile") as case:
        killed_in_pre_script(app, args, tmp_path, case)
        app.post.chmod(0o777)
        before = app.entries()
        result, run = run_module_process(args, tmp_path)
        case.module_output(run, "next")
        case.check(app.entries() == before, f"a script ran: {app.entries()[len(before) :]}")
        case.check(
            any("cannot run" in text and "0777" in text for text in warnings_of(result)),
            f"no clear warning: {warnings_of(result)}",
        )
        case.check(result and result["status_code"] == 1, summary(result))
        case.check(not (Path(run_dirs["state_dir"]) / RECORD).exists(), "the record was kept")
        app.stop_helpers()


def test_an_unreadable_record_is_reported_and_removed(
    figures, app, blob_disks, loop_ext4, run_dirs, tmp_path
):
    scenario = figures.scenario(
        "post-script-recovery", "kill", "the recovery of a missed post", deadline=DEADLINE
    )
    args = snapshot_args(blob_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
    state = Path(run_dirs["state_dir"])
    for label, content in (("garbage", b"\x00{not json"), ("wrong types", b'{"config_path": 1}')):
        with scenario.case(f"record: {label}") as case:
            state.mkdir(mode=0o700, exist_ok=True)
            (state / RECORD).write_bytes(content)
            result, run = run_module_process(args, tmp_path)
            case.module_output(run)
            case.check(result and result["status_code"] == 0, summary(result))
            case.check(
                any("is unreadable" in text for text in warnings_of(result)),
                f"no warning: {warnings_of(result)}",
            )
            case.check(not (state / RECORD).exists(), "the record was kept")


def test_check_mode_reports_a_pending_post_script_and_runs_nothing(
    figures, make_app, blob_disks, loop_ext4, run_dirs, tmp_path
):
    scenario = figures.scenario(
        "post-script-recovery", "kill", "the recovery of a missed post", deadline=DEADLINE
    )
    app = make_app(pre_extra="sleep 0.3")
    args = snapshot_args(blob_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
    with scenario.case("check mode") as case:
        killed_in_pre_script(app, args, tmp_path, case)
        before = app.entries()
        result, run = run_module_process(args, tmp_path, check_mode=True)
        case.module_output(run)
        case.check(app.entries() == before, "check mode ran a script")
        case.check(
            any("the next run runs its post-scripts first" in t for t in warnings_of(result)),
            f"no warning: {warnings_of(result)}",
        )
        case.check((Path(run_dirs["state_dir"]) / RECORD).exists(), "check mode removed it")
        result, run = run_module_process(args, tmp_path)
        case.module_output(run, "real")
        case.check(result and result["status_code"] == 0, summary(result))
        case.check(app.lock_free(), "the application's lock is still held")


def test_a_complete_run_leaves_no_record(figures, app, blob_disks, loop_ext4, run_dirs, tmp_path):
    scenario = figures.scenario(
        "post-script-recovery", "kill", "the recovery of a missed post", deadline=DEADLINE
    )
    with scenario.case("complete run") as case:
        args = snapshot_args(blob_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
        result, run = run_module_process(args, tmp_path)
        case.module_output(run)
        case.check(result and result["status_code"] == 0, summary(result))
        case.check(not (Path(run_dirs["state_dir"]) / RECORD).exists(), "a record was left")
        case.check(warnings_of(result) == [], f"warnings: {warnings_of(result)}")


LATE = """( sleep {late}; echo "late-quiesce" >> "$dir/journal"
  exec 9>>"$dir/app.lock"; flock -x 9; sleep 60 ) &
sleep 0.3"""


@pytest.mark.parametrize("late", [2.5, 4.0])
def test_what_a_killed_pre_script_left_running_is_ended_before_the_post_script(
    figures, make_app, meter, blob_disks, loop_ext4, run_dirs, tmp_path, late
):
    """The issue's case: a pre-script leaves a process in its session that quiesces the
    application later; its run is killed at varied moments. The next run ends that process
    before the post-script, so the application is released for good."""
    scenario = figures.scenario(
        "interrupted-pre-script",
        "kill",
        "a killed run's pre-script outliving it",
        deadline=DEADLINE,
    )
    rng = random.Random(int(late * 1000))
    for index in range(2):
        app = make_app(f"app-{index}", pre_extra=LATE.format(late=late))
        args = snapshot_args(blob_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
        after = rng.uniform(0.0, 0.25)
        with scenario.case(f"late {late} s, killed +{after:.2f} s") as case:
            started = time.monotonic()
            killed_in_pre_script(app, args, tmp_path, case, after)
            saved = json.loads((Path(run_dirs["state_dir"]) / RECORD).read_text())
            case.check(saved.get("scripts"), f"the record names no script process: {saved}")
            result, run = run_module_process(args, tmp_path)
            case.module_output(run, "next")
            case.check(result and result["status_code"] == 0, summary(result))
            case.check(
                any("still running" in text for text in warnings_of(result))
                or "late-quiesce" in app.entries(),
                f"no warning of the ended processes: {warnings_of(result)}",
            )
            # Wait past the moment the left-behind process would have quiesced the application.
            time.sleep(max(0.0, late + 0.5 - (time.monotonic() - started)))
            entries = app.entries()
            last_post = len(entries) - 1 - entries[::-1].index("post-end")
            case.check(
                "late-quiesce" not in entries[last_post:],
                f"the application was quiesced after the post-script: {entries}",
            )
            case.check(app.lock_free(), "the application's lock is held after the post-script")
            case.check(meter.writable_after(time.monotonic(), 2.0), "not writable")
            case.check(
                (Path(run_dirs["state_dir"]) / "status" / "last.status").exists(), "no status"
            )
            app.stop_helpers()
    scenario.assert_held()
