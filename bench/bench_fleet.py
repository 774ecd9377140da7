"""Fleet cost, enforcement cost and peak memory, on namespace hosts over ssh.

For N = 5, 10 and 20 hosts (tests/harness/fleet.py: sshd in network namespaces, a loop ext4 data
disk each, Azurite on the bridge, one disk blob per host), every play runs with the same
inventory and settings: forks = N, ssh pipelining, ControlPersist.

* command:   bench/playbooks/command.yml, one `ansible.builtin.command: true` task (the baseline);
* module:    bench/playbooks/snapshot_module.yml, the bare snapshot module task;
* role:      the collection's playbook appconsistent.vmsnapshot.snapshot (the snapshot role);
* configure: the collection's playbook appconsistent.vmsnapshot.configure, rerun on hosts that
             already have the configuration (the nightly enforcement run; changed=0 is checked).

Each repetition runs the four in rotating order; figures are medians. Round trips per host: one
more run of each with -vvv, counting the ssh commands Ansible executes per host (`SSH: EXEC`).
Drift: on every host the pre-script's mode is changed by hand and a config value edited, then one
configure run with --diff must change every host, show both in the diff, and the next run nothing.
Large scripts (first fleet): the rollout and the rerun of a LARGE_SCRIPT_BYTES pre-script.
Peak memory: on the first fleet the command and module plays run once more with each host's
interpreter wrapped by a small program that records the module process's peak RSS.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import benchlib
import yaml
from benchlib import Target, median

from harness.azurite import Azurite
from harness.fleet import DATA_MOUNT, Fleet, running_fleet

SIZES = (5, 10, 20)
RATIO_LIMIT = 1.5
PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
PLAYS = {
    "command": str(PLAYBOOKS / "command.yml"),
    "module": str(PLAYBOOKS / "snapshot_module.yml"),
    "role": "appconsistent.vmsnapshot.snapshot",
    "configure": "appconsistent.vmsnapshot.configure",
}
NOOP_SCRIPT = "#!/bin/sh\nexit 0\n"
ENFORCE_RATIO_LIMIT = 2.0
ENFORCE_TRIPS_LIMIT = 2
ENFORCEMENT_KEYS = ("configure", "rollout", "drift", "large")
LARGE_SCRIPT_BYTES = 4 * 1024 * 1024
AZURE = "/etc/azure"
# What an operator changes by hand: a script's mode and a value in the JSON configuration.
DRIFT = (
    f"chmod 0755 {AZURE}/pre-script.sh && "
    f'sed -i \'s/"timeoutInSeconds": 30/"timeoutInSeconds": 45/\' '
    f"{AZURE}/VMSnapshotScriptPluginConfig.json"
)
RECAP = re.compile(r"^(acvs-h\d+)\s+:\s+ok=\d+\s+changed=(\d+)", re.M)
SSH_EXEC = re.compile(r"^<([\d.]+)> SSH: EXEC ", re.M)
RSS_WRAPPER = "/root/acvs-peak-rss"
RSS_LOG = "root/acvs-peak-rss.log"
# Runs the interpreter Ansible asked for as a child, then logs the child's peak RSS (KiB).
RSS_WRAPPER_SOURCE = f"""#!/usr/bin/python3
import resource, subprocess, sys
code = subprocess.call(["/usr/bin/python3", *sys.argv[1:]])
with open("/{RSS_LOG}", "a") as log:
    log.write(f"{{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}}\\n")
sys.exit(code)
"""


def write_vars(fleet: Fleet, directory: Path) -> Path:
    """The plays' variables (disk SAS URIs are secrets: 0600 in a private temp dir)."""
    service = Azurite.from_state(fleet.azurite)
    container = service.create_container("bench")
    hosts = {}
    for name in fleet.names:
        service.create_page_blob(f"{name}.vhd", 64 * 1024, container=container)
        hosts[name] = {"snapshot_disks": [service.blob_sas(container, f"{name}.vhd")]}
    group_vars = {
        "configure_prepost_pre_script_content": NOOP_SCRIPT,
        "configure_prepost_post_script_content": NOOP_SCRIPT,
        "snapshot_freeze_mounts": [DATA_MOUNT],
    }
    path = directory / f"vars-{fleet.id}.yml"
    path.touch(mode=0o600)
    path.write_text(
        yaml.safe_dump({"all": {"children": {"fleet": {"hosts": hosts, "vars": group_vars}}}})
    )
    return path


