"""Concurrency: two runs on one host at once, the same taskId twice, another tool's freeze."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

from fault_support import SOAK, ModuleProcess, run_module_process, snapshot_args, summary

from harness.faultproxy import Rule, is_snapshot

DEADLINE = 3
BOUND = DEADLINE + 1.0
LOCKED = "holds the host lock"
ONE_PAIR = ["pre-start", "pre-end", "post-start", "post-end"]


def both(args_a, args_b, tmp_path) -> list[tuple[dict, ModuleProcess]]:
    """Start two runs at the same moment and wait for both."""
    runs = [ModuleProcess(args_a, tmp_path), ModuleProcess(args_b, tmp_path)]
    return [(run.finish(), run) for run in runs]


def outcome(result) -> str:
    if not result:
        return "no result"
    if result.get("status_code") == 2 and LOCKED in result.get("msg", ""):
        return "locked out"
    return str(result.get("status_code"))


def test_two_runs_on_one_host_at_once(
    figures, app, meter, proxy, proxied_disks, azurite, loop_ext4, run_dirs, tmp_path
):
    """One takes the host lock and runs; the other stops before touching anything."""
    scenario = figures.scenario(
        "two-runs-at-once", "concurrency", "two runs on one host at once", deadline=DEADLINE
    )
    proxy.rules[:] = [Rule(is_snapshot, delay=0.5)]
    disk = proxied_disks(1)[0]
    args = snapshot_args([disk], app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
    for index in range(5 * SOAK):
        with scenario.case(f"pair {index}", raise_at_exit=False) as case:
            before = len(app.entries())
            started = time.monotonic()
            results = both(args, args, tmp_path)
            for number, (_result, run) in enumerate(results):
                case.module_output(run, f"run{number}")
            outcomes = sorted(outcome(result) for result, _run in results)
            case.check(outcomes == ["0", "locked out"], f"outcomes {outcomes}")
            case.check(app.entries()[before:] == ONE_PAIR, f"scripts: {app.entries()[before:]}")
            case.frozen(meter, started, BOUND)
            scenario.note(" + ".join(outcomes))
    taken = len(azurite.list_snapshots(disk.container, disk.name))
    with scenario.case("snapshots in the service") as case:
        case.check(taken == 5 * SOAK, f"{taken} snapshots for {5 * SOAK} winning runs")
    scenario.assert_held()


def test_two_runs_with_separate_state_directories_share_one_host_lock(
    figures, make_app, meter, proxy, proxied_disks, loop_ext4, tmp_path
):
    """Two runs with their own state and log directories, started at varied offsets: the host
    lock is one per host whatever the state directory, so while one run holds the application
    the other stops before running anything (the snapshot of one can never be taken after the
    other's post-script released the application); both applications end released."""
    scenario = figures.scenario(
        "two-state-dirs-one-host",
        "concurrency",
        "two runs with separate state directories on one host",
        deadline=DEADLINE,
    )
    proxy.rules[:] = [Rule(is_snapshot, delay=0.5)]
    rng = random.Random(16_7)
    for index in range(4 * SOAK):
        apps = [make_app(f"app-{index}-a"), make_app(f"app-{index}-b")]
        argsets = [
            snapshot_args(
                proxied_disks(1), each, {"state_dir": str(tmp_path / f"state-{index}-{name}"),
                                         "log_dir": str(tmp_path / f"logs-{index}-{name}")},
                [loop_ext4], max_freeze_seconds=DEADLINE,
            )
            for name, each in zip("ab", apps)
        ]  # fmt: skip
        offset = rng.uniform(0.0, 0.8)
        with scenario.case(f"pair {index} (+{offset:.2f} s)", raise_at_exit=False) as case:
            started = time.monotonic()
            first = ModuleProcess(argsets[0], tmp_path)
            time.sleep(offset)
            second = ModuleProcess(argsets[1], tmp_path)
            results = [(first.finish(), first), (second.finish(), second)]
            outcomes = []
            for number, ((result, run), each) in enumerate(zip(results, apps)):
                case.module_output(run, f"run{number}")
                outcomes.append(outcome(result))
                if outcome(result) == "locked out":
                    case.check(each.entries() == [], f"a locked-out run ran {each.entries()}")
                else:
                    case.check(each.entries() == ONE_PAIR, f"scripts: {each.entries()}")
                    case.check(
                        result and (Path(result.get("status_file") or "/nonexistent")).exists(),
                        "no status file",
                    )
                case.check(each.lock_free(), "an application's lock is still held")
            # Both may finish only when they did not overlap at all (the first was done).
            case.check(
                sorted(outcomes) in (["0", "locked out"], ["0", "0"]), f"outcomes {outcomes}"
            )
            if sorted(outcomes) == ["0", "0"]:
                case.check(offset > 0.5, f"both ran although started {offset:.2f} s apart")
            case.frozen(meter, started, BOUND)
            case.check(
                meter.writable_after(time.monotonic(), 2.0), "the filesystem is not writable"
            )
            scenario.note(" + ".join(sorted(outcomes)))
    scenario.assert_held()


def test_the_same_task_id_twice(
    figures, app, meter, proxy, proxied_disks, loop_ext4, run_dirs, tmp_path
):
    """Sequentially the second is 3 and does nothing; at once, one runs and the other does not."""
    scenario = figures.scenario(
        "same-task-id", "concurrency", "the same taskId twice", deadline=DEADLINE
    )
    disk = proxied_disks(1)[0]

    def args(task: str) -> dict:
        return snapshot_args(
            [disk], app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE, task_id=task
        )

    with scenario.case("one after the other") as case:
        first, run = run_module_process(args("task-1"), tmp_path)
        case.module_output(run, "first")
        again, run = run_module_process(args("task-1"), tmp_path)
        case.module_output(run, "again")
        case.check(first and first["status_code"] == 0, summary(first))
        case.check(
            again and again["status_code"] == 3 and again["changed"] is False, summary(again)
        )
        case.check(app.entries() == ONE_PAIR, f"scripts: {app.entries()}")
    with scenario.case("both at once") as case:
        proxy.rules[:] = [Rule(is_snapshot, delay=0.5)]
        started = time.monotonic()
        results = both(args("task-2"), args("task-2"), tmp_path)
        for number, (_result, run) in enumerate(results):
            case.module_output(run, f"run{number}")
        outcomes = sorted(outcome(result) for result, _run in results)
        case.check(outcomes in (["0", "locked out"], ["0", "3"]), f"outcomes {outcomes}")
        case.check(app.entries() == ONE_PAIR * 2, f"scripts: {app.entries()}")
        case.frozen(meter, started, BOUND)
        scenario.note(" + ".join(outcomes))


def test_a_run_while_another_tool_holds_a_filesystem_frozen(
    figures, app, meter, blob_disks, azurite, loop_ext4, loop_xfs, run_dirs, tmp_path
):
    """121: nothing taken, our own freeze of the other filesystem undone at once, the other
    tool's freeze left alone (it is theirs to undo), the post-script run."""
    scenario = figures.scenario(
        "foreign-freeze",
        "concurrency",
        "a run while another tool holds a filesystem frozen",
        deadline=DEADLINE,
    )
    disks = blob_disks(1)
    with scenario.case("xfs frozen by fsfreeze") as case:
        subprocess.run(["fsfreeze", "-f", loop_xfs.mount_point], check=True)
        try:
            args = snapshot_args(
                disks, app, run_dirs, [loop_ext4, loop_xfs], max_freeze_seconds=DEADLINE
            )
            result, run = run_module_process(args, tmp_path)
            case.module_output(run)
            case.frozen(meter, run.started, BOUND)
            case.check(result and result["status_code"] == 121, summary(result))
            case.check(app.entries() == ONE_PAIR, f"scripts: {app.entries()}")
            case.check(azurite.list_snapshots(disks[0].container, disks[0].name) == [], "taken")
            probe = subprocess.Popen(
                [sys.executable, "-c", f"open('{loop_xfs.mount_point}/probe', 'w').write('x')"]
            )
            try:
                probe.wait(0.5)
                case.check(False, "the other tool's freeze was undone")
            except subprocess.TimeoutExpired:
                pass
        finally:
            subprocess.run(["fsfreeze", "-u", loop_xfs.mount_point], check=False)
        case.check(probe.wait(10) == 0, "the probe never wrote after the other tool's thaw")
        case.outputs(tmp_path / "state", tmp_path / "logs")
