"""Freeze and thaw under the guardian process, on real loop-mounted ext4 and xfs.

The loop fixtures (loop_ext4, loop_xfs, loop_filesystem_factory) come from tests/conftest.py.

Only filesystems these tests create are frozen. Writes to a possibly frozen filesystem happen in
probe subprocesses, never in the test process, and every probe is reaped after a thaw.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._guardian import (
    Guardian,
    ThawReport,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._mounts import (
    freezable_mounts,
    read_mountinfo,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)
from harness.loopfs import LoopFilesystem

COLLECTIONS = Path(__file__).resolve().parents[2] / ".cache" / "collections"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices, fsfreeze)"),
    pytest.mark.skipif(shutil.which("mkfs.xfs") is None, reason="needs xfsprogs"),
]

WRITER = textwrap.dedent(
    """
    import os, sys
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"written after the thaw\\n")
    os.fsync(fd)
    """
)


class Probe:
    """A writer subprocess (write + fsync) on a filesystem that may be frozen."""

    def __init__(self, filesystem: LoopFilesystem) -> None:
        self.filesystem = filesystem
        self.path = os.path.join(filesystem.mount_point, f"probe-{uuid.uuid4().hex[:8]}")
        self.process = subprocess.Popen([sys.executable, "-I", "-c", WRITER, self.path])

    def done_within(self, seconds: float) -> bool:
        """True if the write finished (successfully) within ``seconds``."""
        try:
            return self.process.wait(seconds) == 0
        except subprocess.TimeoutExpired:
            return False

    def written(self) -> bool:
        with open(self.path, "rb") as handle:
            return handle.read() == b"written after the thaw\n"


@pytest.fixture
def probe() -> Iterator[Callable[[LoopFilesystem], Probe]]:
    probes: list[Probe] = []

    def start(filesystem: LoopFilesystem) -> Probe:
        probes.append(Probe(filesystem))
        return probes[-1]

    yield start
    for leftover in probes:
        if leftover.process.poll() is None:  # blocked: thaw our own filesystem so it can finish
            subprocess.run(["fsfreeze", "-u", leftover.filesystem.mount_point], check=False)
            leftover.process.wait(30)


def assert_frozen(probe: Probe) -> None:
    assert not probe.done_within(0.3), f"{probe.filesystem.mount_point} is not frozen"


def assert_reaped(pid: int) -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not os.path.exists(f"/proc/{pid}")


def gone_or_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_freeze_blocks_writers_and_thaw_releases_them(
    probe: Callable[[LoopFilesystem], Probe],
    loop_filesystem_factory: Callable[..., LoopFilesystem],
    fstype: str,
) -> None:
    filesystem = loop_filesystem_factory(fstype)
    with Guardian([filesystem.mount_point], max_freeze_seconds=30) as guardian:
        guardian_pid = guardian.pid
        guardian.freeze()
        assert os.getsid(guardian_pid) == guardian_pid  # its own session
        writer = probe(filesystem)
        assert_frozen(writer)
        report = guardian.thaw()
        assert writer.done_within(10) and writer.written()
    assert_reaped(guardian_pid)

    assert report.frozen_mounts == [filesystem.mount_point]
    assert (report.thaw_forced, report.forced_reason, report.errors) == (False, None, [])
    assert 0 < report.freeze_ms <= report.frozen_window_ms
    assert 0 < report.thaw_ms <= report.frozen_window_ms
    assert report.frozen_window_ms >= 300  # the probe waited that long inside the window
    assert set(report.mount_freeze_ms) == {filesystem.mount_point}
    assert report.as_dict()["frozen_mounts"] == [filesystem.mount_point]
    with open(os.path.join(filesystem.mount_point, "after"), "w") as handle:
        handle.write("writable\n")


def test_two_filesystems_thawed_in_reverse_order_and_guardian_holds_only_its_fds(
    probe: Callable[[LoopFilesystem], Probe], loop_ext4: LoopFilesystem, loop_xfs: LoopFilesystem
) -> None:
    mount_points = [loop_xfs.mount_point, loop_ext4.mount_point]
    with Guardian(mount_points, max_freeze_seconds=30) as guardian:
        guardian.freeze()
        writers = [probe(loop_ext4), probe(loop_xfs)]
        for writer in writers:
            assert_frozen(writer)
        # The guardian writes nothing to disk: it holds pipes, /dev/null and the mount points.
        fd_dir = f"/proc/{guardian.pid}/fd"
        targets = {os.readlink(os.path.join(fd_dir, name)) for name in os.listdir(fd_dir)}
        assert {t for t in targets if not t.startswith("pipe:")} == {"/dev/null", *mount_points}
        # Signals that end the module's session do not end the guardian.
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
            os.kill(guardian.pid, signum)
        assert_frozen(writers[0])
        report = guardian.thaw()
    assert all(writer.done_within(10) and writer.written() for writer in writers)
    assert report.frozen_mounts == mount_points
    assert report.thaw_forced is False


PARENT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._guardian import (
        Guardian,
    )
    guardian = Guardian(sys.argv[3:], max_freeze_seconds=float(sys.argv[2]))
    guardian.start()
    guardian.freeze()
    print(guardian.pid, flush=True)
    time.sleep(600)
    """
)


