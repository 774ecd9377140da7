"""Script-phase overhead: the time around a pre- and a post-script that do nothing.

Each script records its own start and end (`date +%s%N`, first and last line). The overhead of a
phase is the phase's time minus the script's own run time as it recorded it: starting the
script from its checked descriptor, waiting for it, collecting its output and the result.

* in process: `_prepost.precheck()` once per repetition, then `run_pre()` and `run_post()`,
  each timed around the call (the same calls the module times as `pre_ms` / `post_ms`);
* module: the snapshot module as a process (tests/harness/modules.py), freezing a loop ext4 and
  snapshotting one disk in Azurite; its reported `timings.pre_ms` / `timings.post_ms`.

The reference waits for scripts by sleeping `ScriptsExecutionPollTimeSeconds` (1-5 s, default 3)
per poll in its plugin host, so even an instant script costs it at least 1 s per phase
(reference, section 2); that figure is documented, not measured here.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import benchlib
from benchlib import Target, median, p90

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import _prepost
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import Status
from harness.azurite import start_azurite
from harness.loopfs import make_loop_filesystem
from harness.modules import run_module

NAME = "script_overhead"
LIMIT_MS = 20.0
REFERENCE_MIN_MS = 1000.0  # one poll of ScriptsExecutionPollTimeSeconds at its minimum
WARMUP = 2
SCRIPT = """#!/bin/sh
start=$(date +%s%N)
end=$(date +%s%N)
echo "{phase} $start $end" >> {journal}
"""


def write_scripts(directory: Path) -> tuple[Path, Path, Path]:
    """Root-owned 0700 scripts, a 0600 config and a 0600 plugin host file listing it."""
    journal = directory / "journal"
    paths = {}
    for phase in ("pre", "post"):
        paths[phase] = directory / f"{phase}-script.sh"
        paths[phase].write_text(SCRIPT.format(phase=phase, journal=journal))
        paths[phase].chmod(0o700)
    config = directory / "VMSnapshotScriptPluginConfig.json"
    config.write_text(
        json.dumps(
            {
                "pluginName": "ScriptRunner",
                "preScriptLocation": str(paths["pre"]),
                "postScriptLocation": str(paths["post"]),
                "timeoutInSeconds": 30,
                "continueBackupOnFailure": True,
                "fsFreezeEnabled": True,
            }
        )
    )
    config.chmod(0o600)
    # Our own host file: the machine's /etc/azure (if any) must not be what we measure.
    host = directory / "VMSnapshotPluginHost.conf"
    host.write_text(
        "[pre_post]\ntimeoutInSeconds: 60\nnumberOfPlugins: 1\n"
        f"pluginName0: ScriptRunner\npluginConfigPath0: {config}\n"
    )
    host.chmod(0o600)
    return config, host, journal


def recorded_ms(journal: Path) -> dict[str, float]:
    """The scripts' own run times from the journal, then empty it for the next repetition."""
    times = {}
    for line in journal.read_text().splitlines():
        phase, start, end = line.split()
        times[phase] = (int(end) - int(start)) / 1e6
    journal.unlink()
    return times


def in_process(config: Path, host: Path, journal: Path) -> dict[str, float]:
    precheck = _prepost.precheck(str(config), str(host))
    try:
        if precheck.status != Status.success:
            raise RuntimeError(f"precheck failed: {precheck.message}")
        phase_ms = {}
        for phase, runner in (("pre", _prepost.run_pre), ("post", _prepost.run_post)):
            start = time.monotonic_ns()
            result = runner(precheck)
            phase_ms[phase] = benchlib.ms_since(start)
            if result.status != Status.success:
                raise RuntimeError(f"{phase}-script failed: {result.message}")
    finally:
        precheck.close()
    own = recorded_ms(journal)
    return {phase: phase_ms[phase] - own[phase] for phase in ("pre", "post")}


def module_run(args: dict, journal: Path) -> dict[str, float]:
    result = run_module("snapshot", args)
    if result.get("status_code") != 0:
        raise RuntimeError(f"the module run failed: {result.get('message')}")
    own = recorded_ms(journal)
    timings = result["timings"]
    return {phase: timings[f"{phase}_ms"] - own[phase] for phase in ("pre", "post")}


def run(reps: int, log: Callable[[str], None] = print) -> dict:
    module_reps = max(3, reps // 3)
    with contextlib.ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="acvs-bench-")))
        os.chmod(base, 0o700)
        scripts = base / "scripts"
        scripts.mkdir(mode=0o700)
        config, host, journal = write_scripts(scripts)
        samples: dict[str, list[float]] = {"pre": [], "post": []}
        for rep in range(WARMUP + reps):
            overhead = in_process(config, host, journal)
            if rep >= WARMUP:
                for phase in samples:
                    samples[phase].append(overhead[phase])

        server = start_azurite(base / "azurite")
        stack.callback(server.stop)
        filesystem = make_loop_filesystem("ext4")
        stack.callback(filesystem.teardown)
        container = server.create_container()
        server.create_page_blob("disk0.vhd", 64 * 1024, container=container)
        args = {
            "disks": [server.blob_sas(container, "disk0.vhd")],
            "config_path": str(config),
            "host_config_path": str(host),
            "freeze_mounts": [filesystem.mount_point],
            "state_dir": str(base / "state"),
            "log_dir": str(base / "log"),
        }
        module_samples: dict[str, list[float]] = {"pre": [], "post": []}
        for rep in range(1 + module_reps):
            overhead = module_run(args, journal)
            if rep >= 1:
                for phase in module_samples:
                    module_samples[phase].append(overhead[phase])

    rows = []
    for where, data, count in (
        ("in process", samples, reps),
        ("module", module_samples, module_reps),
    ):
        for phase in ("pre", "post"):
            values = data[phase]
            rows.append(
                {
                    "where": where,
                    "phase": phase,
                    "reps": count,
                    "overhead_ms": median(values),
                    "overhead_p90_ms": p90(values),
                    "overhead_max_ms": round(max(values), 3),
                    "reference_min_ms": REFERENCE_MIN_MS,
                    "reference_over_ours": round(REFERENCE_MIN_MS / median(values), 1),
                }
            )
            log(f"  {where}, {phase}: {median(values):.2f} ms over the script's own run time")
    tables = [
        benchlib.table(
            "Script-phase overhead beyond the scripts' own run time (ms; the reference's "
            "floor is one poll, 1 s at least)",
            [
                ("where", "where"),
                ("phase", "phase"),
                ("reps", "reps"),
                ("median", "overhead_ms"),
                ("p90", "overhead_p90_ms"),
                ("max", "overhead_max_ms"),
                ("reference floor / median", "reference_over_ours"),
            ],
            rows,
        )
    ]
    targets = [
        Target(
            f"{r['phase']}-script phase overhead ({r['where']})", r["overhead_ms"], LIMIT_MS, "ms"
        )
        for r in rows
    ]
    return {
        "name": NAME,
        "params": {"reps": reps, "module_reps": module_reps, "warmup": WARMUP},
        "rows": rows,
        "tables": tables,
        "targets": targets,
        "notes": [
            "overhead = phase time (monotonic clock, around run_pre/run_post, or the module's "
            "pre_ms/post_ms) - (end - start) the script recorded with date +%s%N.",
            "It includes starting /bin/sh and its first `date`, which any script pays.",
        ],
    }
