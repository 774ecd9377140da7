# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""A thaw that lives outside the run's processes: a transient systemd timer.

The guardian, its deputy and the module each thaw when the others die or stop; killing all three
at once (a whole cgroup, an OOM kill of the tree) would still leave the filesystems frozen, and
the kernel never thaws by itself. Where the host runs systemd, the run arms, before the first
FIFREEZE, a transient timer (``systemd-run --on-active``) that fires ``BACKSTOP_MARGIN_SECONDS``
after the deadline and runs ``fsfreeze --unfreeze`` on each mount (and puts ``rcu_expedited``
back if it still holds our 1).

It must never thaw a freeze that is not ours: by the time it fires, our freeze has normally ended
and another tool may have frozen the same filesystem. So the timer acts only while a marker file
on ``/run`` (a tmpfs: no disk write while frozen) exists. The module creates the marker before
arming; whichever process ends the freeze (the guardian's normal thaw seen by the module, the
module's own thaw, the deputy) removes it right after thawing with one ``unlink()``, and the module
then stops the timer (``systemctl stop``). Only a run killed between its thaw and that unlink,
microseconds, leaves a marker whose timer could meet another tool's freeze.

Checked on Debian 12 (systemd 252) booted with systemd-nspawn, the command below run inside it:
with the marker, a frozen filesystem was thawed 2.68 s after arming for a 2 s deadline; without
the marker, or after ``cancel()``, the freeze stayed (the tests then thawed it). The unit tests
run the same command against stand-ins.

Where there is no systemd (``/run/systemd/system`` missing, as in most containers) or arming
fails, the deputy is the only backstop; the result says which one was armed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Sequence

MARKER_DIR = "/run/appconsistent-vmsnapshot"
SYSTEMD_RUNTIME = "/run/systemd/system"
RCU_EXPEDITED = "/sys/kernel/rcu_expedited"
# After the deadline: later than the module's and the deputy's own take-over, well within the
# invariant (thawed within the deadline plus one second).
BACKSTOP_MARGIN_SECONDS = 0.6
_TIMEOUT = 10

# $1 marker, $2 fsfreeze, $3 rcu_expedited's earlier value ("-": not ours), then the mounts in
# thaw order. Nothing happens without the marker; each mount is tried (EINVAL: not frozen).
THAW_SCRIPT = (
    '[ -e "$1" ] || exit 0; marker=$1; fsfreeze=$2; rcu=$3; shift 3; '
    'for m in "$@"; do "$fsfreeze" --unfreeze "$m"; done; '
    'if [ "$rcu" != - ] && [ "$(cat ' + RCU_EXPEDITED + ')" = 1 ]; then '
    'echo "$rcu" > ' + RCU_EXPEDITED + "; fi; "
    'rm -f "$marker"'
)


class ThawTimer:
    """Arm with ``arm()`` before the freeze; ``cancel()`` after the thaw (both never raise)."""

    def __init__(
        self,
        mount_points: Sequence[str],
        max_freeze_seconds: float,
        rcu_earlier: bytes | None = None,
        *,
        marker_dir: str = MARKER_DIR,
        systemd_runtime: str = SYSTEMD_RUNTIME,
    ) -> None:
        self.mount_points = list(mount_points)
        self.seconds = max_freeze_seconds + BACKSTOP_MARGIN_SECONDS
        self.rcu_earlier = rcu_earlier
        self.marker_dir = marker_dir
        self.systemd_runtime = systemd_runtime
        self.unit: str | None = None
        self.name = f"appconsistent-thaw-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Known before arming, so that the guardian (forked first, then the mounts flushed) can
        # be told it; the timer counts from ``arm()``, which belongs right before the freeze.
        self.marker_path = os.path.join(marker_dir, f"{self.name}.frozen")
        self.marker: str | None = None  # the marker file, once armed
        self.reason: str | None = None  # why it is not armed

    @property
    def backstop(self) -> str:
        return "systemd-timer" if self.unit else "deputy"

    def command(self, fsfreeze: str) -> list[str]:
        """What the timer runs (also what the tests run by hand)."""
        rcu = self.rcu_earlier.decode() if self.rcu_earlier is not None else "-"
        thaw_order = list(reversed(self.mount_points))
        return ["/bin/sh", "-c", THAW_SCRIPT, "thaw", str(self.marker), fsfreeze, rcu, *thaw_order]

    def arm(self) -> bool:
        if not os.path.isdir(self.systemd_runtime):
            self.reason = "the host does not run systemd"
            return False
        systemd_run, fsfreeze = shutil.which("systemd-run"), shutil.which("fsfreeze")
        if not systemd_run or not fsfreeze:
            self.reason = "systemd-run or fsfreeze is missing"
            return False
        try:
            os.makedirs(self.marker_dir, mode=0o700, exist_ok=True)
            self.marker = self.marker_path
            with open(self.marker, "x", encoding="ascii") as handle:
                handle.write(f"{os.getpid()}\n")
        except OSError as exc:
            self.reason = f"cannot create the timer's marker: {exc.strerror}"
            self.marker = None
            return False
        argv = [
            systemd_run,
            "--quiet",
            "--collect",
            f"--unit={self.name}",
            f"--on-active={int(self.seconds * 1000)}ms",
            "--timer-property=AccuracySec=1ms",
            "--description=appconsistent.vmsnapshot: thaw if the snapshot run died while frozen",
            *self.command(fsfreeze),
        ]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._drop_marker()
            self.reason = f"systemd-run failed: {exc}"
            return False
        if done.returncode != 0:
            self._drop_marker()
            self.reason = f"systemd-run failed: {(done.stderr or done.stdout).strip()[:200]}"
            return False
        self.unit = self.name
        return True

    def cancel(self) -> None:
        """After the thaw: the marker goes first (the timer then does nothing), then the timer."""
        self._drop_marker()
        if self.unit:
            systemctl = shutil.which("systemctl") or "systemctl"
            # The marker is gone already: a timer that fires anyway does nothing.
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    [systemctl, "stop", f"{self.unit}.timer", f"{self.unit}.service"],
                    capture_output=True,
                    timeout=_TIMEOUT,
                    check=False,
                )

    def _drop_marker(self) -> None:
        if self.marker:
            with contextlib.suppress(OSError):
                os.unlink(self.marker)
