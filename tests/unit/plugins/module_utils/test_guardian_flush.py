"""The flush before the freeze: syncfs() rounds until one is short, then the ext4 checkpoint;
or a refusal to freeze.

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
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._guardian import (
    FLUSH_MAX_ROUNDS,
    Guardian,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

# A short deadline keeps the scripted rounds short: a round of 20 ms is quiet, 100 ms the most
# the freeze may be left to write.
DEADLINE = 0.2


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
    assert report.sync_rounds == 1 and report.last_sync_ms < 20
    assert not report.thaw_forced and report.frozen_window_ms == 0


def test_rounds_go_on_while_they_get_shorter_until_one_is_quiet(tmp_path, rounds):
    done = rounds([0.15, 0.07, 0.03, 0.005, 0.5])
    guardian = flushed(tmp_path)
    report = guardian.thaw()
    guardian.close()
    assert done == [0.15, 0.07, 0.03, 0.005, "checkpoint"]  # the fifth would be long
    assert report.sync_rounds == 4 and report.last_sync_ms < 20
    assert report.sync_ms >= 250


def test_a_round_no_shorter_than_the_last_ends_the_flush(tmp_path, rounds):
    done = rounds([0.06, 0.07])
    guardian = flushed(tmp_path)  # 70 ms left for the freeze: within half the deadline
    guardian.close()
    assert done == [0.06, 0.07, "checkpoint"]


def test_writers_as_fast_as_the_disk_refuse_the_freeze(tmp_path, rounds):
    done = rounds([0.15, 0.16])
    guardian = Guardian([str(tmp_path)], DEADLINE)
    with pytest.raises(VmSnapshotError) as raised:
        guardian.start()
    assert raised.value.status == Status.FailedRetryableFsFreezeTimeout
    assert "Not frozen" in raised.value.message and "2 rounds" in raised.value.message
    assert done == [0.15, 0.16]  # no checkpoint: nothing will be frozen
    # Nothing is left: the guardian reaped, every fd closed, no report of a freeze.
    assert guardian.pid is None
    assert guardian.thaw().frozen_mounts == []


def test_the_rounds_are_bounded(tmp_path, rounds):
    done = rounds([0.2 - 0.02 * index for index in range(FLUSH_MAX_ROUNDS + 1)])
    guardian = flushed(tmp_path)
    guardian.close()
    assert len(done) == FLUSH_MAX_ROUNDS + 1 and done[-1] == "checkpoint"


def test_no_flush_when_told_not_to(tmp_path, rounds):
    done = rounds([1.0])
    guardian = Guardian([str(tmp_path)], DEADLINE, sync_first=False)
    guardian.start()
    guardian.close()
    assert done == []
