"""The post-script of a run that died after its pre-script started runs first in the next run.

The run records its configuration (``post_script.pending`` in the state directory) before the
pre-script and removes the record after the post-script; the next run, under the host lock,
runs the recorded configuration's post-scripts after the same permission checks and warns.
"""

from __future__ import annotations

import json
from pathlib import Path

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
DEADLINE = 3


def killed_in_pre_script(app, args, tmp_path, case) -> None:
    run = ModuleProcess(args, tmp_path)
    case.check(wait_for(lambda: "pre-start" in app.entries(), 20), "the pre-script never ran")
    run.kill()
    run.finish()
    case.module_output(run, "killed")
    case.check(app.pre_scripts_done(), "the orphaned pre-script did not end")


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
        case.check(app.entries() == PAIR * 2, f"journal: {app.entries()}")
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
