"""The systemd thaw timer: when it is armed, what it runs, and that it acts only with its marker.

systemd itself is replaced by a recording stand-in here (``systemd-run`` on PATH); the command
the timer would run is run for real, against a stand-in ``fsfreeze`` and rcu_expedited file.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import _thaw_timer
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._thaw_timer import (
    ThawTimer,
)

RECORDER = """#!/bin/sh
printf '%s\\n' "$@" >> "{log}.$(basename "$0")"
exit {code}
"""


@pytest.fixture
def fake_systemd(tmp_path, monkeypatch):
    """A systemd runtime directory, and systemd-run/systemctl/fsfreeze that record their argv."""
    runtime = tmp_path / "systemd"
    runtime.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "argv"

    def install(code: int = 0) -> None:
        for name in ("systemd-run", "systemctl", "fsfreeze"):
            tool = bin_dir / name
            tool.write_text(RECORDER.format(log=log, code=code))
            tool.chmod(0o755)

    install()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return {"runtime": str(runtime), "log": log, "install": install, "markers": tmp_path / "run"}


def timer(fake, mounts=("/srv/a", "/srv/b"), rcu=b"0") -> ThawTimer:
    return ThawTimer(
        list(mounts),
        2,
        rcu,
        marker_dir=str(fake["markers"]),
        systemd_runtime=fake["runtime"],
    )


def argv(fake, tool: str) -> list[str]:
    return Path(f"{fake['log']}.{tool}").read_text().splitlines()


def test_no_systemd_means_the_deputy(tmp_path):
    made = ThawTimer(["/srv/a"], 2, None, systemd_runtime=str(tmp_path / "none"))
    assert made.arm() is False
    assert made.backstop == "deputy" and "does not run systemd" in made.reason
    made.cancel()  # nothing armed: nothing to do, no error


def test_arm_makes_the_marker_and_a_precise_timer_then_cancel_removes_both(fake_systemd):
    made = timer(fake_systemd)
    assert made.arm() is True and made.backstop == "systemd-timer"
    assert os.path.exists(made.marker)
    run = argv(fake_systemd, "systemd-run")
    assert f"--unit={made.unit}" in run
    assert "--on-active=2600ms" in run  # the deadline plus the backstop's margin
    assert "--timer-property=AccuracySec=1ms" in run  # systemd's default accuracy is 1 min
    command = run[run.index("/bin/sh") :]
    assert command[-2:] == ["/srv/b", "/srv/a"]  # thaw order: the reverse of the freeze order
    made.cancel()
    assert not os.path.exists(made.marker)
    assert argv(fake_systemd, "systemctl") == ["stop", f"{made.unit}.timer", f"{made.unit}.service"]


def test_a_failing_systemd_run_leaves_no_marker(fake_systemd):
    fake_systemd["install"](code=1)
    made = timer(fake_systemd)
    assert made.arm() is False and made.backstop == "deputy"
    assert "systemd-run failed" in made.reason
    assert os.listdir(fake_systemd["markers"]) == []


def run_command(made: ThawTimer, fake, knob: Path) -> list[str]:
    """Run what the timer would run, with the rcu file redirected to `knob`."""
    command = made.command(str(Path(fake["log"]).parent / "bin" / "fsfreeze"))
    command[2] = command[2].replace(_thaw_timer.RCU_EXPEDITED, str(knob))
    subprocess.run(command, check=True)
    path = Path(f"{fake['log']}.fsfreeze")
    return path.read_text().splitlines() if path.exists() else []


def test_the_timer_command_thaws_and_restores_only_while_the_marker_exists(fake_systemd, tmp_path):
    knob = tmp_path / "rcu_expedited"
    knob.write_text("1\n")
    made = timer(fake_systemd)
    made.arm()
    thawed = run_command(made, fake_systemd, knob)
    assert thawed == ["--unfreeze", "/srv/b", "--unfreeze", "/srv/a"]
    assert knob.read_text().strip() == "0"  # our 1 is put back to the earlier 0
    assert not os.path.exists(made.marker)  # it acts once
    Path(f"{fake_systemd['log']}.fsfreeze").unlink()
    knob.write_text("1\n")
    assert run_command(made, fake_systemd, knob) == []  # no marker: nothing is touched
    assert knob.read_text().strip() == "1"


def test_the_timer_leaves_a_changed_rcu_value_alone(fake_systemd, tmp_path):
    knob = tmp_path / "rcu_expedited"
    knob.write_text("0\n")  # another program put 0 back meanwhile (or it was never ours)
    made = timer(fake_systemd, rcu=None)
    made.arm()
    assert run_command(made, fake_systemd, knob) == ["--unfreeze", "/srv/b", "--unfreeze", "/srv/a"]
    assert knob.read_text() == "0\n"
