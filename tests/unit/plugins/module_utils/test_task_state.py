from __future__ import annotations

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import _task_state


def test_recorded_task_is_done_and_others_are_not(tmp_path):
    state = str(tmp_path / "state")
    assert not _task_state.already_done(state, "task-1")
    _task_state.record(state, "task-1")
    assert _task_state.already_done(state, "task-1")
    assert not _task_state.already_done(state, "task-2")
    _task_state.record(state, "task-2")
    assert not _task_state.already_done(state, "task-1")
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["task_identity"]
    assert (tmp_path / "state" / "task_identity").stat().st_mode & 0o777 == 0o600
