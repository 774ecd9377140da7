"""Shared pieces of the fault suite.

* ``App``: the application under test, a script set of tests/harness/scriptset.py. Its
  pre-script starts a helper that holds the application's lock (as a database quiesce helper
  does) and its post-script stops the helper; the helper gives up by itself after
  ``helper_seconds``. A journal records every script start and end.
* ``FreezeMeter``: how long writes to a filesystem were blocked, measured from outside the
  module by a thread that rewrites one byte every 2 ms (a frozen filesystem blocks the write).
* ``ModuleProcess``: the snapshot module as a process that a test can kill at any point.
* ``Figures`` and ``Scenario``: what each scenario did and whether the invariants held; every
  output the suite keeps is scanned for tracebacks and secrets as it is saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from scan_secrets import scan_text

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_document import (
    parse_status_document,
)
from harness.modules import module_command, module_env, write_args
from harness.scriptset import ScriptSet

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "tests" / "output" / "faults"
TRACEBACK = "Traceback (most recent call last)"
# APPCONSISTENT_FAULTS_SOAK=<n> multiplies the randomised scenarios by n (opt-in soak mode).
SOAK = max(1, int(os.environ.get("APPCONSISTENT_FAULTS_SOAK") or 1))
# Any blocked write longer than this counts as a stall of the meter.
STALL_SECONDS = 0.02

PRE_SCRIPT = """#!/bin/sh
# Quiesce: a helper holds the application's lock until the post-script stops it (or until its
# own {helper_seconds} s are over, as a database helper's lock timeout would end it).
dir='{dir}'
echo "pre-start $*" >> "$dir/journal"
echo $$ >> "$dir/pre.pids"
# One helper at a time: a retried attempt finds the lock held and leaves it to the first one.
setsid sh -c 'exec 9>>"$1/app.lock"; flock -xn 9 || exit 0; echo $$ > "$1/helper.pid"
    exec sleep "$2"' helper "$dir" {helper_seconds} </dev/null >/dev/null 2>&1 &
i=0
while [ ! -s "$dir/helper.pid" ] && [ "$i" -lt 200 ]; do sleep 0.01; i=$((i + 1)); done
{extra}
date +%s.%N > "$dir/quiesced-at"
echo "pre-end" >> "$dir/journal"
"""

POST_SCRIPT = """#!/bin/sh
dir='{dir}'
echo "post-start $*" >> "$dir/journal"
if [ -s "$dir/helper.pid" ]; then kill "$(cat "$dir/helper.pid")" 2>/dev/null; fi
rm -f "$dir/helper.pid"
date +%s.%N > "$dir/released-at"
{extra}
echo "post-end" >> "$dir/journal"
"""


class App(ScriptSet):
    """Pre/post scripts, their configuration and the application's lock, in `directory`.

    For a namespace host, `directory` is the path seen from this machine (through
    ``/proc/<pid>/root``) and `inside` the same directory as the host sees it.
    """

    def __init__(
        self,
        directory: Path,
        *,
        pre_extra: str = "",
        post_extra: str = "",
        timeout: int = 30,
        continue_on_failure: bool = True,
        freeze: bool = True,
        helper_seconds: int = 60,
        retries: int = 0,
        inside: Path | None = None,
    ) -> None:
        self.lock = directory / "app.lock"
        seen = inside or directory  # the directory as the scripts see it
        super().__init__(
            directory,
            PRE_SCRIPT.format(dir=seen, helper_seconds=helper_seconds, extra=pre_extra),
            POST_SCRIPT.format(dir=seen, helper_seconds=helper_seconds, extra=post_extra),
            params=(["pre"], ["post"]),
            retries=retries,
            timeout=timeout,
            continue_on_failure=continue_on_failure,
            freeze=freeze,
            inside=inside,
        )

    def pre_scripts_done(self, timeout: float = 5.0) -> bool:
        """Wait until every pre-script that started has ended: finished, or killed with its
        module (scripts die with the run that started them)."""
        deadline = time.monotonic() + timeout
        while self.count("pre-start") > self.count("pre-end") and self._pre_script_alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _pre_script_alive(self) -> bool:
        pids = self.dir / "pre.pids"
        if not pids.exists():
            return False
        return any(alive(int(pid)) for pid in pids.read_text().split())

    def quiesced_seconds(self) -> float | None:
        """From the end of the last pre-script to the last post-script's release of the
        application, by the scripts' own clock; None if either did not get that far."""
        try:
            start, end = ((self.dir / name).read_text() for name in ("quiesced-at", "released-at"))
            return float(end) - float(start)
        except (OSError, ValueError):
            return None

    def lock_free(self, timeout: float = 2.0) -> bool:
        """Is the application's lock free (its helper stopped), within `timeout`?"""
        deadline = time.monotonic() + timeout
        while True:
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
            finally:
                os.close(fd)
            time.sleep(0.02)

    def stop_helpers(self) -> None:
        """Teardown: end a helper a failed test left holding the lock (by its recorded PID)."""
        pid_file = self.dir / "helper.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


