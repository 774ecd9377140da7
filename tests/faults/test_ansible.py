"""Through Ansible: the task timing out, the ssh connection dropping mid-run, -vvv output.

Every run is `ansible-playbook -vvv`; its whole output is kept and scanned for secrets (the
disks, the status and log blobs and the extension settings all carry SAS URIs).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fault_support import (
    TRACEBACK,
    App,
    FreezeMeter,
    host_lock_free,
    snapshot_args,
    wait_for,
)

from harness.azurite import Azurite
from harness.faultproxy import FaultProxy, Rule, is_snapshot
from harness.fleet import running_fleet
from harness.modules import COLLECTIONS, VENV_BIN, run_playbook

PLAYBOOK = """
- name: Snapshot
  hosts: all
  gather_facts: false
  tasks:
    - name: Take the snapshot
      appconsistent.vmsnapshot.snapshot: "{{ snapshot_args }}"
      timeout: "{{ task_timeout | default(omit) }}"
      environment:
        # Plain http is refused but to loopback: a namespace host reaches Azurite on the bridge.
        APPCONSISTENT_VMSNAPSHOT_HTTP_HOSTS: "{{ http_hosts | default('') }}"
"""


def playbook(tmp_path: Path) -> str:
    path = tmp_path / "snapshot.yml"
    path.write_text(PLAYBOOK)
    return str(path)


def kept(case, name: str, done) -> str:
    """Keep a playbook's output (scanned for secrets); a traceback in it is a failure."""
    text = (
        f"$ ansible-playbook (rc {done.returncode})\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    )
    case.save(f"{name}.ansible-vvv.txt", text)
    if TRACEBACK in text:
        case.scenario.tracebacks += 1
        case.failures.append(f"{name}: a traceback in the Ansible output")
    return text


def test_ansible_task_timeout(
    figures, app, meter, proxy, proxied_disks, azurite, loop_ext4, run_dirs, tmp_path
):
    """The task times out while frozen: the module goes on alone and finishes within its
    deadline; a retry at once is refused cleanly (host lock); the next run works."""
    deadline = 8
    scenario = figures.scenario(
        "ansible-task-timeout", "kill", "the Ansible task timing out", deadline=deadline
    )
    with scenario.case("timeout 2 s while frozen") as case:
        proxy.rules[:] = [Rule(is_snapshot, delay=4)]
        args = snapshot_args(
            proxied_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=deadline
        )
        started = time.monotonic()
        local = ("-vvv", "-e", "ansible_connection=local")
        done = run_playbook(
            playbook(tmp_path),
            extra_vars={"snapshot_args": args, "task_timeout": 2},
            options=local,
        )
        text = kept(case, "timed-out", done)
        case.check(done.returncode != 0 and "Timed out after 2 second" in text, "no timeout")
        retry = run_playbook(playbook(tmp_path), extra_vars={"snapshot_args": args}, options=local)
        text = kept(case, "retry-at-once", retry)
        case.check(
            retry.returncode == 0 or "holds the host lock" in text,
            "the retry at once neither ran nor was refused with the host lock",
        )
        scenario.note("retry at once: " + ("ran" if retry.returncode == 0 else "host lock"))
        case.check(
            wait_for(lambda: host_lock_free(run_dirs["state_dir"]), deadline + 5, 0.05),
            "the orphaned run never ended",
        )
        case.frozen(meter, started, deadline + 1)
        case.check(app.count("post-end") >= app.count("pre-start"), "no post-script")
        case.check(app.lock_free(), "the application's lock is still held")
        proxy.rules.clear()
        done = run_playbook(playbook(tmp_path), extra_vars={"snapshot_args": args}, options=local)
        kept(case, "next", done)
        case.check(done.returncode == 0, "the next run failed")
        status = case.outputs(Path(run_dirs["state_dir"]), Path(run_dirs["log_dir"]))
        case.check(status and status["code"] == 0, "the next run's status is not 0")


def test_vvv_output_with_every_secret_option(
    figures, app, meter, blob_disks, azurite, loop_ext4, run_dirs, tmp_path
):
    """Disks, status and log blobs, and the extension settings as Azure sends them, at -vvv."""
    scenario = figures.scenario(
        "secrets-vvv", "secrets", "SAS URIs in every option, at -vvv", deadline=5
    )
    with scenario.case("settings and options") as case:
        started = time.monotonic()
        disks = blob_disks(2)
        blobs = {
            "statusBlobUri": azurite.status_blob_sas(container=azurite.create_container()),
            "logsBlobUri": azurite.log_blob_sas(container=azurite.create_container()),
        }
        public = {
            "commandToExecute": "snapshot",
            "taskId": "vvv-1",
            "objectStr": base64.b64encode(
                json.dumps({"backupMetadata": [{"Key": "job", "Value": "vvv"}]}).encode()
            ).decode(),
            **blobs,
        }
        protected = {
            "objectStr": base64.b64encode(
                json.dumps({"blobSASUri": [disk.sas for disk in disks]}).encode()
            ).decode()
        }
        args = snapshot_args(disks, app, run_dirs, [loop_ext4], max_freeze_seconds=5)
        del args["disks"]
        runs = {
            "settings": {**args, "settings": public, "protected_settings": protected},
            "options": {
                **args,
                "disks": [disk.sas for disk in disks],
                "status_blob_uri": blobs["statusBlobUri"],
                "logs_blob_uri": blobs["logsBlobUri"],
                "task_id": "vvv-2",
            },
        }
        for name, module_args in runs.items():
            done = run_playbook(
                playbook(tmp_path),
                extra_vars={"snapshot_args": module_args},
                options=("-vvv", "-e", "ansible_connection=local", "--diff"),
            )
            kept(case, name, done)
            case.check(done.returncode == 0, f"{name}: the playbook failed")
            for key, sas in blobs.items():
                container, blob = sas.split("?")[0].split("/")[-2:]
                case.save(f"{name}.{key}.txt", azurite.read_blob(container, blob).decode())
            case.outputs(Path(run_dirs["state_dir"]), Path(run_dirs["log_dir"]), name)
        case.frozen(meter, started, 6)


# --- the ssh connection drops on a namespace host ---------------------------------------------


def session_sshds(host) -> list[int]:
    """The host's per-connection sshd processes (not its listener)."""
    pids = subprocess.run(
        ["ip", "netns", "pids", host.netns], capture_output=True, text=True, check=False
    ).stdout.split()
    found = []
    for pid in map(int, pids):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"sshd:") and pid != host.sshd_pid:
            found.append(pid)
    return found