def start_parent(
    mount_points: list[str], max_freeze_seconds: float
) -> tuple[subprocess.Popen, int]:
    """A module stand-in in its own process group: it freezes, reports the guardian, sleeps."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(COLLECTIONS), str(max_freeze_seconds), *mount_points],
        stdout=subprocess.PIPE,
        text=True,
        process_group=0,
    )
    line = parent.stdout.readline()
    assert line.strip().isdigit(), f"the parent did not freeze: {line!r}"
    return parent, int(line)


@pytest.mark.parametrize("kill_group", [False, True], ids=["kill-parent", "kill-process-group"])
def test_sigkill_of_the_parent_thaws_within_a_second(
    probe: Callable[[LoopFilesystem], Probe],
    loop_ext4: LoopFilesystem,
    loop_xfs: LoopFilesystem,
    kill_group: bool,
) -> None:
    parent, guardian_pid = start_parent([loop_ext4.mount_point, loop_xfs.mount_point], 120)
    try:
        writers = [probe(loop_ext4), probe(loop_xfs)]
        assert_frozen(writers[0])
        if kill_group:  # what a dropped ssh session or Ctrl-C would hit, and then some
            os.killpg(parent.pid, signal.SIGKILL)
        else:
            os.kill(parent.pid, signal.SIGKILL)
        assert all(writer.done_within(1.0) for writer in writers), "not thawed within 1 s"
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    assert all(writer.written() for writer in writers)
    deadline = time.monotonic() + 5
    while not gone_or_zombie(guardian_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone_or_zombie(guardian_pid), "the guardian did not exit after thawing"


def test_deadline_forces_the_thaw(
    probe: Callable[[LoopFilesystem], Probe], loop_ext4: LoopFilesystem
) -> None:
    with Guardian([loop_ext4.mount_point], max_freeze_seconds=1) as guardian:
        guardian.freeze()
        frozen_at = time.monotonic()
        writer = probe(loop_ext4)
        assert writer.done_within(5), "the deadline did not thaw"
        thawed_after = time.monotonic() - frozen_at
        report = guardian.thaw()
    assert 0.8 <= thawed_after <= 3.0
    assert report.thaw_forced is True and report.forced_reason == "deadline"
    assert 950 <= report.frozen_window_ms <= 3000
    assert writer.written()


def test_deadline_applies_to_a_parent_that_never_thaws(
    probe: Callable[[LoopFilesystem], Probe], loop_xfs: LoopFilesystem
) -> None:
    parent, _frozen = start_parent([loop_xfs.mount_point], 1)
    try:
        writer = probe(loop_xfs)
        assert writer.done_within(5) and writer.written()
        assert parent.poll() is None  # the parent still sleeps: only the deadline thawed
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_sigkill_of_the_guardian_the_module_thaws(
    probe: Callable[[LoopFilesystem], Probe], loop_ext4: LoopFilesystem, loop_xfs: LoopFilesystem
) -> None:
    with Guardian([loop_ext4.mount_point, loop_xfs.mount_point], max_freeze_seconds=60) as guardian:
        guardian_pid = guardian.pid
        guardian.freeze()
        writers = [probe(loop_ext4), probe(loop_xfs)]
        assert_frozen(writers[1])
        os.kill(guardian_pid, signal.SIGKILL)
        assert all(writer.done_within(1.0) for writer in writers), "the module did not thaw"
        report = guardian.thaw()
    assert_reaped(guardian_pid)
    assert report.thaw_forced is True and report.forced_reason == "guardian died"
    assert report.frozen_mounts == [loop_ext4.mount_point, loop_xfs.mount_point]
    assert any("guardian process died" in error for error in report.errors)
    assert report.thaw_ms > 0


def test_a_filesystem_frozen_by_another_tool_is_refused_and_left_frozen(
    probe: Callable[[LoopFilesystem], Probe], loop_ext4: LoopFilesystem, loop_xfs: LoopFilesystem
) -> None:
    subprocess.run(["fsfreeze", "-f", loop_xfs.mount_point], check=True)
    try:
        mount_points = [loop_ext4.mount_point, loop_xfs.mount_point]
        with Guardian(mount_points, max_freeze_seconds=30) as guardian:
            guardian_pid = guardian.pid
            with pytest.raises(VmSnapshotError) as caught:
                guardian.freeze()
            report = guardian.thaw()
        assert caught.value.status == Status.FailedRetryableFsFreezeFailed
        assert f"Cannot freeze {loop_xfs.mount_point}" in caught.value.message
        assert "already frozen by another process" in caught.value.message
        assert_reaped(guardian_pid)
        # ext4 was frozen first and then thawed; xfs is still frozen by the other tool.
        assert probe(loop_ext4).done_within(5)
        assert_frozen(probe(loop_xfs))
        assert report.frozen_mounts == [loop_ext4.mount_point]
        assert report.errors == [caught.value.message]
    finally:
        subprocess.run(["fsfreeze", "-u", loop_xfs.mount_point], check=True)


def test_context_manager_thaws_when_the_body_raises(
    probe: Callable[[LoopFilesystem], Probe], loop_ext4: LoopFilesystem
) -> None:
    guardian = Guardian([loop_ext4.mount_point], max_freeze_seconds=30)
    with pytest.raises(RuntimeError, match="snapshot failed"), guardian:
        guardian_pid = guardian.pid
        guardian.freeze()
        raise RuntimeError("snapshot failed")
    assert probe(loop_ext4).done_within(5)
    assert_reaped(guardian_pid)
    assert guardian.thaw().frozen_mounts == [loop_ext4.mount_point]


def test_unopenable_mount_point_fails_before_forking(loop_ext4: LoopFilesystem) -> None:
    missing = os.path.join(loop_ext4.mount_point, "missing")
    guardian = Guardian([loop_ext4.mount_point, missing], max_freeze_seconds=30)
    with pytest.raises(VmSnapshotError) as caught:
        guardian.start()
    assert caught.value.status == Status.FailedRetryableUnableToOpenMount
    assert missing in caught.value.message
    assert guardian.pid is None
    report: ThawReport = guardian.thaw()
    assert report.frozen_mounts == [] and not report.thaw_forced


def test_real_mountinfo_rules_and_nested_freeze_order(
    probe: Callable[[LoopFilesystem], Probe],
    loop_filesystem_factory: Callable[..., LoopFilesystem],
) -> None:
    outer = loop_filesystem_factory("xfs")
    # The inner filesystem's image lives on the outer one: freezing the outer first would
    # block the inner's freeze, so nested-first is required, not cosmetic.
    inner = loop_filesystem_factory("ext4", base_dir=outer.mount_point)
    mounts = read_mountinfo()
    everything = freezable_mounts(mounts)
    assert everything.index(inner.mount_point) < everything.index(outer.mount_point)
    if "/" in everything:
        assert everything[-1] == "/"
    order = freezable_mounts(mounts, only=[outer.mount_point, inner.mount_point])
    assert order == [inner.mount_point, outer.mount_point]
    assert freezable_mounts(mounts, only=order, skip=[inner.mount_point]) == [outer.mount_point]
    assert inner.mount_point not in freezable_mounts(mounts, skip=[inner.mount_point])

    with Guardian(order, max_freeze_seconds=30) as guardian:
        guardian.freeze()
        writers = [probe(inner), probe(outer)]
        assert_frozen(writers[0])
        report = guardian.thaw()
    assert all(writer.done_within(10) and writer.written() for writer in writers)
    assert report.frozen_mounts == order and report.errors == []


NO_IMPORTS = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._guardian import (
        Guardian,
    )
    from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
        VmSnapshotError,
    )
    before = set(sys.modules)
    with Guardian(sys.argv[2:3], max_freeze_seconds=30) as guardian:
        guardian.freeze()
        ok = guardian.thaw()
    with Guardian(sys.argv[2:], max_freeze_seconds=30) as guardian:
        try:
            guardian.freeze()
        except VmSnapshotError as exc:
            failed = exc.message
    print(json.dumps([sorted(set(sys.modules) - before), ok.frozen_mounts, failed]))
    """
)