class FreezeMeter:
    """Stalls of writes to one filesystem, seen from outside (a thread, never the test's own)."""

    def __init__(self, mount_point: str) -> None:
        self.mount_point = mount_point
        self._fd = os.open(os.path.join(mount_point, ".freeze-meter"), os.O_WRONLY | os.O_CREAT)
        self.stalls: list[tuple[float, float]] = []
        self.write_started: float | None = None
        self.last_write = (0.0, 0.0)  # (start, end) of the last write that finished
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="freeze-meter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            start = self.write_started = time.monotonic()
            os.pwrite(self._fd, b"x", 0)  # blocks while the filesystem is frozen
            end = time.monotonic()
            self.last_write = (start, end)
            self.write_started = None
            if end - start >= STALL_SECONDS:
                self.stalls.append((start, end))
            self._stop.wait(0.002)

    def blocked_for(self) -> float:
        started = self.write_started
        return max(0.0, time.monotonic() - started) if started is not None else 0.0

    def writable_after(self, moment: float, timeout: float) -> bool:
        """True once a write that started after `moment` has finished (within `timeout`)."""
        deadline = time.monotonic() + timeout
        while self.last_write[0] <= moment:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def thawed_by(self, moment: float) -> float | None:
        """When the stall going on at `moment` ended (`moment` if none); None if it goes on."""
        for start, end in list(self.stalls):
            if start <= moment <= end:
                return end
        started = self.write_started
        if started is not None and started <= moment and self.blocked_for() >= STALL_SECONDS:
            return None
        return moment

    def worst_since(self, moment: float) -> float:
        """The longest stall (seconds) that ended after `moment`, or is still going on."""
        ended = [end - start for start, end in list(self.stalls) if end >= moment]
        return max([*ended, self.blocked_for()], default=0.0)

    def thaw_if_frozen(self) -> bool:
        """Teardown help: thaw our own filesystem if something left it frozen; True if it was."""
        if self.blocked_for() < 0.5:
            return False
        subprocess.run(["fsfreeze", "-u", self.mount_point], check=False, capture_output=True)
        return True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._thread.is_alive():  # still blocked: thaw (our filesystem) and let it end
            subprocess.run(["fsfreeze", "-u", self.mount_point], check=False, capture_output=True)
            self._thread.join(10)
        os.close(self._fd)


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (the module's guardian; the guardian's deputy)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class ModuleProcess:
    """One run of a module as its own process, started at once."""

    def __init__(
        self, args: dict, workdir: Path, name: str = "snapshot", check_mode: bool = False
    ) -> None:
        self.args_file = write_args(args, str(workdir), check_mode)
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            module_command(name, self.args_file),
            env=module_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid
        self.stdout = self.stderr = ""
        self.killed_at: float | None = None

    def guardian(self, timeout: float = 5.0) -> int | None:
        """The freeze guardian (see `is_guardian`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in children(self.pid):
                if is_guardian(pid, self.pid):
                    return pid
            time.sleep(0.005)
        return None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.killed_at = time.monotonic()

    def finish(self, timeout: float = 120) -> dict | None:
        """Wait for the process; its JSON result, or None when it printed none (killed)."""
        self.stdout, self.stderr = self.process.communicate(timeout=timeout)
        try:
            return json.loads(self.stdout)
        except ValueError:
            return None

    @property
    def returncode(self) -> int | None:
        return self.process.returncode


def run_module_process(
    args: dict, workdir: Path, name: str = "snapshot", timeout: float = 120, check_mode=False
):
    """Run a module to its end: (result or None, process)."""
    process = ModuleProcess(args, workdir, name, check_mode)
    return process.finish(timeout), process


@dataclasses.dataclass
class Scenario:
    """One row of the figures table."""

    name: str
    group: str
    attacks: str
    deadline: float | None = None  # max_freeze_seconds of its runs
    runs: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)
    worst_frozen_ms: float = 0.0
    left_frozen: int = 0
    tracebacks: int = 0
    secrets: int = 0
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def held(self) -> bool:
        return not (self.failures or self.left_frozen or self.tracebacks or self.secrets)

    @property
    def directory(self) -> Path:
        return OUTPUT / "runs" / self.name

    def as_dict(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "held": self.held,
            "failures": self.failures[:20],
        }

    def note(self, key: str, value: Any = 1) -> None:
        """Count (or set) something worth a line in the notes column."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.notes[key] = self.notes.get(key, 0) + value
        else:
            self.notes[key] = value

    @contextlib.contextmanager
    def case(self, label: str, *, raise_at_exit: bool = True) -> Iterator[Case]:
        case = Case(self, label)
        self.runs += 1
        try:
            yield case
        except Exception as exc:  # an error of the test itself is a failed case, not a pass
            case.failures.append(f"{type(exc).__name__}: {exc}")
        self.failures.extend(f"{label}: {failure}" for failure in case.failures)
        if raise_at_exit and case.failures:
            raise AssertionError(f"{self.name} {label}: " + "; ".join(case.failures))

    def assert_held(self) -> None:
        assert self.held, (
            f"{self.name}: {len(self.failures)} failures, {self.left_frozen} left frozen, "
            f"{self.tracebacks} tracebacks, {self.secrets} secrets: {self.failures[:5]}"
        )


