"""The collection on a fleet: roll the configuration out, enforce it, snapshot every host.

Five ssh hosts in network namespaces (tests/harness/fleet.py), each with its own /etc, /root and a
real ext4 data disk, and Azurite on the fleet's bridge. The playbooks run as an operator runs them
(`ansible-playbook appconsistent.vmsnapshot.<name>`). One host's pre-script fails and one host's
disk endpoint is unreachable: those two get their codes, every other host is
application-consistent, and no host stays frozen. Every check reads the system's state: files on
the hosts, the snapshots and status blobs in the blob service, the scripts' own journals.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from scan_secrets import scan_text

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_document import (
    parse_status_document,
)
from harness.azurite import Azurite
from harness.fleet import DATA_MOUNT, REGISTRY, Fleet, running_fleet
from harness.records import same_process

HOSTS = 5
FAILING_PRE = "acvs-h02"  # its pre-script exits 3
UNREACHABLE = "acvs-h04"  # one of its two disks is behind a port nobody answers
CONSISTENT = ("acvs-h01", "acvs-h03", "acvs-h05")
DISKS_PER_HOST = 2
CONFIG = "etc/azure/VMSnapshotScriptPluginConfig.json"
SCRIPTS = ("etc/azure/pre-script.sh", "etc/azure/post-script.sh")
JOURNAL = "root/prepost.journal"
STATUS_FILE = "var/lib/waagent/Microsoft.Azure.RecoveryServices.VMSnapshotLinux/status/last.status"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
OUTPUT = Path(__file__).resolve().parents[1] / "output" / "fleet"
# Microsoft's MySQL sample lives outside /etc/azure: the first rollout must create its directory.
SUPPORT_DIR = "opt/capside/azure"
SUPPORT = f"{SUPPORT_DIR}/helper.txt"
SSH_EXEC = re.compile(r"^<([\d.]+)> SSH: EXEC ", re.M)
RECAP = re.compile(
    r"^(acvs-h\d+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, loop devices)"),
    pytest.mark.skipif(shutil.which("sshd", path="/usr/sbin") is None, reason="needs sshd"),
]


def script(phase: str, token: str, tail: str = "") -> str:
    """A pre/post-script that journals its phase and the time (ns) it ran, on the host's /root."""
    return f'#!/bin/sh\n# fleet test {token}\necho "{phase} $(date +%s%N)" >> /{JOURNAL}\n{tail}'


# --- the fleet and its inventory ----------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet5() -> Iterator[Fleet]:
    with running_fleet(HOSTS, azurite=True) as fleet:
        yield fleet
    assert_nothing_left(fleet)


@pytest.fixture(scope="module")
def blob_service(fleet5: Fleet) -> Azurite:
    """The oracle: the SDK on the fleet's Azurite (which the fleet stops at teardown)."""
    return Azurite.from_state(fleet5.azurite)


@pytest.fixture(scope="module")
def disks(fleet5: Fleet, blob_service: Azurite) -> dict[str, list[str]]:
    """Each host's page blobs: host -> blob names, in container `fleet`."""
    container = blob_service.create_container("fleet")
    made = {}
    for name in fleet5.names:
        made[name] = [f"{name}-disk{i}.vhd" for i in range(DISKS_PER_HOST)]
        for blob in made[name]:
            blob_service.create_page_blob(blob, 64 * 1024, blob.encode(), container=container)
    return made


