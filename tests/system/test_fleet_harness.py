"""The fleet harness: namespace hosts with sshd are real, separate hosts; down leaves nothing."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.azurite import Azurite
from harness.fleet import REGISTRY, Fleet, running_fleet
from harness.records import same_process

TESTS = Path(__file__).resolve().parents[1]
FLEET_PY = TESTS / "harness" / "fleet.py"
BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, loop devices)"),
    pytest.mark.skipif(shutil.which("sshd", path="/usr/sbin") is None, reason="needs sshd"),
]


@pytest.fixture(scope="module")
def fleet4() -> Iterator[Fleet]:
    with running_fleet(4) as f:
        yield f


def device_number(device: str) -> str:
    """`major:minor` of a block device, as mountinfo shows it."""
    rdev = os.stat(device).st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def data_mounts(mountinfo: str) -> set[str]:
    """The `major:minor` of every filesystem mounted at /srv/data in a mountinfo text."""
    return {line.split()[2] for line in mountinfo.splitlines() if line.split()[4] == "/srv/data"}


def assert_gone(f: Fleet) -> None:
    """Nothing the fleet made is left: namespaces, links, processes, mounts, loop devices, files."""
    prefix = f"acvs-{f.id}-"
    netns = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False
    ).stdout
    assert prefix not in netns
    assert not list(Path("/sys/class/net").glob(f"{prefix}*"))
    assert not any(same_process(h.sshd_pid, h.sshd_start) for h in f.hosts)
    if f.azurite:
        assert not same_process(f.azurite["pid"], f.azurite["start"])
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            # ssh ControlPersist masters and sshd name our directory on their command line.
            assert f.base_dir.encode() not in cmdline.read_bytes(), cmdline
        except OSError:
            continue
    assert f.base_dir not in Path("/proc/self/mountinfo").read_text()
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            assert not backing.read_text().startswith(f.base_dir), backing
        except OSError:
            continue
    assert not Path(f.base_dir).exists()
    assert not (REGISTRY / f"{f.id}.json").exists()


def test_ansible_ping_over_ssh_reaches_every_host(fleet4: Fleet) -> None:
    inventory = Path(fleet4.inventory).read_text()
    assert "ansible_connection" not in inventory
    proc = subprocess.run(
        [BIN / "ansible", "fleet", "-i", fleet4.inventory, "-m", "ansible.builtin.ping", "-f", "4"],
        capture_output=True,
        text=True,
        env=fleet4.env(),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(re.findall(r"^(acvs-h\d+) \| SUCCESS", proc.stdout, re.M)) == fleet4.names
    # The ControlPersist masters live in the fleet's own directory, for teardown to close.
    assert len(list(Path(fleet4.control_dir).iterdir())) >= 4


def test_each_host_has_its_own_hostname_and_address(fleet4: Fleet) -> None:
    for h in fleet4.hosts:
        out = fleet4.ssh(h.name, "hostname; echo $SSH_CONNECTION; ip -4 route").stdout
        name, connection, *routes = out.splitlines()
        assert name == h.name
        assert connection.split()[2] == h.address
        # Only the fleet's own subnet: nothing is routed anywhere else.
        assert [r.split()[:3] for r in routes] == [[fleet4.subnet, "dev", "eth0"]]
    assert os.uname().nodename not in fleet4.names


def test_etc_azure_is_per_host(fleet4: Fleet) -> None:
    probe = f"/etc/azure/acvs-probe-{uuid.uuid4().hex[:8]}"
    first, *others = fleet4.hosts
    fleet4.ssh(first.name, f"mkdir -p /etc/azure && echo {first.name} > {probe}")
    assert fleet4.ssh(first.name, f"cat {probe}").stdout.strip() == first.name
    for h in others:
        assert fleet4.ssh(h.name, f"test -e {probe}", check=False).returncode == 1
        assert not (h.root / probe.lstrip("/")).exists()
    assert not Path(probe).exists()


def test_data_mount_is_own_freezable_ext4(fleet4: Fleet) -> None:
    numbers = {h.name: device_number(h.loop_device) for h in fleet4.hosts}
    assert len(set(numbers.values())) == len(fleet4.hosts)
    # The machine itself sees none of the hosts' data mounts.
    assert data_mounts(Path("/proc/self/mountinfo").read_text()) == set()
    for h in fleet4.hosts:
        assert fleet4.ssh(h.name, "findmnt -n -o FSTYPE /srv/data").stdout.strip() == "ext4"
        assert data_mounts(fleet4.ssh(h.name, "cat /proc/self/mountinfo").stdout) == {
            numbers[h.name]
        }
        # Freeze for real: a second freeze is refused while frozen, writes work after thaw.
        freeze = fleet4.ssh(
            h.name,
            "fsfreeze -f /srv/data; fsfreeze -f /srv/data; echo $?; fsfreeze -u /srv/data; "
            "echo ok > /srv/data/after-thaw && cat /srv/data/after-thaw",
        )
        assert freeze.stdout.split() == ["1", "ok"], freeze.stderr
        # / inside a host is its overlay: a snapshot run there can never freeze the machine's /.
        assert fleet4.ssh(h.name, "findmnt -n -o FSTYPE /").stdout.strip() == "overlay"


def test_down_leaves_nothing_and_is_idempotent() -> None:
    with running_fleet(3) as f:
        f.ssh(f.names[0], "fsfreeze -f /srv/data")  # left frozen on purpose: down thaws it
        assert all(Path("/run/netns", h.netns).exists() for h in f.hosts)
    assert_gone(f)
    f.down()
    assert_gone(f)
    assert f.status == "down"


def test_teardown_after_a_failing_test(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    (tmp_path / "test_fails.py").write_text(
        textwrap.dedent(f"""
        def test_fails_on_purpose(fleet):
            f = fleet(2, state_path={str(state)!r})
            # A writer blocked on a frozen data filesystem: teardown must still end it.
            writer = "(echo x > /srv/data/x; sync -f /srv/data) >/dev/null 2>&1 &"
            f.ssh(f.names[0], "fsfreeze -f /srv/data; " + writer)
            assert False, "failing on purpose"
        """)
    )
    proc = subprocess.run(
        [BIN / "pytest", "-p", "harness.fleet", "-p", "no:cacheprovider", "-q", "--rootdir",
         tmp_path, tmp_path / "test_fails.py"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        cwd=tmp_path,
        timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "failing on purpose" in proc.stdout
    f = Fleet.load(state)
    assert f.status == "down"
    assert_gone(f)


def test_cleanup_after_a_killed_run(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    owner = subprocess.Popen(
        [sys.executable, "-c", f"import sys, time; sys.path.insert(0, {str(TESTS)!r}); "
         f"from harness.fleet import up; up(2, {str(state)!r}); print('up', flush=True); "
         "time.sleep(300)"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert owner.stdout.readline().strip() == "up"
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    f = Fleet.load(state)
    assert all(Path("/run/netns", h.netns).exists() for h in f.hosts)
    proc = subprocess.run(
        [sys.executable, FLEET_PY, "cleanup"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"fleet {f.id}: cleaned up" in proc.stdout
    assert_gone(f)


def test_cli_up_and_down_with_azurite(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    cli = [sys.executable, FLEET_PY]
    proc = subprocess.run(
        [*cli, "up", "--hosts", "2", "--json", state, "--azurite"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    f = Fleet.load(state)
    try:
        assert f.status == "up"
        assert f.owner_pid is None  # detached: `cleanup` without --json leaves it alone
        assert (
            f.id
            not in subprocess.run(
                [*cli, "cleanup"], capture_output=True, text=True, check=False
            ).stdout
        )
        assert f.ssh(f.names[1], "hostname").stdout.strip() == f.names[1]
        # Azurite listens on the bridge; a host reads a blob through a SAS URI (sent on stdin).
        assert f.azurite["host"] == f.bridge_address
        assert f"fleet_azurite_url: {f.azurite['url']}" in Path(f.inventory).read_text()
        service = Azurite.from_state(f.azurite)
        service.create_block_blob("fleet", "hello.txt", b"hello from the machine")
        read = f.ssh(
            f.names[0],
            "python3 -c 'import sys, urllib.request as u; "
            "sys.stdout.write(u.urlopen(sys.stdin.read(), timeout=10).read().decode())'",
            input=service.blob_sas("fleet", "hello.txt", permissions="r"),
        )
        assert read.stdout == "hello from the machine"
    finally:
        proc = subprocess.run(
            [*cli, "down", "--json", state], capture_output=True, text=True, check=False
        )
    assert proc.returncode == 0, proc.stderr
    assert_gone(f)
    assert (
        subprocess.run([*cli, "down", "--json", state], capture_output=True, check=False).returncode
        == 0
    )