class Case:
    """One run (or one input) of a scenario: checks, saved outputs, frozen-time figures."""

    def __init__(self, scenario: Scenario, label: str) -> None:
        self.scenario = scenario
        self.label = label
        self.failures: list[str] = []
        self.slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-")[:80] or "case"

    def check(self, condition: Any, message: str) -> bool:
        if not condition:
            self.failures.append(message)
        return bool(condition)

    def save(self, name: str, text: str) -> None:
        """Keep an output (for the secrets stage too) and scan it now for secrets."""
        directory = self.scenario.directory / self.slug
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
        hits = scan_text(text)
        if hits:
            self.scenario.secrets += len(hits)
            self.failures.append(f"{len(hits)} secret(s) in {name}")

    def module_output(self, process: ModuleProcess, name: str = "module") -> None:
        """Save a module process's stdout and stderr; a traceback anywhere is a failure."""
        self.save(f"{name}.stdout.json", process.stdout)
        self.save(f"{name}.stderr.txt", process.stderr)
        if TRACEBACK in process.stdout + process.stderr or '"exception"' in process.stdout:
            self.scenario.tracebacks += 1
            self.failures.append(f"{name} printed a traceback")

    def outputs(self, state_dir: Path, log_dir: Path, name: str = "run") -> dict | None:
        """Save the local status document and extension.log; return the parsed status."""
        log = log_dir / "extension.log"
        if log.exists():
            self.save(f"{name}.extension.log", log.read_text(errors="replace"))
        status = state_dir / "status" / "last.status"
        if not status.exists():
            return None
        text = status.read_text()
        self.save(f"{name}.last.status.json", text)
        return parse_status_document(text)

    def frozen(self, meter: FreezeMeter, since: float, bound: float) -> float:
        """Record the worst stall since `since`. No stall may last longer than `bound` seconds
        (the deadline plus one second), else the filesystem counts as left frozen."""
        thawed = meter.writable_after(time.monotonic(), bound)
        worst = meter.worst_since(since)
        if not thawed:
            meter.thaw_if_frozen()  # ours: thaw it so that the suite can go on
        self.scenario.worst_frozen_ms = max(self.scenario.worst_frozen_ms, round(worst * 1000, 1))
        if not thawed or worst > bound:
            self.scenario.left_frozen += 1
            self.failures.append(f"a write to {meter.mount_point} was blocked {worst:.3f} s")
        return worst