@pytest.fixture(scope="module")
def vars_inventory(fleet5, blob_service, disks, tmp_path_factory) -> Path:
    """A second inventory with the play's variables: scripts, disks (secrets), status blobs."""
    status_container = blob_service.create_container("status")
    # The bridge is the only http address the hosts may use (the modules refuse plain http
    # elsewhere), so the dead endpoint is a port on it that nothing listens on.
    with socket.socket() as probe:
        probe.bind((blob_service.host, 0))
        dead_port = probe.getsockname()[1]
    hosts = {}
    for name in fleet5.names:
        uris = [blob_service.blob_sas("fleet", blob) for blob in disks[name]]
        if name == UNREACHABLE:
            uris[1] = uris[1].replace(
                f"//{blob_service.host}:{blob_service.port}/",
                f"//{blob_service.host}:{dead_port}/",
                1,
            )
        hosts[name] = {
            "snapshot_disks": uris,
            "snapshot_status_blob_uri": blob_service.blob_sas(
                status_container, f"{name}.json", permissions="rcw"
            ),
        }
    hosts[FAILING_PRE]["configure_prepost_pre_script_content"] = script("pre", fleet5.id, "exit 3")
    group_vars = {
        "configure_prepost_pre_script_content": script("pre", fleet5.id),
        "configure_prepost_post_script_content": script("post", fleet5.id),
        "configure_prepost_timeout_seconds": 20,
        "snapshot_freeze_mounts": [DATA_MOUNT],  # the hosts' own loop disks, nothing else
        "snapshot_max_freeze_seconds": 20,
        "snapshot_call_timeout_seconds": 5,
    }
    directory = tmp_path_factory.mktemp("fleet-vars")
    helper = directory / "helper.txt"
    helper.write_text(f"helper {fleet5.id}\n")
    group_vars["configure_prepost_support_files"] = [{"src": str(helper), "dest": f"/{SUPPORT}"}]
    path = directory / "vars.yml"
    path.write_text(
        yaml.safe_dump({"all": {"children": {"fleet": {"hosts": hosts, "vars": group_vars}}}})
    )
    path.chmod(0o600)
    return path


def run_playbook(
    fleet: Fleet, extra: Path, playbook: str, log: str, *options: str
) -> subprocess.CompletedProcess:
    """Run a collection playbook on the whole fleet; keep its output for the secrets scan."""
    command = [str(ANSIBLE_PLAYBOOK), "-i", fleet.inventory, "-i", str(extra)]
    command += [
        f"appconsistent.vmsnapshot.{playbook}",
        "-e",
        "target_hosts=fleet",
        "-f",
        str(HOSTS),
        *options,
    ]
    env = {**fleet.env(), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=300, check=False
    )
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / f"{log}.log").write_text(done.stdout + done.stderr)
    assert scan_text(done.stdout + done.stderr) == [], "a secret in the playbook's output"
    return done


def recap(done: subprocess.CompletedProcess) -> dict[str, dict[str, int]]:
    rows = {
        m[1]: dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups()[1:])))
        for m in RECAP.finditer(done.stdout)
    }
    assert len(rows) == HOSTS, done.stdout[-3000:] + done.stderr[-3000:]
    return rows


def managed_files(fleet: Fleet, name: str) -> dict[str, os.stat_result]:
    root = fleet.host(name).root
    return {rel: os.stat(root / rel) for rel in (CONFIG, *SCRIPTS)}


@pytest.fixture(scope="module")
def rolled_out(fleet5, vars_inventory) -> subprocess.CompletedProcess:
    return run_playbook(fleet5, vars_inventory, "configure", "configure-rollout")


# --- checks on the system's state -----------------------------------------------------------------


def journal(fleet: Fleet, name: str) -> list[tuple[str, int]]:
    path = fleet.host(name).root / JOURNAL
    lines = path.read_text().splitlines() if path.exists() else []
    return [(phase, int(ns)) for phase, ns in (line.split() for line in lines)]


