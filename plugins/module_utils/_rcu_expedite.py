# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""Whether and how to expedite the freeze with ``/sys/kernel/rcu_expedited``.

A cold FIFREEZE waits for RCU grace periods (``freeze_super()`` takes the superblock's per-CPU
write locks); with ``rcu_expedited`` set to 1 the kernel ends each grace period with
inter-processor interrupts instead of waiting for one (tens of milliseconds down to about one).
The kernel sets it itself while it boots (``rcu_end_inkernel_boot()``), for the same latency.

This module only decides, before the freeze: it opens the file (read-write) and reads the value.
The guardian writes 1 right before its first FIFREEZE and restores the earlier value as soon as
its last FIFREEZE returns (``_guardian``). Cases where it is left alone, and the freeze runs as
without the option: the option is off; ``/sys/kernel/rcu_normal`` is 1 (it overrides
``rcu_expedited``); the file does not exist; it cannot be opened for writing (``/sys`` read-only,
as in many containers); it is already non-zero (then every grace period is expedited anyway).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

RCU_EXPEDITED = "/sys/kernel/rcu_expedited"
RCU_NORMAL = "/sys/kernel/rcu_normal"


@dataclass
class RcuPlan:
    """``fd`` >= 0: the guardian sets 1 and restores ``earlier``; else ``reason`` says why not."""

    fd: int = -1
    earlier: bytes = b"0"
    reason: str | None = None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(16).strip()
    except OSError:
        return None


def prepare(enabled: bool, path: str = RCU_EXPEDITED, normal_path: str = RCU_NORMAL) -> RcuPlan:
    """Decide for one run; never raises (a freeze without expediting is still a freeze)."""
    if not enabled:
        return RcuPlan(reason="expedite_freeze is off")
    if _read(normal_path) == b"1":
        return RcuPlan(reason=f"{normal_path} is 1, which overrides rcu_expedited")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return RcuPlan(reason=f"this kernel has no {path}")
    except OSError as exc:
        return RcuPlan(reason=f"{path} cannot be written: {exc.strerror} (/sys read-only?)")
    try:
        earlier = os.pread(fd, 16, 0).strip()
    except OSError as exc:
        os.close(fd)
        return RcuPlan(reason=f"{path} cannot be read: {exc.strerror}")
    if earlier != b"0":
        with contextlib.suppress(OSError):
            os.close(fd)
        return RcuPlan(
            reason=f"{path} is already {earlier.decode(errors='replace')}: left as it is"
        )
    return RcuPlan(fd=fd, earlier=earlier)
