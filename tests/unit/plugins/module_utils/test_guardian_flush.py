"""The flush before the freeze: syncfs() rounds until one is short, then the ext4 checkpoint;
or, when it has not ended within half the deadline, a refusal to freeze.

``_syncfs`` is replaced by a stand-in that takes a scripted time per round, so each case plays a
disk and its writers: data drained at once, drained round after round, or dirtied as fast as it
is written; ``_checkpoint`` by one that notes the call. No filesystem is frozen:
``Guardian.start()`` only opens the directory and forks the guardian, which waits for a freeze
that never comes and leaves at ``close()``.
"""

from __future__ import annotations

import os
import time

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import _guardian
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._guardian import Guardian
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

# A short deadline keeps the scripted rounds short: a round of 100 ms is quiet, and the flush
# may take 500 ms in all.
DEADLINE = 1.0


@pytest.fixture
def rounds(monkeypatch):
    """Script the rounds: ``rounds([0.15, 0.05])``; returns each round's time, then
    "checkpoint" for each ext4 checkpoint asked for."""
    done: list[float] = []

    def script(seconds: list[float]) -> list[float]:
        def syncfs(fd: int) -> None:
            os.fstat(fd)  # a real, open fd, as syncfs() needs
            time.sleep(seconds[min(len(done), len(seconds) - 1)])
            done.append(seconds[min(len(done), len(seconds) - 1)])

        monkeypatch.setattr(_guardian, "_syncfs", syncfs)
        monkeypatch.setattr(_guardian, "_checkpoint", lambda fd: done.append("checkpoint"))
        return done

    return script


def flushed(tmp_path) -> Guardian:
    guardian = Guardian([str(tmp_path)], DEADLINE)
    guardian.start()
    return guardian


def test_one_short_round_is_enough(tmp_path, rounds):
    done = rounds([0.001])
    guardian = flushed(tmp_path)
    report = guardian.thaw()
    guardian.close()
    assert done == [0.001, "checkpoint"]
    assert report.sync_rounds == 1 and report.last_sync_ms < 100
    assert not report.thaw_forced and report.frozen_window_ms == 0


def test_rounds_go_on_while_they_get_shorter_until_one_is_quiet(tmp_path, rounds):
    done = rounds([0.2, 0.15, 0.05, 0.3])
    guardian = flushed(tmp_path)
    report = guardian.thaw()
    guardian.close()
    assert done == [0.2, 0.15, 0.05, "checkpoint"]  # the fourth would be long
    assert report.sync_rounds == 3 and report.last_sync_ms < 100
    assert report.sync_ms >= 400


def test_a_round_no_shorter_than_the_last_ends_the_flush(tmp_path, rounds):
    done = rounds([0.15, 0.16])
    guardian = flushed(tmp_path)  # 160 ms left for the freeze, within the flush's 500 ms
    guardian.close()
    assert done == [0.15, 0.16, "checkpoint"]


def _refused(guardian: Guardian) -> tuple[VmSnapshotError, float]:
    started = time.monotonic()
    with pytest.raises(VmSnapshotError) as raised:
        guardian.start()
    return raised.value, time.monotonic() - started


@pytest.mark.parametrize(
    "seconds",
    [[0.3, 1.5], [1.5]],
    ids=["writers as fast as the disk", "one round longer than the flush may take"],
)
def test_a_flush_not_over_in_half_the_deadline_refuses_the_freeze(tmp_path, rounds, seconds):
    """The application waits quiesced during the flush: the module stops waiting at half the
    deadline, whatever syncfs() is still doing, and freezes nothing."""
    done = rounds(seconds)
    guardian = Guardian([str(tmp_path)], DEADLINE)
    error, waited = _refused(guardian)
    assert error.status == Status.FailedRetryableFsFreezeTimeout
    assert "Not frozen" in error.message and "goes on in the background" in error.message
    assert waited < sum(seconds) - 0.3  # it did not wait for the syncfs() still running
    # Nothing is left: the guardian reaped, every fd closed, no report of a freeze.
    assert guardian.pid is None
    assert guardian.thaw().frozen_mounts == []
    time.sleep(sum(seconds) - waited + 0.2)
    assert done == seconds  # the abandoned flush ended its syncfs() and started nothing else


def test_the_flush_ends_by_the_release_of_the_application(tmp_path, rounds):
    """A pre-script that left little of max_freeze_seconds: the flush gets what is left."""
    rounds([1.5])
    guardian = Guardian([str(tmp_path)], DEADLINE, release_by_ns=time.monotonic_ns() + 200_000_000)
    error, waited = _refused(guardian)
    assert error.status == Status.FailedRetryableFsFreezeTimeout
    assert waited < 0.45  # 0.2 s, not the 0.5 s of half the deadline
    time.sleep(1.5)  # the abandoned round ends before its stand-in syncfs() is taken away


def test_no_flush_when_told_not_to(tmp_path, rounds):
    done = rounds([1.0])
    guardian = Guardian([str(tmp_path)], DEADLINE, sync_first=False)
    guardian.start()
    guardian.close()
    assert done == []
