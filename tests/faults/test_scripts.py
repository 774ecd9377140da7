"""Scripts that misbehave: hang, leave children that ignore SIGTERM, print megabytes, close
stdout early, exit 2, fail and then succeed on a retry, or get replaced between the check and the
run (the checked file is the file that runs).

Each ends with the reference's code, nothing frozen for longer than the deadline, no process of
a killed script left behind, and a result of bounded size.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fault_support import (
    App,
    ModuleProcess,
    run_module_process,
    snapshot_args,
    summary,
    wait_for,
)

from harness.faultproxy import Rule, is_open

DEADLINE = 3
BOUND = DEADLINE + 1.0
# A unique argument marks each test's long sleeps, so that leftovers can be found by argv.
MARK = f"{900 + uuid.uuid4().int % 99}.{uuid.uuid4().int % 997}"


def processes_with_argv(*argv: str) -> list[int]:
    wanted = "\0".join(argv).encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if wanted in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


@dataclass(frozen=True)
class Misbehaviour:
    name: str
    code: int
    consistency: str
    pre: str = ""
    post: str = ""
    app: dict = field(default_factory=dict)
    journal: tuple[str, ...] = ("pre-start", "pre-end", "post-start", "post-end")


HANG = f"sleep {MARK}"
IGNORE_TERM = (
    f"(trap '' TERM; exec sleep {MARK}) & (trap '' TERM; sleep {MARK} & wait) & "
    f"trap '' TERM; sleep {MARK}"
)
MEGABYTES = "head -c 20000000 /dev/zero | tr '\\000' x; head -c 5000000 /dev/urandom >&2"
CASES = [
    Misbehaviour("pre-script hangs", 1, "filesystem", pre=HANG, app={"timeout": 1},
                 journal=("pre-start", "post-start", "post-end")),
    Misbehaviour("pre-script hangs, stop on failure", 308, "none", pre=HANG,
                 app={"timeout": 1, "continue_on_failure": False},
                 journal=("pre-start", "post-start", "post-end")),
    Misbehaviour("children ignore SIGTERM", 1, "filesystem", pre=IGNORE_TERM, app={"timeout": 1},
                 journal=("pre-start", "post-start", "post-end")),
    Misbehaviour("post-script hangs", 1, "filesystem", post=HANG, app={"timeout": 1},
                 journal=("pre-start", "pre-end", "post-start")),
    Misbehaviour("prints megabytes", 0, "application", pre=MEGABYTES, post=MEGABYTES),
    Misbehaviour("closes stdout and stderr early", 0, "application",
                 pre="exec >&- 2>&-; sleep 0.2", post="exec >&- 2>&-"),
    Misbehaviour("exits 2", 1, "filesystem", pre="exit 2", journal=("pre-start", "post-start",
                 "post-end")),
    Misbehaviour("exits 2, stop on failure", 300, "none", pre="exit 2",
                 app={"continue_on_failure": False},
                 journal=("pre-start", "post-start", "post-end")),
    Misbehaviour("post-script exits 2, stop on failure", 301, "filesystem", post="exit 2",
                 app={"continue_on_failure": False},
                 journal=("pre-start", "pre-end", "post-start")),
    Misbehaviour(
        "fails twice, then succeeds on a retry", 0, "application",
        pre='n=$(grep -c pre-start "$dir/journal"); [ "$n" -ge 3 ] || exit 1',
        app={"retries": 2},
        journal=("pre-start", "pre-start", "pre-start", "pre-end", "post-start", "post-end"),
    ),
]  # fmt: skip


@pytest.mark.parametrize("case_", CASES, ids=[case.name for case in CASES])
def test_misbehaving_script(
    figures, make_app, meter, blob_disks, azurite, loop_ext4, run_dirs, tmp_path, case_
):
    scenario = figures.scenario(
        "misbehaving-scripts", "scripts", "scripts that misbehave", deadline=DEADLINE
    )
    app = make_app(pre_extra=case_.pre, post_extra=case_.post, **case_.app)
    with scenario.case(case_.name) as case:
        disks = blob_disks(1)
        args = snapshot_args(disks, app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
        result, process = run_module_process(args, tmp_path)
        case.module_output(process)
        case.frozen(meter, process.started, BOUND)
        case.check(
            result
            and (result["status_code"], result["consistency"]) == (case_.code, case_.consistency),
            summary(result),
        )
        case.check(tuple(app.entries()) == case_.journal, f"journal: {app.entries()}")
        case.check(not processes_with_argv("sleep", MARK), "a killed script left processes")
        case.check(len(process.stdout) < 200_000, f"a result of {len(process.stdout)} bytes")
        for phase in (result or {}).get("scripts", {}).values():
            for plugin in phase["plugins"]:
                tails = plugin["script"] or {}
                for stream in ("stdout_tail", "stderr_tail"):
                    case.check(len(tails.get(stream, "")) < 9000, f"{stream} is not bounded")
        taken = len(azurite.list_snapshots(disks[0].container, disks[0].name))
        case.check(taken == (case_.consistency != "none"), f"{taken} snapshots in the service")
        case.outputs(tmp_path / "state", tmp_path / "logs")


EVIL = '#!/bin/sh\necho "EVIL $*" >> "{journal}"\n'


@pytest.mark.parametrize("how", ["new file", "symbolic link", "world-writable file"])
def test_script_replaced_between_check_and_run(
    figures, app, meter, proxy, proxied_disks, loop_ext4, run_dirs, tmp_path, how
):
    """Both scripts are swapped after the precheck opened them: the checked files run."""
    scenario = figures.scenario(
        "scripts-replaced",
        "scripts",
        "scripts replaced between the check and the run",
        deadline=DEADLINE,
    )
    with scenario.case(how) as case:
        proxy.rules[:] = [Rule(is_open, delay=1.0)]  # the window: connecting to the disk
        disks = proxied_disks(1)
        run = ModuleProcess(
            snapshot_args(disks, app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE),
            tmp_path,
        )
        case.check(
            wait_for(lambda: proxy.requests(is_open) > 0, 20), "the run never connected to its disk"
        )
        evil = EVIL.format(journal=app.journal)
        for script in (app.pre, app.post):
            if how == "new file":
                App.write_script(script, evil)
            elif how == "symbolic link":
                target = tmp_path / f"evil-{script.name}"
                target.write_text(evil)
                target.chmod(0o700)
                script.unlink()
                script.symlink_to(target)
            else:
                App.write_script(script, evil, mode=0o777)
        result = run.finish()
        case.module_output(run)
        case.frozen(meter, run.started, BOUND)
        case.check(result and result["status_code"] == 0, summary(result))
        case.check(
            app.entries() == ["pre-start", "pre-end", "post-start", "post-end"],
            f"not the checked scripts ran: {app.entries()}",
        )
        case.check("EVIL" not in json.dumps(result), "the replacement ran")
