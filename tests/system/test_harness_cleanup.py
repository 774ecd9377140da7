"""The loop-filesystem harness leaves nothing behind: failed tests, Ctrl-C, SIGTERM, SIGKILL.

Each case runs the harness in a subprocess with its own state directory and temp directory, then
looks at the system itself (``losetup -a``, ``/proc/self/mountinfo``, the state directory).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
LOOPFS = TESTS / "harness" / "loopfs.py"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices, mount)"),
]


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Environment for a harness run whose state and temp directories are this test's own."""
    (tmp_path / "state").mkdir()
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("APPCONSISTENT_HARNESS_STATE_DIR", str(tmp_path / "state"))
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), PYTHONPATH=str(TESTS))
    yield env
    # Whatever a case did, leave nothing: the CLI only touches records in our state dir.
    subprocess.run([sys.executable, str(LOOPFS), "cleanup", "--all"], env=env, check=False)


def leftovers(root: Path) -> list[str]:
    """Loop devices, mounts and state files that still refer to ``root``."""
    found = [
        line
        for line in subprocess.run(
            ["losetup", "-a"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        if str(root) in line
    ]
    found += [
        line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(root) in line
    ]
    found += [str(path) for path in (root / "state").glob("*")]
    found += [str(path) for path in (root / "tmp").glob("appconsistent-*")]
    return found


FAILING_TESTS = textwrap.dedent(
    """
    import subprocess

    pytest_plugins = ["harness.loopfs"]

    def test_fails_with_frozen_filesystems(loop_ext4, loop_xfs, loop_filesystem_factory):
        nested = loop_filesystem_factory("ext4", base_dir=loop_xfs.mount_point)
        for filesystem in (loop_ext4, nested):
            subprocess.run(["fsfreeze", "-f", filesystem.mount_point], check=True)
        assert False, "on purpose"

    def test_interrupted(loop_ext4):
        raise KeyboardInterrupt
    """
)


@pytest.mark.parametrize(
    ("selection", "outcome"),
    [("test_fails_with_frozen_filesystems", "1 failed"), ("test_interrupted", "KeyboardInterrupt")],
)
def test_failing_pytest_run_leaves_nothing(
    tmp_path: Path, sandbox: dict[str, str], selection: str, outcome: str
) -> None:
    (tmp_path / "test_on_purpose.py").write_text(FAILING_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", selection, "."],
        cwd=tmp_path,
        env=sandbox,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode != 0 and outcome in run.stdout, run.stdout + run.stderr
    assert leftovers(tmp_path) == []


# Arguments: FSTYPE[:SIZE_MB][@INDEX], INDEX naming an earlier filesystem to nest this one in.
MAKE_AND_WAIT = textwrap.dedent(
    """
    import json, sys, time
    from harness.loopfs import make_loop_filesystem
    made = []
    for spec in sys.argv[1:]:
        spec, _, inside = spec.partition("@")
        fstype, _, size = spec.partition(":")
        base_dir = made[int(inside)].mount_point if inside else None
        made.append(make_loop_filesystem(fstype, size_mb=int(size or 0) or None, base_dir=base_dir))
    print(json.dumps([fs.as_dict() for fs in made]), flush=True)
    time.sleep(600)
    """
)


def start_owner(env: dict[str, str], *fstypes: str) -> tuple[subprocess.Popen, list[dict]]:
    owner = subprocess.Popen(
        [sys.executable, "-c", MAKE_AND_WAIT, *fstypes], env=env, stdout=subprocess.PIPE, text=True
    )
    records = json.loads(owner.stdout.readline())
    owner.stdout.close()
    return owner, records


def test_sigterm_tears_down(tmp_path: Path, sandbox: dict[str, str]) -> None:
    owner, records = start_owner(sandbox, "ext4", "xfs")
    assert all(os.path.ismount(record["mount_point"]) for record in records)
    subprocess.run(["fsfreeze", "-f", records[0]["mount_point"]], check=True)
    owner.send_signal(signal.SIGTERM)
    assert owner.wait(60) == -signal.SIGTERM
    assert leftovers(tmp_path) == []


def test_cleanup_removes_what_a_killed_run_left_and_nothing_alive(
    tmp_path: Path, sandbox: dict[str, str]
) -> None:
    # The dead run nested an xfs inside an ext4 (records sort ext4 first: the wrong order).
    dead, dead_records = start_owner(sandbox, "ext4:400", "xfs@0")
    alive, alive_records = start_owner(sandbox, "ext4")
    try:
        dead.kill()
        dead.wait()
        for record in dead_records:  # SIGKILL: no teardown ran
            assert os.path.ismount(record["mount_point"])
        run = subprocess.run(
            [sys.executable, str(LOOPFS), "cleanup"],
            env=sandbox,
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.index(dead_records[1]["mount_point"]) < run.stdout.index(
            dead_records[0]["mount_point"] + "\n"
        )
        assert not os.path.exists(dead_records[0]["base_dir"])
        assert os.path.ismount(alive_records[0]["mount_point"])  # its owner still runs
        assert Path(alive_records[0]["state_file"]).exists()
    finally:
        alive.terminate()
        alive.wait(60)
    assert leftovers(tmp_path) == []


def test_cli_up_and_down(tmp_path: Path, sandbox: dict[str, str]) -> None:
    out = tmp_path / "fs.json"
    up = subprocess.run(
        [sys.executable, str(LOOPFS), "up", "--fstype", "xfs", "--json", str(out)],
        env=sandbox,
        capture_output=True,
        text=True,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    record = json.loads(out.read_text())
    assert json.loads(up.stdout) == record
    assert os.path.ismount(record["mount_point"])  # the CLI process is gone, the fs stays
    with open("/proc/self/mountinfo") as handle:
        assert f" {record['mount_point']} " in handle.read()
    Path(record["mount_point"], "data").write_text("x")
    down = subprocess.run(
        [sys.executable, str(LOOPFS), "down", "--json", str(out)],
        env=sandbox,
        capture_output=True,
        text=True,
        check=False,
    )
    assert down.returncode == 0 and "removed 1" in down.stdout, down.stderr
    assert leftovers(tmp_path) == []
