"""A fleet of ssh hosts on one machine, for the system tests and the benchmarks.

Each host is a network namespace on a bridge this harness makes, with its own mount and UTS
namespaces: its own hostname, a private overlay of the whole root filesystem (so `/etc/azure`,
`/var/log` and `/root` are per host and `/` is not freezable inside a host), a private `/tmp`, its
own loop-mounted ext4 at `/srv/data`, and a real `sshd`. The harness writes an Ansible inventory
for the fleet and can start Azurite on the bridge address, where the hosts reach it.

Every name carries the prefix `acvs-<id>-`; the state file records what a run made, and teardown
touches nothing else. A fleet is a record of `records.py`, registered in `/run/acvs-fleet/<id>.json`
and also written to the state file the caller names. See tests/fleet/README.md.

    python tests/harness/fleet.py up --hosts 5 --json state.json [--azurite]
    python tests/harness/fleet.py down --json state.json
    python tests/harness/fleet.py cleanup [--json state.json] [--force]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import ipaddress
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: import the harness the way the tests do
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest
import yaml

from harness.records import Record, Registry, process_start, run, same_process

# Where every run registers its state, so `cleanup` finds the leftovers of a killed run.
REGISTRY = Path("/run/acvs-fleet")
DATA_MOUNT = "/srv/data"
COLLECTIONS = Path(__file__).resolve().parents[2] / ".cache" / "collections"
# Candidate subnets 10.231.<k>.0/24; the bridge is .1 and host n is .(10 + n).
SUBNET_BASE = "10.231"
HOST_OFFSET = 10
# Interface names are limited to 15 characters: "acvs-<6 hex>-v<2 digits>".
MAX_HOSTS = 99
SSH_READY_TIMEOUT = 15.0
FITHAW = 0xC0045878

# Runs in the host's new mount and UTS namespaces (already inside its network namespace), then
# becomes its sshd. Arguments: host dir, hostname, address, loop device, data mount point.
HOST_SETUP = r"""
set -eu
dir=$1 name=$2 address=$3 loop=$4 data=$5
root=$dir/root
mount -t tmpfs -o mode=0700,size=512m "$name-state" "$dir/state"
mkdir "$dir/state/upper" "$dir/state/work"
mount -t overlay -o "lowerdir=/,upperdir=$dir/state/upper,workdir=$dir/state/work" \
    "$name-root" "$root"
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t tmpfs -o mode=1777 "$name-tmp" "$root/tmp"
mkdir -p "$root$data" "$root/run/sshd" "$root/etc/ssh/acvs"
mount "$loop" "$root$data"
cp "$dir"/ssh/* "$root/etc/ssh/acvs/"
echo "$name" >/proc/sys/kernel/hostname
echo "$name" >"$root/etc/hostname"
echo "$address $name" >>"$root/etc/hosts"
cd "$root"
pivot_root . .
umount -l .
cd /
exec /usr/sbin/sshd -D -e -f /etc/ssh/acvs/sshd_config
"""

SSHD_CONFIG = """\
ListenAddress {address}
Port 22
HostKey /etc/ssh/acvs/ssh_host_ed25519_key
PidFile /run/acvs-sshd.pid
AuthorizedKeysFile /etc/ssh/acvs/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
MaxStartups 100:30:200
AcceptEnv LANG LC_*
# The hosts reach the fleet's Azurite over plain http on the bridge; the modules refuse http to
# anything but loopback unless the host is named here (a test network, not a production one).
SetEnv APPCONSISTENT_VMSNAPSHOT_HTTP_HOSTS={bridge}
Subsystem sftp internal-sftp
"""


class FleetError(RuntimeError):
    """The fleet could not be brought up or taken down."""


@dataclasses.dataclass
class FleetHost:
    """One host: its names, address, data device and sshd."""

    name: str
    netns: str
    veth: str
    address: str
    dir: str
    image: str
    loop_device: str = ""
    sshd_pid: int = 0
    sshd_start: str | None = None  # its start time: guards against PID reuse

    @property
    def root(self) -> Path:
        """The host's filesystem as seen from the machine (through its sshd)."""
        return Path(f"/proc/{self.sshd_pid}/root")


class Fleet(Record):
    """A running (or taken down) fleet, as recorded in its state file.

    Its record is in the registry (``state_file``); ``save`` also writes it to ``state_path``,
    the caller's copy, which keeps the fleet's last state (``status: down``) after teardown.
    An owner of None: detached (CLI `up`), only `down` or `cleanup --force` ends it.
    """

    fields = (
        "id",
        "base_dir",
        "state_path",
        "bridge",
        "key",
        "inventory",
        "control_dir",
        "hosts",
        "subnet",
        "bridge_address",
        "azurite",
        "status",
        "timings",
    )
    noun = "fleet"
    registry = Registry(lambda: str(REGISTRY))
    id: str
    base_dir: str
    state_path: str
    bridge: str
    key: str
    inventory: str
    control_dir: str
    hosts: list[FleetHost]
    subnet: str
    bridge_address: str
    azurite: dict[str, Any] | None  # the Azurite's record (azurite.py) on the bridge
    status: str
    timings: dict[str, float]

    def __init__(self, record: dict, state_file: str) -> None:
        super().__init__(record, state_file)
        self.hosts = [FleetHost(**h) for h in record["hosts"]]
        self.subnet = self.subnet or ""
        self.bridge_address = self.bridge_address or ""
        self.status = self.status or "starting"
        self.timings = self.timings or {}

    def __str__(self) -> str:
        return f"fleet {self.id}"

    # --- state -------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: os.PathLike[str] | str) -> Fleet:
        """The fleet a caller's state file records."""
        record = json.loads(Path(path).read_text())
        return cls(record, record.get("state_file") or str(REGISTRY / f"{record['id']}.json"))

    def as_dict(self) -> dict:
        return {**super().as_dict(), "hosts": [dataclasses.asdict(h) for h in self.hosts]}

    def save(self) -> None:
        super().save()
        self._save_copy()

    def _save_copy(self) -> None:
        path = Path(self.state_path)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        os.replace(temporary, path)

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def host(self, name: str) -> FleetHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    # --- use ---------------------------------------------------------------------------------

    def ssh_args(self) -> list[str]:
        """The ssh options the inventory uses: this run's key, no known_hosts, one master."""
        return [
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR",
            "-o", "ControlMaster=auto",
            "-o", "ControlPersist=60s",
            "-o", f"ControlPath={self.control_dir}/%C",
        ]  # fmt: skip

    def ssh(
        self,
        host: str,
        command: str,
        *,
        input: str = "",
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command on one host over ssh, as root (secrets go in `input`)."""
        h = self.host(host)
        argv = ["ssh", "-i", self.key, "-o", "BatchMode=yes", *self.ssh_args()]
        return subprocess.run(
            [*argv, f"root@{h.address}", command],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def env(self) -> dict[str, str]:
        """Environment for ansible / ansible-playbook against this fleet."""
        return {
            **os.environ,
            "LANG": "C.UTF-8",
            "ANSIBLE_INVENTORY": self.inventory,
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        }

    # --- teardown ----------------------------------------------------------------------------

    def teardown(self) -> None:
        """Take the fleet down; idempotent, and it touches only what the state records."""
        start = time.monotonic()
        if self.azurite:
            _stop_azurite(self.azurite)
        _close_ssh_masters(Path(self.control_dir))
        for h in self.hosts:
            _thaw(h)
        _kill_namespace_processes(self.hosts)
        _run_ip_batch([f"netns del {h.netns}" for h in self.hosts if _netns_exists(h.netns)])
        _run_ip_batch([f"link del {h.veth}" for h in self.hosts if _link_exists(h.veth)])
        for h in self.hosts:
            _detach_loop(h)
        if _link_exists(self.bridge):
            _ip("link", "del", self.bridge)
        _remove_base_dir(Path(self.base_dir))
        self.status = "down"
        self.timings["down"] = round(time.monotonic() - start, 3)
        with contextlib.suppress(FileNotFoundError):  # the caller's directory is gone
            self._save_copy()
        self.forget()

    down = teardown  # the fleet's own word for it (tests/fleet/README.md)


# The sshd and Azurite processes this process started, to reap them once they end.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def up(
    hosts: int,
    state_path: os.PathLike[str] | str | None = None,
    *,
    azurite: bool = False,
    data_size_mib: int = 64,
    detached: bool = False,
) -> Fleet:
    """Bring up a fleet of `hosts` hosts and return it; on any failure, take it down again.

    A fleet that is not `detached` belongs to this process: it is taken down at exit and on
    SIGTERM/SIGHUP. A detached fleet (the CLI's `up`) lives until `down` or `cleanup --json`.
    """
    if not 1 <= hosts <= MAX_HOSTS:
        raise FleetError(f"A fleet has 1 to {MAX_HOSTS} hosts, not {hosts}.")
    start = time.monotonic()
    run_id = uuid.uuid4().hex[:6]
    prefix = f"acvs-{run_id}-"
    base = Path(Fleet.registry.new_directory(prefix, None))
    record = {
        "id": run_id,
        "base_dir": str(base),
        "state_path": str(Path(state_path).resolve() if state_path else base / "state.json"),
        "bridge": f"{prefix}br",
        "key": str(base / "id_ed25519"),
        "inventory": str(base / "inventory.yml"),
        "control_dir": str(base / "cp"),
        "hosts": [
            {
                "name": f"acvs-h{n:02d}",
                "netns": f"{prefix}h{n:02d}",
                "veth": f"{prefix}v{n:02d}",
                "address": "",
                "dir": str(base / f"h{n:02d}"),
                "image": str(base / f"h{n:02d}" / "data.img"),
            }
            for n in range(1, hosts + 1)
        ],
    }
    # The names are on record before anything is made, so a killed `up` can be cleaned up.
    with Fleet.registry.making(record, owned=not detached, name=f"{run_id}.json") as fleet:
        _make_network(fleet)
        _make_hosts(fleet, data_size_mib)
        _write_inventory(fleet)
        if azurite:
            fleet.azurite = _start_azurite(fleet, detached)
            _write_inventory(fleet)
        fleet.status = "up"
    fleet.timings["up"] = round(time.monotonic() - start, 3)
    fleet.save()
    return fleet


def down(state_path: os.PathLike[str] | str) -> Fleet:
    """Take down the fleet a state file records (safe to call twice)."""
    fleet = Fleet.load(state_path)
    fleet.state_path = str(Path(state_path).resolve())
    fleet.down()
    return fleet


def cleanup(state_paths: list[str] | None = None, *, force: bool = False) -> list[str]:
    """Take down leftover fleets and return their ids.

    With `state_paths`, those fleets. Without, every registered fleet whose owning process is
    gone (a killed test run or a killed `up`); detached fleets and fleets of live processes are
    left alone unless `force`.
    """
    if not state_paths:
        return [f.id for f in Fleet.registry.cleanup(everything=force, unowned=False)]
    fleets = [Fleet.load(p) for p in state_paths]
    for fleet in fleets:
        fleet.down()
    return [f.id for f in fleets]


@contextlib.contextmanager
def running_fleet(hosts: int, **kwargs: Any) -> Iterator[Fleet]:
    """A fleet for the duration of a `with` block (for fixtures of any scope)."""
    fleet = up(hosts, **kwargs)
    try:
        yield fleet
    finally:
        fleet.down()


@pytest.fixture
def fleet() -> Iterator[Callable[..., Fleet]]:
    """Factory: `fleet(3, azurite=True)` brings up a fleet, taken down after the test."""
    yield from Fleet.registry.factory(up)


# --- bring-up ---------------------------------------------------------------------------------


def _make_network(fleet: Fleet) -> None:
    # The lock keeps two fleets starting at once from picking the same subnet.
    with open(REGISTRY / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subnet = _free_subnet()
        fleet.subnet = str(subnet)
        fleet.bridge_address = str(subnet.network_address + 1)
        for n, h in enumerate(fleet.hosts, start=1):
            h.address = str(subnet.network_address + HOST_OFFSET + n)
        fleet.save()
        _ip("link", "add", fleet.bridge, "type", "bridge")
        _ip("addr", "add", f"{fleet.bridge_address}/24", "dev", fleet.bridge)
        _ip("link", "set", fleet.bridge, "up")
    lines = []
    for h in fleet.hosts:
        lines += [
            f"netns add {h.netns}",
            f"link add {h.veth} type veth peer name eth0 netns {h.netns}",
            f"link set {h.veth} master {fleet.bridge} up",
        ]
    _run_ip_batch(lines, force=False)
    for h in fleet.hosts:
        _run_ip_batch(
            [f"addr add {h.address}/24 dev eth0", "link set eth0 up", "link set lo up"],
            force=False,
            netns=h.netns,
        )


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.231.<k>.0/24 that no address or route on this machine overlaps."""
    used = []
    for obj in ("addr", "route"):
        argv = ["ip", "-j", "-4", obj] + (["show", "table", "all"] if obj == "route" else [])
        for entry in json.loads(run(argv).stdout or "[]"):
            if obj == "addr":
                used += [f"{a['local']}/{a['prefixlen']}" for a in entry.get("addr_info", [])]
            elif entry.get("dst", "default") != "default":
                used.append(entry["dst"])
    nets = [ipaddress.ip_network(u, strict=False) for u in used]
    nets = [n for n in nets if n.prefixlen > 0]
    candidates = list(range(1, 255))
    random.shuffle(candidates)
    for k in candidates:
        subnet = ipaddress.ip_network(f"{SUBNET_BASE}.{k}.0/24")
        if not any(subnet.overlaps(n) for n in nets):
            return subnet
    raise FleetError(f"No free /24 in {SUBNET_BASE}.0.0/16 on this machine.")


def _make_hosts(fleet: Fleet, data_size_mib: int) -> None:
    Path(fleet.control_dir).mkdir(mode=0o700)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"acvs-{fleet.id}", "-f", fleet.key])
    pub = Path(f"{fleet.key}.pub").read_text()
    save_lock = threading.Lock()

    def make(h: FleetHost) -> None:
        hdir = Path(h.dir)
        for sub in ("ssh", "state", "root"):
            (hdir / sub).mkdir(parents=True)
        (hdir / "ssh" / "sshd_config").write_text(
            SSHD_CONFIG.format(address=h.address, bridge=fleet.bridge_address)
        )
        (hdir / "ssh" / "authorized_keys").write_text(pub)
        key = hdir / "ssh" / "ssh_host_ed25519_key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name, "-f", str(key)])
        with open(h.image, "wb") as img:
            img.truncate(data_size_mib << 20)
        run(["mkfs.ext4", "-q", "-F", "-L", "acvs-data", h.image])
        h.loop_device = run(["losetup", "--find", "--show", h.image]).stdout.strip()
        with save_lock:
            fleet.save()
        argv = ["ip", "netns", "exec", h.netns, "unshare", "--mount", "--uts"]
        argv += ["--propagation", "private", "--", "/bin/sh", "-c", HOST_SETUP, "sh"]
        argv += [h.dir, h.name, h.address, h.loop_device, DATA_MOUNT]
        with open(hdir / "sshd.log", "wb") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        _CHILDREN[proc.pid] = proc
        h.sshd_pid, h.sshd_start = proc.pid, process_start(proc.pid)
        with save_lock:
            fleet.save()
        _wait_for_sshd(h, proc)

    with ThreadPoolExecutor(max_workers=min(8, len(fleet.hosts))) as pool:
        for future in [pool.submit(make, h) for h in fleet.hosts]:
            future.result()


def _wait_for_sshd(h: FleetHost, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SSH_READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (Path(h.dir) / "sshd.log").read_text(errors="replace").strip()
            raise FleetError(f"sshd of {h.name} exited with {proc.returncode}: {log}")
        with contextlib.suppress(OSError), socket.create_connection((h.address, 22), timeout=1):
            return
        time.sleep(0.02)
    raise FleetError(f"sshd of {h.name} did not listen on {h.address}:22 in {SSH_READY_TIMEOUT} s.")


def _write_inventory(fleet: Fleet) -> None:
    common = " ".join(shlex.quote(a) for a in fleet.ssh_args())
    hosts = {
        h.name: {
            "ansible_host": h.address,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": fleet.key,
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_common_args": common,
            "ansible_ssh_pipelining": True,
            "fleet_data_mount": DATA_MOUNT,
            "fleet_data_device": h.loop_device,
        }
        for h in fleet.hosts
    }
    group: dict[str, Any] = {"hosts": hosts}
    if fleet.azurite:
        group["vars"] = {"fleet_azurite_url": fleet.azurite["url"]}
    text = yaml.safe_dump({"all": {"children": {"fleet": group}}}, sort_keys=False)
    Path(fleet.inventory).write_text(
        f"# Written by tests/harness/fleet.py for run {fleet.id}.\n{text}"
    )


def _start_azurite(fleet: Fleet, detached: bool) -> dict[str, Any]:
    # Imported here: the Azure SDK is slow to import and only --azurite needs it.
    from harness.azurite import start_azurite

    base = Path(fleet.base_dir) / "azurite"
    server = start_azurite(base, host=fleet.bridge_address, port=0, owned=not detached)
    if server.process is not None:
        _CHILDREN[server.pid] = server.process
    return server.state()


def _stop_azurite(state: dict[str, Any]) -> None:
    from harness.azurite import Azurite

    Azurite.from_state(state).stop()
    _reap()


# --- teardown ---------------------------------------------------------------------------------


def _close_ssh_masters(control_dir: Path) -> None:
    if not control_dir.is_dir():
        return
    for sock in control_dir.iterdir():
        subprocess.run(
            ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "acvs-fleet"],
            capture_output=True,
            timeout=10,
            check=False,
        )


def _thaw(h: FleetHost) -> None:
    """Thaw the host's data filesystem, in case a test left it frozen.

    It is reached through any live process of the host (sshd may be gone after a killed run),
    and thawed only if it is this host's loop device: nothing else is ours to thaw.
    """
    if not h.loop_device or not Path(h.loop_device).exists():
        return
    ours = os.stat(h.loop_device).st_rdev
    pids = [h.sshd_pid] if same_process(h.sshd_pid, h.sshd_start) else []
    if _netns_exists(h.netns):
        pids += sorted(_netns_pids(h.netns))
    for pid in pids:
        try:
            fd = os.open(f"/proc/{pid}/root{DATA_MOUNT}", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            if os.fstat(fd).st_dev != ours:
                continue
            with contextlib.suppress(OSError):  # EINVAL: it was not frozen
                fcntl.ioctl(fd, FITHAW, 0)
            return
        finally:
            os.close(fd)


def _kill_namespace_processes(hosts: list[FleetHost]) -> None:
    """SIGKILL every process in the hosts' network namespaces, sshd last; wait until gone."""
    sshds = {h.sshd_pid for h in hosts}
    deadline = time.monotonic() + 10
    for round_ in range(1000):
        pids = {pid for h in hosts if _netns_exists(h.netns) for pid in _netns_pids(h.netns)}
        others = pids - sshds
        targets = others or pids
        if not targets:
            break
        if time.monotonic() > deadline:
            raise FleetError(f"Processes {sorted(pids)} survived SIGKILL for 10 s.")
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap()
        time.sleep(0.01 if round_ < 10 else 0.1)
    # A host whose namespace is already gone may still have an sshd (a killed `up`).
    _end_processes([(h.sshd_pid, h.sshd_start) for h in hosts])


def _end_processes(procs: list[tuple[int, str | None]]) -> None:
    """SIGKILL processes recorded by PID and start time, and wait until they are gone."""
    live = [(pid, st) for pid, st in procs if same_process(pid, st)]
    for pid, _start in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        _reap()
        live = [(pid, st) for pid, st in live if same_process(pid, st)]
        if not live:
            return
        if time.monotonic() > deadline:
            raise FleetError(f"Processes {[p for p, _start in live]} survived SIGKILL for 10 s.")
        time.sleep(0.01)


def _reap() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


def _detach_loop(h: FleetHost) -> None:
    """Detach the host's loop device if it still backs this host's image.

    The host's mounts go when its last process does, but the kernel releases them a moment
    later; a busy loop device is detached when its last user closes it (autoclear).
    """
    if not h.loop_device or _loop_backing(h.loop_device) != h.image:
        return
    run(["losetup", "-d", h.loop_device], check=False)
    deadline = time.monotonic() + 10
    while _loop_backing(h.loop_device) == h.image:
        if time.monotonic() > deadline:
            raise FleetError(
                f"Loop device {h.loop_device} of {h.name} is still attached: does a process "
                "outside the fleet hold the host's mount namespace (nsenter -m without -n)?"
            )
        time.sleep(0.01)


def _loop_backing(device: str) -> str:
    path = Path("/sys/block") / Path(device).name / "loop" / "backing_file"
    try:
        return path.read_text().strip().removesuffix(" (deleted)")
    except OSError:
        return ""


def _remove_base_dir(base: Path) -> None:
    if not base.exists():
        return
    prefix = f"{base}/"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if line.split()[4].startswith(prefix):
            raise FleetError(f"{line.split()[4]} is still mounted; {base} is left in place.")
    with contextlib.suppress(FileNotFoundError):  # a concurrent cleanup got there first
        shutil.rmtree(base)


# --- small helpers ----------------------------------------------------------------------------


def _ip(*args: str) -> None:
    run(["ip", *args])


def _run_ip_batch(lines: list[str], *, force: bool = True, netns: str = "") -> None:
    """Many `ip` commands in one process (teardown: `force` goes on past errors)."""
    if not lines:
        return
    argv = ["ip", *(["-n", netns] if netns else []), *(["-force"] if force else []), "-batch", "-"]
    run(argv, check=not force, input="\n".join(lines) + "\n")


def _netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def _netns_pids(name: str) -> set[int]:
    out = run(["ip", "netns", "pids", name], check=False).stdout
    # Zombies are gone already; their parent (or init) reaps them.
    return {pid for pid in map(int, out.split()) if same_process(pid, process_start(pid))}


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


# --- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="bring up a fleet and write its state and inventory")
    p_up.add_argument("--hosts", type=int, required=True)
    p_up.add_argument("--json", required=True, help="state file to write")
    p_up.add_argument("--azurite", action="store_true", help="start Azurite on the bridge")
    p_up.add_argument("--data-size-mib", type=int, default=64)
    p_down = sub.add_parser("down", help="take down the fleet a state file records")
    p_down.add_argument("--json", required=True)
    p_clean = sub.add_parser("cleanup", help="take down leftovers of killed runs")
    p_clean.add_argument("--json", action="append", help="state file (repeatable)")
    p_clean.add_argument("--force", action="store_true", help="also detached and owned fleets")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            f = up(
                args.hosts,
                args.json,
                azurite=args.azurite,
                data_size_mib=args.data_size_mib,
                detached=True,
            )
            print(f"fleet {f.id}: {len(f.hosts)} hosts up in {f.timings['up']:.2f} s")
            print(f"inventory: {f.inventory}")
            if f.azurite:
                print(f"azurite: {f.azurite['url']}")
        elif args.command == "down":
            f = down(args.json)
            print(f"fleet {f.id}: down in {f.timings['down']:.2f} s")
        else:
            for run_id in cleanup(args.json, force=args.force):
                print(f"fleet {run_id}: cleaned up")
    except RuntimeError as exc:  # a FleetError or a command that failed
        print(f"fleet.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