def snapshot_ns(timestamp: str) -> int:
    """Azurite's snapshot id (`2026-01-02T03:04:05.1234567Z`) as ns since the epoch."""
    whole, fraction = timestamp.rstrip("Z").split(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds * 10**9 + int(fraction.ljust(9, "0")[:9])


def writable(fleet: Fleet, name: str, timeout: float = 10) -> bool:
    """Write and fsync on the host's data disk; a frozen disk blocks it (the ssh client is ours)."""
    command = f"echo probe > {DATA_MOUNT}/probe-{time.monotonic_ns()} && sync -f {DATA_MOUNT}"
    with contextlib.suppress(subprocess.TimeoutExpired):
        return fleet.ssh(name, command, check=False, timeout=timeout).returncode == 0
    return False


def leftover_processes(fleet: Fleet, name: str) -> list[str]:
    """Command lines of the processes in a host other than its sshd and ssh sessions."""
    pids = subprocess.run(
        ["ip", "netns", "pids", fleet.host(name).netns], capture_output=True, text=True, check=True
    ).stdout.split()
    found = []
    for pid in pids:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if not cmdline.startswith(("/usr/sbin/sshd ", "sshd")):
                found.append(cmdline)
    return found


def assert_nothing_left(fleet: Fleet) -> None:
    """After down: no namespace, link, process, mount, loop device or file of this fleet."""
    prefix = f"acvs-{fleet.id}-"
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert prefix not in netns.stdout
    assert not list(Path("/sys/class/net").glob(f"{prefix}*"))
    recorded = [(h.sshd_pid, h.sshd_start) for h in fleet.hosts]
    if fleet.azurite:
        recorded.append((fleet.azurite["pid"], fleet.azurite["start"]))
    assert not [pid for pid, start in recorded if same_process(pid, start)]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            assert fleet.base_dir.encode() not in cmdline.read_bytes(), cmdline
    assert fleet.base_dir not in Path("/proc/self/mountinfo").read_text()
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            assert not backing.read_text().startswith(fleet.base_dir), backing
    assert not Path(fleet.base_dir).exists()
    assert not (REGISTRY / f"{fleet.id}.json").exists()


# --- the tests ------------------------------------------------------------------------------------


def test_rollout_configures_every_host(fleet5, rolled_out):
    assert rolled_out.returncode == 0, rolled_out.stdout[-3000:]
    rows = recap(rolled_out)
    assert all(row["changed"] >= 1 and row["failed"] == 0 for row in rows.values()), rows
    for name in fleet5.names:
        root = fleet5.host(name).root
        files = managed_files(fleet5, name)
        assert {rel: (st.st_uid, st.st_mode & 0o7777) for rel, st in files.items()} == {
            CONFIG: (0, 0o600),
            SCRIPTS[0]: (0, 0o700),
            SCRIPTS[1]: (0, 0o700),
        }
        config = json.loads((root / CONFIG).read_text())
        assert config["preScriptLocation"] == "/etc/azure/pre-script.sh"
        assert config["postScriptLocation"] == "/etc/azure/post-script.sh"
        assert (config["timeoutInSeconds"], config["continueBackupOnFailure"]) == (20, True)
        pre = (root / SCRIPTS[0]).read_text()
        assert f"fleet test {fleet5.id}" in pre
        made, helper = os.stat(root / SUPPORT_DIR), os.stat(root / SUPPORT)
        assert (made.st_uid, made.st_mode & 0o7777) == (0, 0o755), name
        assert (helper.st_uid, helper.st_mode & 0o7777) == (0, 0o700), name
        assert (root / SUPPORT).read_text() == f"helper {fleet5.id}\n"
        assert pre.rstrip().endswith("exit 3") is (name == FAILING_PRE)
    # Every host has its own /etc: the machine's /etc/azure did not get this run's scripts.
    with contextlib.suppress(OSError):
        assert f"fleet test {fleet5.id}" not in Path("/", SCRIPTS[0]).read_text()


def test_rerun_changes_nothing(fleet5, vars_inventory, rolled_out):
    before = {name: managed_files(fleet5, name) for name in fleet5.names}
    again = run_playbook(fleet5, vars_inventory, "configure", "configure-rerun", "-vvv")
    assert again.returncode == 0, again.stdout[-3000:]
    rows = recap(again)
    assert {name: row["changed"] for name, row in rows.items()} == dict.fromkeys(fleet5.names, 0)
    # The whole enforcement is one module run per host: one ssh command (pipelining).
    trips = {h.name: SSH_EXEC.findall(again.stdout).count(h.address) for h in fleet5.hosts}
    assert all(1 <= count <= 2 for count in trips.values()), trips
    assert "5 of 5 hosts would get an application-consistent snapshot; 0 gave no result" in (
        again.stdout
    )
    for name in fleet5.names:
        after = managed_files(fleet5, name)
        for rel, st in before[name].items():
            assert (after[rel].st_ino, after[rel].st_mtime_ns) == (st.st_ino, st.st_mtime_ns)


def test_snapshot_playbook_gives_every_host_its_code(
    fleet5, vars_inventory, rolled_out, blob_service, disks
):
    for name in fleet5.names:
        (fleet5.host(name).root / JOURNAL).unlink(missing_ok=True)
    done = run_playbook(fleet5, vars_inventory, "snapshot", "snapshot")

    # The unreachable host falls short of the required (filesystem) consistency: it alone fails.
    assert done.returncode == 2, done.stdout[-3000:]
    rows = recap(done)
    assert {n: (r["failed"], r["unreachable"]) for n, r in rows.items()} == {
        n: (int(n == UNREACHABLE), 0) for n in fleet5.names
    }
    assert "4 of 5 hosts ok; application 3, filesystem 1, crash 0, none 1" in done.stdout

    expected = {name: (0, "application") for name in CONSISTENT}
    expected[FAILING_PRE] = (1, "filesystem")
    expected[UNREACHABLE] = (76, "none")
    for name, (code, consistency) in expected.items():
        # The status document, in the status blob and in the host's local status file.
        uploaded = parse_status_document(blob_service.read_blob("status", f"{name}.json").decode())
        local = parse_status_document((fleet5.host(name).root / STATUS_FILE).read_text())
        assert (uploaded["code"], uploaded["consistency"]) == (code, consistency), name
        assert (local["blob"]["code"], local["blob"]["consistency"]) == (code, consistency), name

        taken = [blob_service.list_snapshots("fleet", blob) for blob in disks[name]]
        phases = journal(fleet5, name)
        if name == UNREACHABLE:
            # Stopped before quiescing: no script ran, no disk (not even the reachable one) was
            # snapshotted, nothing was frozen.
            assert taken == [[], []] and phases == []
            continue
        assert [entry[0] for entry in phases] == ["pre", "post"], name
        for snapshots in taken:
            assert len(snapshots) == 1, name
            assert snapshots[0]["metadata"]["appconsistentLevel"] == consistency
            assert snapshots[0]["metadata"]["appconsistentHost"] == name
            # Taken between the end of the pre-script and the start of the post-script.
            at_ms = snapshot_ns(snapshots[0]["snapshot"]) // 10**6
            assert phases[0][1] // 10**6 <= at_ms <= phases[1][1] // 10**6, (name, phases, at_ms)

    for name in fleet5.names:
        assert writable(fleet5, name), f"{name}: {DATA_MOUNT} is still frozen"
        assert leftover_processes(fleet5, name) == [], name


def test_rerun_repairs_drift(fleet5, vars_inventory, rolled_out):
    drifted_mode, drifted_script = "acvs-h01", "acvs-h03"
    config = fleet5.host(drifted_mode).root / CONFIG
    config.chmod(0o644)
    pre = fleet5.host(drifted_script).root / SCRIPTS[0]
    original = pre.read_text()
    pre.write_text("#!/bin/sh\nexit 0\n")

    repaired = run_playbook(fleet5, vars_inventory, "configure", "configure-repair", "--diff")
    assert repaired.returncode == 0, repaired.stdout[-3000:]
    changed = {name for name, row in recap(repaired).items() if row["changed"]}
    assert changed == {drifted_mode, drifted_script}
    # Both drifts are shown in the diff of the one run that repaired them.
    assert '-    "mode": "0644",' in repaired.stdout
    assert "+# fleet test" in repaired.stdout
    assert config.stat().st_mode & 0o7777 == 0o600
    assert pre.read_text() == original and pre.stat().st_mode & 0o7777 == 0o700