def play(
    fleet: Fleet, extra: Path, name: str, *options: str, rollout: bool = False
) -> tuple[float, subprocess.CompletedProcess]:
    """Run one play on the whole fleet; its wall time in seconds.

    Raises when a host fails, or when a configure run that is not the rollout changes anything.
    """
    command = [str(benchlib.VENV_BIN / "ansible-playbook"), "-i", fleet.inventory]
    command += ["-i", str(extra), PLAYS[name], "-f", str(len(fleet.hosts))]
    command += ["-e", "target_hosts=fleet", *options]
    env = {**fleet.env(), "ANSIBLE_NOCOLOR": "1"}
    start = time.monotonic()
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=1800, check=False
    )
    elapsed = time.monotonic() - start
    changed = {m[1]: int(m[2]) for m in RECAP.finditer(done.stdout)}
    if done.returncode or len(changed) != len(fleet.hosts):
        raise RuntimeError(f"{name} failed (rc {done.returncode}):\n{done.stdout[-2000:]}")
    if name == "configure" and not rollout and any(changed.values()):
        raise RuntimeError(f"the configure rerun changed something:\n{done.stdout[-2000:]}")
    return elapsed, done


def round_trips(fleet: Fleet, extra: Path, name: str) -> float:
    """Median over hosts of the ssh commands one run of the play executes on a host."""
    done = play(fleet, extra, name, "-vvv")[1]
    per_host = Counter(SSH_EXEC.findall(done.stdout))
    trips = statistics.median(per_host[h.address] for h in fleet.hosts)
    return int(trips) if trips == int(trips) else trips


def drift(fleet: Fleet, extra: Path) -> dict:
    """Drift made by hand on every host, repaired by one run that shows it in the diff."""
    for name in fleet.names:
        fleet.ssh(name, DRIFT)
    seconds, done = play(fleet, extra, "configure", "--diff", rollout=True)
    changed = [int(m[2]) for m in RECAP.finditer(done.stdout)]
    shown_mode = done.stdout.count('-    "mode": "0755",')
    shown_value = done.stdout.count('-  "timeoutInSeconds": 45,')
    play(fleet, extra, "configure")  # raises unless the repaired fleet now changes nothing
    repaired = all(count == 1 for count in changed)
    return {
        "drift_s": round(seconds, 3),
        "drift_repaired": repaired and shown_mode == shown_value == len(fleet.hosts),
    }


