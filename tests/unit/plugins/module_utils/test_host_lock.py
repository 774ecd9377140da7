from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._host_lock import HostLock
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)


@pytest.fixture
def name(tmp_path):
    """A lock name of this test's own: real runs on this machine hold the real one."""
    return b"\0appconsistent.vmsnapshot.test-" + str(tmp_path).encode()


@pytest.mark.parametrize("same_state_dir", [True, False])
def test_second_holder_in_another_process_is_refused_with_the_holders_pid(
    tmp_path, request, name, same_state_dir
):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                sys.path[:0] = {sys.path!r}
                from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import (
                    _host_lock,
                )
                lock = _host_lock.HostLock({str(tmp_path / "a")!r}, {name!r}); lock.acquire()
                print("locked", flush=True); sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    request.addfinalizer(holder.kill)
    assert holder.stdout.readline().strip() == "locked"

    state_dir = str(tmp_path / ("a" if same_state_dir else "b"))
    with pytest.raises(VmSnapshotError) as caught:
        HostLock(state_dir, name).acquire()
    assert caught.value.status == Status.error
    assert f"pid {holder.pid}" in caught.value.message
    assert "holds the host lock" in caught.value.message

    holder.kill()  # SIGKILL: the kernel releases the lock, no file is left to clean
    holder.wait(timeout=10)
    with HostLock(state_dir, name):
        pass  # free again once the holder is gone


def test_lock_is_released_and_retaken(tmp_path, name):
    lock = HostLock(str(tmp_path / "state"), name)
    lock.acquire()
    lock.release()
    with HostLock(str(tmp_path / "state"), name) as again:
        assert (tmp_path / "state" / "snapshot.lock").stat().st_mode & 0o777 == 0o600
        assert again is not None


def test_a_run_in_another_network_namespace_is_another_host(tmp_path, name):
    """unshare -n: a new network namespace has its own abstract socket names."""
    if subprocess.run(["unshare", "-n", "true"], check=False).returncode != 0:
        pytest.skip("cannot create a network namespace here")
    with HostLock(str(tmp_path / "a"), name):
        code = textwrap.dedent(
            f"""
            import sys
            sys.path[:0] = {sys.path!r}
            from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import (
                _host_lock,
            )
            with _host_lock.HostLock({str(tmp_path / "b")!r}, {name!r}):
                print("locked")
            """
        )
        other = subprocess.run(
            ["unshare", "-n", sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=False,
        )
        assert other.stdout.strip() == "locked", other.stderr
