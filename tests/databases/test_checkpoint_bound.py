"""Issue 19: the PostgreSQL pre-script under a write load its disk cannot keep up with.

A CHECKPOINT is done by the checkpointer, not by the session that asks for it: cancelling that
session at the script's deadline ends only its wait. This test shows that on a real server when
the disk is behind (the cancelled checkpoint completes after the pre-script gave up), and that
whatever the disk managed, the script kept its time and the shipped default
(``checkpoint=auto``) never leaves a checkpoint of its own running when the freeze starts: it
asks for one only when the work is small, and skips it otherwise. The server's log (epoch
timestamps, ``log_checkpoints``) tells when each checkpoint ran.

Each run is what a snapshot run does around the snapshot (pre-script, real fsfreeze of the data
disk, thaw, post-script), without the snapshot itself: test_proof.py restores those. Figures
(pre-script time and word, freeze time, the writer's throughput during the pre-script and its
longest stall) go to tests/output/databases/checkpoint-bound.json.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from db_proof import PGBENCH_CLIENTS, PGBENCH_TPS, SCRIPTS, Experiment, read_acks

pytestmark = pytest.mark.root

OUTPUT = Path(__file__).resolve().parents[1] / "output" / "databases" / "checkpoint-bound.json"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
WARM_UP_SECONDS = 10.0
SHORT_TIMEOUT = 6  # the pre-script's whole time; its CHECKPOINT is cancelled within 4 s
DEFAULT_TIMEOUT = 15
FROZEN_SECONDS = 0.3
BETWEEN_SECONDS = 3.0
RUNS = (
    ("auto", ()),
    ("always", ("checkpoint=always",)),
    ("auto", ()),
    ("never", ("checkpoint=never",)),
    ("auto", (f"timeout={SHORT_TIMEOUT}",)),
)
LOG_LINE = re.compile(r"^(\d+\.\d+) \[\d+\] LOG:  checkpoint (starting|complete): ?(.*)$")


@dataclass
class Checkpoint:
    started: float
    kind: str  # the server's words: "immediate force wait", "wal", "time"
    ended: float | None = None
    details: str = ""

    @property
    def ours(self) -> bool:
        """Asked for by a session (CHECKPOINT), not by the checkpointer's own schedule."""
        return "immediate" in self.kind

    def running_at(self, moment: float) -> bool:
        return self.started <= moment and (self.ended is None or self.ended > moment)


def checkpoints(log: Path) -> list[Checkpoint]:
    """Every checkpoint in the server's log, in order (the checkpointer runs one at a time)."""
    found: list[Checkpoint] = []
    for line in log.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        moment, what, rest = float(match.group(1)), match.group(2), match.group(3)
        if what == "starting":
            found.append(Checkpoint(moment, rest))
        elif found and found[-1].ended is None:
            found[-1].ended, found[-1].details = moment, rest
    return found


def wait_idle(log: Path, timeout: float = 90.0) -> None:
    """Until no checkpoint asked for by a session runs (a slow disk takes its time)."""
    deadline = time.monotonic() + timeout
    while any(c.ended is None and c.ours for c in checkpoints(log)):
        assert time.monotonic() < deadline, "a checkpoint never completed"
        time.sleep(0.2)


def throughput(acks: Path, start: float, end: float) -> float:
    """The writer's acknowledged transactions per second between start and end."""
    count = sum(1 for _number, at in read_acks(acks) if start <= at <= end)
    return round(count / max(end - start, 0.001), 1)


