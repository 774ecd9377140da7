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


def test_second_holder_in_another_process_is_refused_with_the_holders_pid(tmp_path, request):
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
                lock = _host_lock.HostLock({str(tmp_path)!r}); lock.acquire()
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

    with pytest.raises(VmSnapshotError) as caught:
        HostLock(str(tmp_path)).acquire()
    assert caught.value.status == Status.error
    assert f"pid {holder.pid}" in caught.value.message

    holder.stdin.close()
    holder.wait(timeout=10)
    with HostLock(str(tmp_path)):
        pass  # free again once the holder is gone


def test_lock_is_released_and_retaken(tmp_path):
    lock = HostLock(str(tmp_path / "state"))
    lock.acquire()
    lock.release()
    with HostLock(str(tmp_path / "state")) as again:
        assert (tmp_path / "state" / "snapshot.lock").stat().st_mode & 0o777 == 0o600
        assert again is not None
