"""Deciding whether to expedite the freeze, and restoring rcu_expedited, over plain files."""

from __future__ import annotations

import os
from pathlib import Path

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._guardian import (
    restore_rcu,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._rcu_expedite import (
    prepare,
)


def knobs(tmp_path: Path, expedited: str | None = "0", normal: str | None = "0"):
    paths = tmp_path / "rcu_expedited", tmp_path / "rcu_normal"
    for path, value in zip(paths, (expedited, normal)):
        if value is not None:
            path.write_text(f"{value}\n")
    return str(paths[0]), str(paths[1])


def test_expedites_when_the_value_is_0(tmp_path):
    plan = prepare(True, *knobs(tmp_path))
    try:
        assert plan.fd >= 0 and plan.earlier == b"0" and plan.reason is None
    finally:
        plan.close()
    assert plan.fd == -1


def test_the_option_off_leaves_it_alone(tmp_path):
    plan = prepare(False, *knobs(tmp_path))
    assert plan.fd == -1 and "off" in plan.reason


def test_rcu_normal_overrides(tmp_path):
    plan = prepare(True, *knobs(tmp_path, normal="1"))
    assert plan.fd == -1 and "rcu_normal" in plan.reason and "overrides" in plan.reason


def test_no_such_file(tmp_path):
    plan = prepare(True, *knobs(tmp_path, expedited=None, normal=None))
    assert plan.fd == -1 and "has no" in plan.reason


def test_read_only(tmp_path):
    expedited, normal = knobs(tmp_path)
    os.chmod(expedited, 0o444)
    if os.geteuid() == 0:  # root writes a 0444 file: use a directory, which open(O_RDWR) refuses
        os.remove(expedited)
        os.mkdir(expedited)
    plan = prepare(True, expedited, normal)
    assert plan.fd == -1 and "cannot be written" in plan.reason


def test_already_expedited_is_left_as_it_is(tmp_path):
    plan = prepare(True, *knobs(tmp_path, expedited="1"))
    assert plan.fd == -1 and "already 1" in plan.reason


def test_restore_puts_the_earlier_value_back_only_over_our_1(tmp_path):
    path = tmp_path / "knob"
    path.write_text("1\n")
    fd = os.open(path, os.O_RDWR)
    try:
        assert restore_rcu(fd, b"0") == "restored"
        assert path.read_text().startswith("0")
        path.write_text("2\n")  # another program changed it meanwhile
        assert restore_rcu(fd, b"0") == "changed"
        assert path.read_text() == "2\n"
    finally:
        os.close(fd)
    assert restore_rcu(fd, b"0").startswith("E")  # a closed fd: an errno, never an exception