def run_script(name: str, *params: str) -> subprocess.CompletedProcess:
    """A shipped script run the way the snapshot module runs it (root, argv, this env, cwd /)."""
    return subprocess.run(
        [str(SCRIPTS / name), *params],
        env=ENV, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


def cycle(experiment: Experiment, mode: str, *params: str) -> dict:
    """What a snapshot run does around the snapshot: the pre-script, the freeze of the data
    disk (real fsfreeze; held FROZEN_SECONDS, about what the snapshot calls take), the thaw and
    the post-script. The figures of that run, with the checkpoints the server logged."""
    base = json.loads(experiment.config_path.read_text())["preScriptParams"]
    mount = experiment.disk.mount_point
    begun = time.time()
    pre = run_script("postgresql-pre.sh", *base, *params)
    pre_end = time.time()
    with experiment.server.connect() as conn:
        waiting = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'CHECKPOINT' AND state = 'active'"
        ).fetchone()[0]
    try:
        subprocess.run(["fsfreeze", "-f", mount], check=True, timeout=120)
        frozen = time.time()
        time.sleep(FROZEN_SECONDS)
    finally:
        subprocess.run(["fsfreeze", "-u", mount], check=False, timeout=60)
    thawed = time.time()
    post = run_script("postgresql-post.sh", *base, *params)
    timeout = next((int(p.split("=")[1]) for p in params if p.startswith("timeout=")), None)
    running = [c for c in checkpoints(experiment.server.log) if c.running_at(pre_end)]
    said = [line for line in pre.stderr.splitlines() if line.strip()]
    return {
        "mode": mode,
        "params": list(params),
        "timeout_s": timeout or DEFAULT_TIMEOUT,
        "pre_script_exit": pre.returncode,
        "pre_script_s": round(pre_end - begun, 3),
        "pre_script_began": begun,
        "pre_script_ended": pre_end,
        "cancelled_session_waiting": waiting,
        "pre_script_said": said[-1] if said else "",
        "pre_script_stderr": pre.stderr[-1500:],
        "post_script_exit": post.returncode,
        "freeze_s": round(frozen - pre_end, 3),
        "writer_tps_during_pre_script": throughput(experiment.acks_file, begun, pre_end),
        "writer_stall_s": stall(experiment.acks_file, begun, thawed + 1),
        "requested_checkpoint_running_at_freeze": any(c.ours for c in running),
        "scheduled_checkpoint_running_at_freeze": any(not c.ours for c in running),
    }


def stall(acks: Path, start: float, end: float) -> float:
    """The writer's longest wait for an acknowledgement between start and end."""
    times = [at for _number, at in read_acks(acks) if start <= at <= end]
    return round(max((b - a for a, b in zip(times, times[1:])), default=end - start), 3)


@pytest.mark.timeout(400)
def test_the_default_pre_script_leaves_no_checkpoint_running_into_the_freeze(
    azurite, blob_disk_factory, tmp_path
):
    experiment = Experiment("postgresql", azurite, blob_disk_factory, tmp_path)
    figures: dict = {"load": f"writer + pgbench -c {PGBENCH_CLIENTS} -R {PGBENCH_TPS}", "runs": []}
    try:
        experiment.start_source()
        log = experiment.server.log
        experiment.start_load()
        time.sleep(WARM_UP_SECONDS)
        now = time.time()
        figures["writer_tps_outside_scripts"] = throughput(experiment.acks_file, now - 5, now)

        # 1. The checkpoint asked for every time, with little time: when the server cancels
        # the CHECKPOINT at the script's deadline, the checkpoint goes on in the checkpointer
        # and into the freeze that follows (continueBackupOnFailure). Whatever the disk
        # managed, the script kept its time.
        run = cycle(experiment, "always", "checkpoint=always", f"timeout={SHORT_TIMEOUT}")
        begun, ended = run.pop("pre_script_began"), run.pop("pre_script_ended")
        assert run["pre_script_s"] < SHORT_TIMEOUT + 1.5, "the pre-script outlived its timeout"
        assert run["cancelled_session_waiting"] == 0, "the cancelled session still waits"
        figures["cancelled"] = run
        if "was cancelled after" in run["pre_script_said"]:
            assert run["pre_script_exit"] == 1, run
            cancelled = next(c for c in checkpoints(log) if c.ours and c.started >= begun - 1)
            wait_idle(log)
            cancelled = next(c for c in checkpoints(log) if c.started == cancelled.started)
            run.update(
                checkpoint_went_on_after_the_script_s=round(cancelled.ended - ended, 3),
                checkpoint_s=round(cancelled.ended - cancelled.started, 3),
                checkpoint_log=cancelled.details,
            )
        else:
            # The disk kept up, or the script did not ask (a checkpoint already ran, or the
            # server was too slow to answer): then nothing of ours runs into the freeze.
            assert run["pre_script_exit"] == 0, run
            assert not run["requested_checkpoint_running_at_freeze"], run

        # 2. Runs as a snapshot makes them: the default, the checkpoint asked for every time,
        # and none.
        for mode, params in RUNS:
            wait_idle(log)
            time.sleep(BETWEEN_SECONDS)
            run = cycle(experiment, mode, *params)
            del run["pre_script_began"], run["pre_script_ended"]
            figures["runs"].append(run)
        wait_idle(log)
        experiment.stop_load()
    finally:
        experiment.close()
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        OUTPUT.write_text(json.dumps(figures, indent=2) + "\n")

    for run in figures["runs"]:
        if run["mode"] == "auto":
            # The default: quiesced in time, and no checkpoint of its own running into the
            # freeze, whatever the load did.
            assert (run["pre_script_exit"], run["post_script_exit"]) == (0, 0), run
            assert run["pre_script_s"] < run["timeout_s"], run
            assert not run["requested_checkpoint_running_at_freeze"], run