class Figures:
    """Every scenario of the session; written as JSON and as a Markdown table at the end."""

    def __init__(self) -> None:
        self.scenarios: dict[str, Scenario] = {}

    def scenario(
        self, name: str, group: str, attacks: str, deadline: float | None = None
    ) -> Scenario:
        if name not in self.scenarios:
            self.scenarios[name] = Scenario(name, group, attacks, deadline)
        return self.scenarios[name]

    def rescan(self, directory: Path = OUTPUT / "runs") -> Scenario:
        """Every output kept by the suite, scanned again as a whole (its own table row)."""
        row = Scenario("all-outputs-rescanned", "secrets", "every output the suite kept")
        for path in sorted(directory.rglob("*")) if directory.exists() else []:
            if path.is_file():
                row.runs += 1
                text = path.read_bytes().decode("utf-8", errors="replace")
                row.secrets += len(scan_text(text))
                row.tracebacks += text.count(TRACEBACK)
        row.note("bytes", sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()))
        return row

    def write(self, directory: Path = OUTPUT) -> None:
        from fault_report import markdown_table

        directory.mkdir(parents=True, exist_ok=True)
        rows = [scenario.as_dict() for scenario in self.scenarios.values()]
        rows.append(self.rescan().as_dict())
        (directory / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
        (directory / "table.md").write_text(markdown_table(rows))


def clean_output() -> None:
    shutil.rmtree(OUTPUT, ignore_errors=True)
    OUTPUT.mkdir(parents=True, exist_ok=True)


def snapshot_args(disks, app: App | None, run_dirs: dict, mounts, **extra) -> dict:
    """The snapshot module's arguments for `disks` (BlobDisk) and loop filesystems `mounts`."""
    return {
        "disks": [disk.sas for disk in disks],
        "config_path": app.config_location if app else "/nonexistent/config.json",
        "freeze_mounts": [mount.mount_point for mount in mounts],
        **run_dirs,
        **extra,
    }


def summary(result: dict | None) -> str:
    """A short, secret-free description of a module result for failure messages."""
    if result is None:
        return "no JSON result"
    keys = ("status_code", "status_name", "consistency", "thaw_forced", "msg", "message")
    return json.dumps({key: result[key] for key in keys if key in result})[:400]


def warnings_of(result: dict | None) -> list[str]:
    """The warning texts of a module result (ansible-core 2.19 wraps each in an event)."""
    texts = []
    for warning in (result or {}).get("warnings", []):
        if isinstance(warning, dict):
            warning = warning.get("event", {}).get("msg", "")
        texts.append(str(warning))
    return texts


def host_lock_free(state_dir: str) -> bool:
    """No run holds the host lock of `state_dir` (its lock file is free or absent)."""
    path = os.path.join(state_dir, "snapshot.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def same_program(pid: int, other: int) -> bool:
    """Forked from the same process image (the module, its guardian, the deputy)."""
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes() == Path(f"/proc/{other}/cmdline").read_bytes()
        )
    except OSError:
        return False


def is_guardian(pid: int, module: int) -> bool:
    """The module's child that leads its own session, runs the module's image and has forked
    its deputy. A script's process also leads its own session and, between fork and exec, also
    runs the module's image, but it never has such a child."""
    try:
        return (
            os.getsid(pid) == pid
            and same_program(pid, module)
            and any(same_program(child, module) for child in children(pid))
        )
    except OSError:
        return False


def run_family(pid: int) -> list[int]:
    """The module's guardian and the guardian's deputy (not the scripts it runs)."""
    family = [child for child in children(pid) if same_program(child, pid)]
    return family + [grand for child in family for grand in children(child)]


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True