def large_script(fleet: Fleet, extra: Path, directory: Path) -> dict:
    """Rollout and rerun of a pre-script of LARGE_SCRIPT_BYTES (a shell comment block)."""
    line = "# " + "x" * 97 + "\n"
    content = NOOP_SCRIPT + line * (LARGE_SCRIPT_BYTES // len(line))
    big = directory / "large-script.yml"
    big.write_text(yaml.safe_dump({"configure_prepost_pre_script_content": content}))
    rollout_s = play(fleet, extra, "configure", "-e", f"@{big}", rollout=True)[0]
    rerun_s = play(fleet, extra, "configure", "-e", f"@{big}")[0]
    done = play(fleet, extra, "configure", "-e", f"@{big}", "-vvv")[1]
    trips = statistics.median(Counter(SSH_EXEC.findall(done.stdout)).values())
    play(fleet, extra, "configure", rollout=True)  # back to the small script
    return {
        "large_bytes": len(content),
        "large_rollout_s": round(rollout_s, 3),
        "large_rerun_s": round(rerun_s, 3),
        "large_trips": trips,
    }


def peak_memory(fleet: Fleet, extra: Path) -> dict:
    """Peak RSS (KiB, median over hosts) of the module process of the command and module plays."""
    for name in fleet.names:
        fleet.ssh(
            name, f"cat > {RSS_WRAPPER} && chmod 0700 {RSS_WRAPPER}", input=RSS_WRAPPER_SOURCE
        )
    peaks = {}
    for name in ("command", "module"):
        for h in fleet.hosts:
            (h.root / RSS_LOG).unlink(missing_ok=True)
        play(fleet, extra, name, "-e", f"ansible_python_interpreter={RSS_WRAPPER}")
        values = [int((h.root / RSS_LOG).read_text().split()[-1]) for h in fleet.hosts]
        peaks[name] = statistics.median(values)
    return {
        "hosts": len(fleet.hosts),
        "command_kib": peaks["command"],
        "module_kib": peaks["module"],
        "diff_kib": peaks["module"] - peaks["command"],
        "ratio": round(peaks["module"] / peaks["command"], 3),
    }


def measure(
    size: int, reps: int, directory: Path, with_memory: bool, log, plays: tuple[str, ...]
) -> tuple[dict, dict]:
    with running_fleet(size, azurite=True) as fleet:
        extra = write_vars(fleet, directory)
        rollout_s = play(fleet, extra, "configure", rollout=True)[0]
        play(fleet, extra, "command")  # warm-up: ssh masters up, caches filled
        samples: dict[str, list[float]] = {name: [] for name in plays}
        order = list(plays)
        for rep in range(reps):
            shift = rep % len(order)
            for name in order[shift:] + order[:shift]:
                samples[name].append(play(fleet, extra, name)[0])
        trips = {name: round_trips(fleet, extra, name) for name in plays}
        repaired = drift(fleet, extra)
        large = large_script(fleet, extra, directory) if with_memory else {}
        memory = peak_memory(fleet, extra) if with_memory and "module" in plays else {}
    seconds = {name: median(values) for name, values in samples.items()}
    row = {"hosts": size, "rollout_s": round(rollout_s, 3), **repaired, **large}
    for name in plays:
        row[f"{name}_s"] = seconds[name]
        row[f"{name}_trips"] = trips[name]
        if name != "command":
            row[f"{name}_ratio"] = round(seconds[name] / seconds["command"], 3)
            row[f"{name}_diff_s"] = round(seconds[name] - seconds["command"], 3)
    log(f"  {size:2d} hosts: " + ", ".join(f"{name} {seconds[name]:.2f} s" for name in plays))
    return row, memory


def run(
    reps: int, sizes=SIZES, log: Callable[[str], None] = print, plays: tuple[str, ...] = ()
) -> list[dict]:
    """Every play (or only `plays`, e.g. ("command", "configure") for the enforcement figures)."""
    plays = plays or tuple(PLAYS)
    rows, memory, first = [], {}, True
    with tempfile.TemporaryDirectory(prefix="acvs-bench-") as directory:
        for size in sizes:
            row, found = measure(size, reps, Path(directory), first, log, plays)
            rows.append(row)
            memory, first = memory or found, False
    base = rows[0]
    for row in rows:
        for name in plays:
            row[f"{name}_growth"] = round(row[f"{name}_s"] / base[f"{name}_s"], 3)
            added = row["hosts"] - base["hosts"]
            row[f"{name}_per_added_host_s"] = (
                round((row[f"{name}_s"] - base[f"{name}_s"]) / added, 3) if added else None
            )
    params = {"reps": reps, "sizes": list(sizes), "forks": "N", "pipelining": True}
    if "module" not in plays:
        return [enforcement(rows, params)]
    return [fleet_cost(rows, params), enforcement(rows, params), peak(memory, params)]


def fleet_cost(rows: list[dict], params: dict) -> dict:
    tables = [
        benchlib.table(
            f"Fleet cost: wall time of one play on N hosts (s, medians of {params['reps']}), "
            "÷ one `command: true` task with the same settings",
            [
                ("N", "hosts"),
                ("command", "command_s"),
                ("module", "module_s"),
                ("module/command", "module_ratio"),
                ("role", "role_s"),
                ("role/command", "role_ratio"),
                ("trips: command", "command_trips"),
                ("module", "module_trips"),
                ("role", "role_trips"),
            ],
            rows,
        ),
        benchlib.table(
            "Growth with N: t(N) / t(first N), and seconds per added host",
            [
                ("N", "hosts"),
                ("command", "command_growth"),
                ("module", "module_growth"),
                ("role", "role_growth"),
                ("command s/host", "command_per_added_host_s"),
                ("module s/host", "module_per_added_host_s"),
                ("role s/host", "role_per_added_host_s"),
            ],
            rows,
        ),
    ]
    targets = [
        Target(f"bare module task / command: true, {r['hosts']} hosts", r["module_ratio"],
               RATIO_LIMIT, "x")
        for r in rows
    ]  # fmt: skip
    return {
        "name": "fleet_cost",
        "params": params,
        "rows": rows,
        "tables": tables,
        "targets": targets,
        "notes": [
            "module: one snapshot module task (pre-script, freeze, snapshot, thaw, post-script).",
            "role: the snapshot playbook (facts check, module, result, fleet summary, verdict); "
            "no target, its ratio is reported.",
            "trips: ssh commands per host in one run (-vvv `SSH: EXEC`), median over hosts.",
        ],
    }


def enforcement(rows: list[dict], params: dict) -> dict:
    tables = [
        benchlib.table(
            "Enforcement cost: the idempotent configure rerun (changed=0 on every host)",
            [
                ("N", "hosts"),
                ("first rollout s", "rollout_s"),
                ("rerun s", "configure_s"),
                ("rerun / command", "configure_ratio"),
                ("rerun - command s", "configure_diff_s"),
                ("round trips / host", "configure_trips"),
                ("growth", "configure_growth"),
                ("s per added host", "configure_per_added_host_s"),
                ("drift run s", "drift_s"),
                ("drift repaired", "drift_repaired"),
            ],
            rows,
        )
    ]
    large = [r for r in rows if "large_bytes" in r]
    if large:
        tables.append(
            benchlib.table(
                "A large pre-script: first rollout, idempotent rerun, round trips per host",
                [
                    ("N", "hosts"),
                    ("bytes", "large_bytes"),
                    ("rollout s", "large_rollout_s"),
                    ("rerun s", "large_rerun_s"),
                    ("round trips / host", "large_trips"),
                ],
                large,
            )
        )
    targets = [
        Target(
            f"configure rerun / command: true, {r['hosts']} hosts",
            r["configure_ratio"],
            ENFORCE_RATIO_LIMIT,
            "x",
        )
        for r in rows
    ] + [
        Target(
            f"configure rerun round trips per host, {r['hosts']} hosts",
            r["configure_trips"],
            ENFORCE_TRIPS_LIMIT,
            "",
        )
        for r in rows
    ]
    return {
        "name": "enforcement",
        "params": params,
        "rows": [{k: v for k, v in r.items()
                  if k == "hosts" or any(w in k for w in ENFORCEMENT_KEYS)}
                 for r in rows],
        "tables": tables,
        "targets": targets,
        "notes": [
            "round trips: ssh commands per host in one rerun (-vvv `SSH: EXEC`); the role runs "
            "one appconsistent.vmsnapshot.prepost task per host, the rest on the controller.",
            "drift: pre-script chmod 0755 and timeoutInSeconds 30 -> 45 by hand on every host; "
            "repaired: one --diff run changed each host once and showed both; the next changed 0.",
        ],
    }  # fmt: skip


def peak(memory: dict, params: dict) -> dict:
    return {
        "name": "peak_memory",
        "params": {**params, "hosts": memory["hosts"]},
        "rows": [memory],
        "tables": [
            benchlib.table(
                "Peak RSS of the module process on a host (KiB, median over hosts)",
                [
                    ("ansible.builtin.command", "command_kib"),
                    ("snapshot module", "module_kib"),
                    ("difference", "diff_kib"),
                    ("ratio", "ratio"),
                ],
                [memory],
            )
        ],
        "targets": [],
        "notes": [
            "The module process is the interpreter Ansible starts on the host (pipelining: "
            "AnsiballZ in memory), measured by getrusage(RUSAGE_CHILDREN) of a wrapper.",
        ],
    }


if __name__ == "__main__":
    # The enforcement figures alone: python bench/bench_fleet.py [reps] (as root).
    load = [round(x, 2) for x in os.getloadavg()]
    for result in run(int(sys.argv[1]) if len(sys.argv) > 1 else 3, plays=("command", "configure")):
        result["load_average_at_start"] = load
        for text in result["tables"]:
            print(f"\n{text}")
        print(benchlib.write_result(result))
        for target in result["targets"]:
            print(target.as_dict())