def start_playbook(path: str, fleet, extra_vars: dict, tmp_path: Path, pipelining: bool):
    vars_file = tmp_path / f"vars-{time.monotonic_ns()}.json"
    vars_file.write_text(json.dumps({"http_hosts": fleet.bridge_address, **extra_vars}))
    command = [
        str(VENV_BIN / "ansible-playbook"), "-vvv", path, "-e", f"@{vars_file}",
        "-e", f"ansible_ssh_pipelining={str(pipelining).lower()}",
    ]  # fmt: skip
    env = {
        **fleet.env(),
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "0",
    }
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


@pytest.fixture(scope="module")
def fleet_host():
    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("needs openssh-server")
    with running_fleet(1, azurite=True) as fleet:
        yield fleet


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "tty"])
def test_ssh_connection_drops_mid_run(figures, fleet_host, tmp_path, pipelining):
    """sshd loses the connection while the host is frozen. Without a tty the module goes on
    and finishes; with one (no pipelining) the hangup (SIGHUP) stops the run where it stands,
    which thaws at once and runs the post-script. Either way the data filesystem thaws in time
    and the next run works."""
    scenario = figures.scenario(
        "ssh-drop", "kill", "the ssh connection dropping mid-run on a namespace host", deadline=10
    )
    fleet = fleet_host
    host = fleet.hosts[0]
    root = host.root
    server = Azurite.from_state(fleet.azurite)
    name = "pipelining" if pipelining else "tty"
    inside = Path(f"/etc/appconsistent-faults/{name}")
    (root / "etc/appconsistent-faults").mkdir(mode=0o700, exist_ok=True)
    app = App(root / inside.relative_to("/"), inside=inside)
    meter = FreezeMeter(str(root / "srv/data"))
    proxy = FaultProxy(server.host, server.port, host=fleet.bridge_address)
    state = f"/var/lib/appconsistent-faults/{name}"
    try:
        with scenario.case(name) as case:
            container = server.create_container()
            server.create_page_blob("disk0.vhd", 65536, b"data", container=container)
            sas = proxy.url_for(server.blob_sas(container, "disk0.vhd"))
            args = {
                "disks": [sas],
                "config_path": app.config_location,
                "freeze_mounts": ["/srv/data"],
                "max_freeze_seconds": 10,
                "state_dir": state,
                "log_dir": f"/var/log/appconsistent-faults/{name}",
            }
            proxy.rules[:] = [Rule(is_snapshot, delay=4)]
            started = time.monotonic()
            path = playbook(tmp_path)
            run = start_playbook(path, fleet, {"snapshot_args": args}, tmp_path, pipelining)
            case.check(proxy.snapshot_seen.wait(60), "the run never reached its snapshot call")
            case.check(meter.blocked_for() > 0 or wait_for(lambda: meter.blocked_for() > 0, 1),
                       "the data filesystem is not frozen")  # fmt: skip
            dropped = session_sshds(host)
            for pid in dropped:
                os.kill(pid, signal.SIGKILL)
            dropped_at = time.monotonic()
            stdout, stderr = run.communicate(timeout=120)
            kept(case, "dropped", subprocess.CompletedProcess([], run.returncode, stdout, stderr))
            case.check(dropped and run.returncode != 0, "the connection did not drop")
            case.frozen(meter, started, 10 + 1)
            host_state = root / state.lstrip("/")
            case.check(
                wait_for(lambda: host_lock_free(str(host_state)), 15, 0.05), "the run never ended"
            )
            case.check(app.pre_scripts_done(), "an orphaned pre-script did not end")
            finished = "post-end" in app.entries()
            scenario.note(f"{name}: dropped run " + ("finished" if finished else "hung up"))
            thawed = meter.thawed_by(dropped_at)
            case.check(thawed is not None, "still frozen")
            case.check(finished, "the dropped run did not run its post-script")
            if not pipelining:  # the hangup stopped the run: it thaws at once
                case.check(thawed - dropped_at < 2.0, "not thawed at the hangup")
            proxy.rules.clear()
            done = start_playbook(path, fleet, {"snapshot_args": args}, tmp_path, pipelining)
            stdout, stderr = done.communicate(timeout=120)
            kept(case, "next", subprocess.CompletedProcess([], done.returncode, stdout, stderr))
            case.check(done.returncode == 0, "the next run failed")
            status = case.outputs(host_state, root / args["log_dir"].lstrip("/"))
            case.check(status and status["code"] == 0, "the next run's status is not 0")
            case.check(app.count("post-start") >= app.count("pre-start"), "a post-script missing")
            case.check(app.lock_free(), "the application's lock is still held")
    finally:
        proxy.close()
        meter.stop()
        app.stop_helpers()