def test_nothing_is_imported_between_freeze_and_thaw(
    loop_ext4: LoopFilesystem, loop_xfs: LoopFilesystem
) -> None:
    """Also on the failure path, and with bytecode writing allowed (a .pyc write would block)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(["fsfreeze", "-f", loop_xfs.mount_point], check=True)
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                NO_IMPORTS,
                str(COLLECTIONS),
                loop_ext4.mount_point,
                loop_xfs.mount_point,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        subprocess.run(["fsfreeze", "-u", loop_xfs.mount_point], check=True)
    assert run.returncode == 0, run.stderr
    imported, frozen, failed = json.loads(run.stdout)
    assert imported == []
    assert frozen == [loop_ext4.mount_point]
    assert "already frozen by another process" in failed


@pytest.mark.parametrize("max_freeze_seconds", [1, 2])
def test_a_stopped_guardian_is_taken_over_at_the_deadline(
    probe: Callable[[LoopFilesystem], Probe], loop_ext4: LoopFilesystem, max_freeze_seconds: int
) -> None:
    """SIGSTOP keeps the guardian alive (no EOF): the module's watcher thaws by the deadline."""
    with Guardian([loop_ext4.mount_point], max_freeze_seconds=max_freeze_seconds) as guardian:
        guardian_pid = guardian.pid
        guardian.freeze()
        os.kill(guardian_pid, signal.SIGSTOP)
        try:
            writer = probe(loop_ext4)
            assert writer.done_within(max_freeze_seconds + 1.0), "not thawed by deadline + 1 s"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(guardian_pid, signal.SIGCONT)
        report = guardian.thaw()
    assert_reaped(guardian_pid)
    assert report.thaw_forced is True and report.forced_reason == "deadline"
    assert report.frozen_window_ms <= (max_freeze_seconds + 1.0) * 1000


