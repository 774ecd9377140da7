"""The snapshot threads are joined with the time left: a call that never returns fails its disk."""

from __future__ import annotations

import threading
import time

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._blob_rest import (
    SnapshotResult,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._consistency import CRASH
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._sas import parse_sas_uri
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._snapshot_run import (
    JOIN_GRACE_SECONDS,
    SnapshotRequest,
    SnapshotRun,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import Status


class StuckEndpoint:
    """An endpoint whose snapshot call ignores its deadline until abort() is called."""

    def __init__(self, sas, stuck: bool) -> None:
        self.sas = sas
        self.stuck = stuck
        self.aborted = threading.Event()

    def create_snapshot(self, metadata, *, deadline):
        if self.stuck:
            self.aborted.wait(30)
        return SnapshotResult(
            self.sas.blob_url, "2026-01-01T00:00:00Z", True, 201, None, Status.success
        )

    def abort(self) -> None:
        self.aborted.set()


def test_a_call_that_does_not_return_fails_its_disk_by_the_deadline():
    disks = [
        parse_sas_uri(f"http://127.0.0.1:1/acct/c/disk{i}.vhd?sp=rw&sig=abc", what=f"disk {i}")
        for i in range(3)
    ]
    run = SnapshotRun(SnapshotRequest(disks=disks), check_mode=True)
    endpoints = [StuckEndpoint(sas, stuck=index == 1) for index, sas in enumerate(disks)]
    start = time.monotonic()
    taken = run._snapshot_all(endpoints, CRASH, deadline=start + 0.3)
    took = time.monotonic() - start
    assert took < 0.3 + JOIN_GRACE_SECONDS + 0.5
    assert [result.ok for result in taken.snapshots] == [True, False, True]
    assert taken.snapshots[1].status == Status.error_http_failure
    assert "deadline" in taken.snapshots[1].error
    assert endpoints[1].aborted.is_set()