def test_a_stopped_guardian_does_not_delay_the_requested_thaw(
    probe: Callable[[LoopFilesystem], Probe], loop_ext4: LoopFilesystem
) -> None:
    with Guardian([loop_ext4.mount_point], max_freeze_seconds=30) as guardian:
        guardian_pid = guardian.pid
        guardian.freeze()
        os.kill(guardian_pid, signal.SIGSTOP)
        try:
            writer = probe(loop_ext4)
            asked = time.monotonic()
            report = guardian.thaw()
            waited = time.monotonic() - asked
            assert writer.done_within(2.0)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(guardian_pid, signal.SIGCONT)
    assert waited < 2.0  # the reply time (0.5 s) and the kill, not the 30 s deadline
    assert report.thaw_forced is True and report.forced_reason == "guardian stopped answering"


def test_the_guardian_expedites_only_its_freeze_calls(
    probe: Callable[[LoopFilesystem], Probe],
    loop_ext4: LoopFilesystem,
    loop_xfs: LoopFilesystem,
    tmp_path: Path,
) -> None:
    """A plain file stands in for /sys/kernel/rcu_expedited: 1 during the FIFREEZE calls only."""
    knob = tmp_path / "rcu_expedited"
    knob.write_text("0\n")
    fd = os.open(knob, os.O_RDWR)
    try:
        mounts = [loop_ext4.mount_point, loop_xfs.mount_point]
        with Guardian(mounts, max_freeze_seconds=30, rcu_fd=fd, rcu_earlier=b"0") as guardian:
            guardian.freeze()
            assert knob.read_text().startswith("0")  # put back as the last FIFREEZE returned
            fd_dir = f"/proc/{guardian.pid}/fd"
            targets = {os.readlink(os.path.join(fd_dir, name)) for name in os.listdir(fd_dir)}
            assert str(knob) in targets
            report = guardian.thaw()
    finally:
        os.close(fd)
    assert report.expedited is True and report.errors == []
    assert report.sync_ms >= 0
