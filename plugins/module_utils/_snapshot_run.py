# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Private to the appconsistent.vmsnapshot collection: not a public API.
"""One snapshot run on this host: validate, pre-script, freeze, snapshot, thaw, post-script, report.

Everything slow or fallible happens before the freeze (configuration and script checks, the
connections to every disk blob, the guardian process, the mount list), so the frozen window holds
nothing but the snapshot calls. Nothing in that window imports a module or writes to disk.

A run that dies after its pre-script started (SIGKILL, OOM, reboot) leaves the application
quiesced. So the run records its configuration in the state directory before the pre-script
and removes the record after the post-script; the next run, under the host lock and before
anything else, runs the post-scripts of a record it finds (after the same checks) and warns.
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from dataclasses import dataclass, field

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import (
    _consistency,
    _interrupted_run,
    _mounts,
    _prepost,
    _rcu_expedite,
    _settings,
    _status_document,
    _task_state,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._blob_rest import (
    BlobEndpoint,
    SnapshotResult,
    snapshot_status_for,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._guardian import Guardian
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._host_lock import HostLock
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._managed_disk import (
    ArmSettings,
    ManagedDiskEndpoint,
    ManagedDiskTarget,
    ManagedSnapshotResult,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._prepost_config import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_HOST_CONFIG_PATH,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._run_log import RunLog
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._sas import SasUri, redact
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._script_runner import (
    end_group,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
    describe,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._thaw_timer import ThawTimer

DEFAULT_LOG_DIR = "/var/log/azure/Microsoft.Azure.RecoveryServices.VMSnapshotLinux"
DEFAULT_STATE_DIR = "/var/lib/waagent/Microsoft.Azure.RecoveryServices.VMSnapshotLinux"
DEFAULT_MAX_FREEZE_SECONDS = 60
# The reference's HTTPS timeout for one snapshot call.
DEFAULT_SNAPSHOT_TIMEOUT = 10.0
STATUS_FILE_NAME = "last.status"
# The part of max_freeze_seconds the snapshot calls may use; the rest is the freeze and thaw.
SNAPSHOT_SHARE_OF_DEADLINE = 0.8
# Renewing the connections after the pre-script may use this part of max_freeze_seconds, so
# that renewal plus the frozen window hold the application no longer than max_freeze_seconds.
REFRESH_SHARE_OF_DEADLINE = 0.2
# A snapshot thread that has not returned this long after its deadline is given up on.
JOIN_GRACE_SECONDS = 0.5
# The status and log blobs written after the post-script share this many seconds (at most
# snapshot_timeout): with JOIN_GRACE_SECONDS and about 1 s for the process itself, the margin
# by which a run may pass max_freeze_seconds + the post-script's timeout, whatever the server.
REPORT_SECONDS = 4.0
EXTENSION_VERSION = "0.1.0"


@dataclass(frozen=True)
class SnapshotRequest:
    disks: list[SasUri]
    config_path: str = DEFAULT_CONFIG_PATH
    host_config_path: str = DEFAULT_HOST_CONFIG_PATH
    status_blob: SasUri | None = None
    logs_blob: SasUri | None = None
    task_id: str | None = None
    command_start_ticks: str | None = None
    backup_metadata: dict[str, str] = field(default_factory=dict)
    freeze_mounts: list[str] | None = None
    mounts_to_skip: list[str] = field(default_factory=list)
    max_freeze_seconds: int = DEFAULT_MAX_FREEZE_SECONDS
    snapshot_timeout: float = DEFAULT_SNAPSHOT_TIMEOUT
    crash_fallback_allowed: bool = False
    expedite_freeze: bool = True
    vm_type: str | None = None
    log_dir: str = DEFAULT_LOG_DIR
    state_dir: str = DEFAULT_STATE_DIR
    # Managed disks, snapshotted through Resource Manager beside the page blobs of `disks`.
    managed_disks: list[ManagedDiskTarget] = field(default_factory=list)
    arm: ArmSettings | None = None


class RunInterrupted(Exception):
    """Raised by the module's SIGINT/SIGTERM handler; the run finishes as for any failure."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"interrupted by {signal_name}")
        self.signal_name = signal_name


def _ms(start_ns: int, end_ns: int) -> float:
    return round((end_ns - start_ns) / 1e6, 3)


class SnapshotRun:
    """The state of one run; `run()` is the only entry point."""

    def __init__(self, request: SnapshotRequest, *, check_mode: bool = False) -> None:
        self.request = request
        self.check_mode = check_mode
        self.log = RunLog(None if check_mode else request.log_dir)
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []
        self.snapshots: list[SnapshotResult] = []
        self.thaw_report = None
        self.scripts: dict[str, object] = {}
        # How the freeze was done: expedited or why not, which thaw backstop was armed.
        self.freeze_facts: dict[str, object] = {}
        # The record of this run between its pre- and post-scripts, and how far it got.
        self._pending: _interrupted_run.PendingRun | None = None
        self._pre_attempted = False
        self._post_done = False

    def run(self) -> dict:
        request = self.request
        self.log.info(f"snapshot run of {len(request.disks)} disk(s), task {request.task_id}")
        if self.check_mode:
            return self._check()
        lock = HostLock(request.state_dir)
        lock.acquire()
        try:
            self._recover_interrupted_run()
            if request.task_id and _task_state.already_done(request.state_dir, request.task_id):
                return self._finish_early(
                    Status.SuccessAlreadyProcessedInput,
                    f"Task {request.task_id} was already processed on this host; "
                    "no snapshot was taken.",
                    changed=False,
                )
            if request.task_id:
                _task_state.record(request.state_dir, request.task_id)
            if _settings.command_too_late(request.command_start_ticks):
                return self._finish_early(
                    Status.FailedGuestAgentInvokedCommandTooLate,
                    "The snapshot command is more than 140 minutes old; no snapshot was taken.",
                )
            return self._run_locked()
        except VmSnapshotError:
            raise
        except Exception as exc:  # RunInterrupted included: a code, a status, never a traceback
            return self._unexpected(exc, None)
        finally:
            lock.release()

    def _note_script(self, pid: int, started: int) -> None:
        """Add a script process to the record, so a later run can end it if this run dies."""
        if self._pending is None:
            return
        self._pending.scripts.append([pid, started])
        # A state dir that cannot be written was already warned of by _record_pending_post.
        with contextlib.suppress(OSError):
            _interrupted_run.record(self.request.state_dir, self._pending)

    def _record_pending_post(self) -> None:
        request = self.request
        pending = _interrupted_run.PendingRun(
            os.getpid(), request.task_id, request.config_path, request.host_config_path
        )
        self._pending = pending
        try:
            _interrupted_run.record(request.state_dir, pending)
        except OSError as exc:  # the run goes on; only its recovery after a kill is lost
            self.warnings.append(
                f"Cannot record the run in {request.state_dir} ({exc.strerror}): if this run "
                "dies after its pre-script, the next run will not run the post-script for it."
            )

    def _end_earlier_scripts(self, pending: _interrupted_run.PendingRun) -> None:
        """End the script processes an interrupted run left running (before its post-scripts)."""
        for pid, started in pending.scripts:
            ended = end_group(pid, started)
            if ended:
                self.log.warning(ended)
                self.warnings.append(f"An earlier run's script was still running: {ended}.")

    def _recover_interrupted_run(self) -> None:
        """Run the post-scripts of an earlier run that stopped after its pre-script started."""
        state_dir = self.request.state_dir
        try:
            pending = _interrupted_run.load(state_dir)
        except ValueError as exc:
            message = (
                f"The record of an interrupted run in {state_dir} is unreadable ({exc}); "
                "it was removed and no post-script ran for it."
            )
        else:
            if pending is None:
                return
            self._end_earlier_scripts(pending)
            earlier = f"An earlier run (pid {pending.pid}, task {pending.task_id})"
            with _prepost.precheck(pending.config_path, pending.host_config_path) as precheck:
                if precheck.status == Status.success:
                    post = self._phase("recovered_post", _prepost.run_post, precheck)
                    message = (
                        f"{earlier} stopped after its pre-script started; its post-scripts ran "
                        f"now: {post.message}"
                    )
                else:
                    message = (
                        f"{earlier} stopped after its pre-script started; its post-scripts "
                        f"cannot run: {precheck.message}"
                    )
        self.log.warning(message)
        self.warnings.append(redact(message))
        _interrupted_run.clear(state_dir)

    def _check(self) -> dict:
        """Check mode: the prechecks only; nothing runs, nothing is frozen or taken."""
        if os.path.exists(_interrupted_run.pending_path(self.request.state_dir)):
            self.warnings.append(
                "An earlier run stopped after its pre-script started; the next run runs its "
                "post-scripts first."
            )
        precheck = _prepost.precheck(self.request.config_path, self.request.host_config_path)
        try:
            endpoints, failed = self._open_endpoints()
            for endpoint in endpoints:
                endpoint.close()
        finally:
            precheck.close()
        if failed:
            return self._result(snapshot_status_for(failed), "none", snapshots=failed)
        consistency = _consistency.predicted_consistency(precheck)
        return self._result(
            precheck.status, consistency, message=precheck.message, changed=consistency != "none"
        )

    def _run_locked(self) -> dict:
        request = self.request
        precheck = _prepost.precheck(request.config_path, request.host_config_path)
        self.warnings.extend(precheck.warnings)
        self.log.info(f"precheck: {precheck.status.name}: {precheck.message}")
        endpoints: list[BlobEndpoint] = []
        try:
            endpoints, failed_open = self._open_endpoints()
            if failed_open:
                # Fail before quiescing anything: a run that cannot snapshot every disk would
                # only hold the application for a recovery point that is an error anyway.
                for endpoint in endpoints:
                    endpoint.close()
                return self._report(
                    precheck, None, None, snapshot_status_for(failed_open), failed_open
                )
            # Before quiescing anything: a freeze_mounts entry that cannot be frozen is bad
            # input (123), not something to find out while the application is held.
            mount_points = self._mount_points(precheck.fs_freeze_enabled)
            pre = None
            if precheck.status == Status.success:
                self._record_pending_post()
                self._pre_attempted = True
                pre = self._phase("pre", _prepost.run_pre, precheck)
            pre_status = pre.status if pre else None
            snapshot_status = None
            if _consistency.snapshot_allowed(
                precheck.status,
                pre_status,
                precheck.continue_on_failure,
                precheck.fs_freeze_enabled,
            ):
                snapshot_status = self._freeze_and_snapshot(
                    endpoints,
                    mount_points,
                    precheck.fs_freeze_enabled,
                    app_quiesced=pre_status == Status.success,
                )
            else:
                self.log.warning("the failure policy skips the snapshot")
            post = None
            if precheck.status == Status.success:
                post = self._phase("post", _prepost.run_post, precheck)
                self._post_done = True
                _interrupted_run.clear(self.request.state_dir)
            snapshot_status = self._follow_up(endpoints, snapshot_status)
            return self._report(precheck, pre, post, snapshot_status, self.snapshots)
        except VmSnapshotError as exc:
            if not self._pre_attempted:
                raise  # nothing ran yet: the module reports the code, as for bad input
            return self._unexpected(exc, precheck)
        except Exception as exc:  # RunInterrupted included
            return self._unexpected(exc, precheck)
        finally:
            for endpoint in endpoints:
                endpoint.close()
            precheck.close()

    def _open_endpoints(self) -> tuple[list[BlobEndpoint], list[SnapshotResult]]:
        """Connect to every disk blob now, so nothing slow happens while frozen.

        Returns the open endpoints and, when any disk did not answer, a failed result for every
        disk in order (those that answered are marked as not attempted): the run then stops
        before quiescing anything, since its recovery point could only be a failure.
        """
        start = time.monotonic_ns()
        endpoints, outcomes = [], []
        timeout = min(self.request.snapshot_timeout, self.request.max_freeze_seconds / 2)
        # One deadline for every disk: many slow disks cannot add up their timeouts.
        deadline = time.monotonic() + timeout
        made = [BlobEndpoint(sas, timeout=timeout) for sas in self.request.disks]
        made += [
            ManagedDiskEndpoint(target, self.request.arm, timeout=timeout)
            for target in self.request.managed_disks
        ]
        for endpoint in made:
            try:
                endpoint.open(deadline=deadline)
                endpoints.append(endpoint)
                outcomes.append(None)
            except VmSnapshotError as exc:
                endpoint.close()
                self.log.error(f"disk {endpoint.sas.blob_url} does not answer: {exc.message}")
                outcomes.append(_failure(endpoint, exc))
        self.timings["connect_ms"] = _ms(start, time.monotonic_ns())
        if all(outcome is None for outcome in outcomes):
            return endpoints, []
        not_attempted = VmSnapshotError(
            Status.error_http_failure, "Not attempted: another disk of this run did not answer."
        )
        return endpoints, [
            outcome or _failure(endpoint, not_attempted)
            for endpoint, outcome in zip(made, outcomes)
        ]

    def _follow_up(self, endpoints: list, snapshot_status: Status | None) -> Status | None:
        """After the thaw and the post-script: follow each managed-disk snapshot's operation
        (the background copy) to its end, within snapshot_timeout; a failure found now fails
        that disk, and a code that came from the per-disk results is worked out again."""
        managed = [e for e in endpoints if isinstance(e, ManagedDiskEndpoint) and e.result]
        if not managed or snapshot_status is None:
            return snapshot_status
        start = time.monotonic_ns()
        derived = snapshot_status == snapshot_status_for(self.snapshots)
        deadline = time.monotonic() + self.request.snapshot_timeout
        for endpoint in managed:
            for index, result in enumerate(self.snapshots):
                if result is endpoint.result:
                    followed = self.snapshots[index] = endpoint.follow_up(deadline=deadline)
                    if not followed.ok:
                        self.log.error(f"disk {endpoint.sas.blob_url}: {followed.error}")
        self.timings["follow_up_ms"] = _ms(start, time.monotonic_ns())
        return snapshot_status_for(self.snapshots) if derived else snapshot_status

    def _phase(self, name: str, runner, precheck):
        start = time.monotonic_ns()
        result = runner(precheck, on_start=self._note_script)
        self.timings[f"{name}_ms"] = _ms(start, time.monotonic_ns())
        self.scripts[name] = result.as_dict()
        for warning in result.warnings:
            self.log.warning(warning)
            self.warnings.append(warning)
        self.log.info(f"{name}-script phase: {result.status.name}")
        # The scripts' own words (their last 400 characters), so that a script that wrote errors
        # but exited 0 shows in the log.
        for run in result.runs:
            script = run.result
            if script is not None and (script.stdout_tail or script.stderr_tail or not script.ok):
                self.log.info(
                    f"{name}-script {script.path}: exit code {script.exit_code}, "
                    f"stdout tail {script.stdout_tail[-400:]!r}, "
                    f"stderr tail {script.stderr_tail[-400:]!r}"
                )
        return result

    def _unexpected(self, exc: Exception, precheck) -> dict:
        """The second line of defence: whatever failed, the post-scripts of a run whose
        pre-scripts were attempted still run, the status is written and a code returned."""
        if isinstance(exc, VmSnapshotError):
            status, message = exc.status, exc.message
        elif isinstance(exc, RunInterrupted):
            status, message = Status.error, f"The run was interrupted by {exc.signal_name}."
        else:
            status = Status.error
            message = f"The run failed unexpectedly ({type(exc).__name__}: {str(exc)!a})."
        self.log.error(message)
        if self._pre_attempted and not self._post_done and precheck is not None:
            try:
                post = self._phase("post", _prepost.run_post, precheck)
                self._post_done = True
                _interrupted_run.clear(self.request.state_dir)
                message += f" The post-scripts ran: {post.message}"
            except Exception as again:  # the record stays: the next run runs them
                message += (
                    f" The post-scripts could not run ({type(again).__name__}); the next run "
                    "runs them first."
                )
        try:
            return self._result(
                status,
                "none",
                message=message,
                snapshots=self.snapshots,
                changed=any(s.ok for s in self.snapshots),
            )
        except Exception as again:
            return {
                "changed": any(s.ok for s in self.snapshots),
                "consistency": "none",
                "status_code": int(status),
                "status_name": status.name,
                "message": redact(
                    f"{message} The status could not be written ({type(again).__name__})."
                ),
                "warnings": self.warnings,
            }

    def _mount_points(self, freeze_enabled: bool) -> list[str]:
        if not freeze_enabled:
            return []
        return _mounts.freezable_mounts(
            _mounts.read_mountinfo(),
            skip=self.request.mounts_to_skip,
            only=self.request.freeze_mounts,
        )

    def _freeze_and_snapshot(
        self,
        endpoints: list[BlobEndpoint],
        mount_points: list[str],
        freeze_enabled: bool,
        *,
        app_quiesced: bool,
    ) -> Status:
        request = self.request
        if not mount_points:
            self.log.info("nothing to freeze" if freeze_enabled else "freeze disabled by config")
            level = "application" if app_quiesced else "crash"
            self._snapshot_all(endpoints, level)
            return snapshot_status_for(self.snapshots)

        if app_quiesced:
            self._refresh(endpoints)
        rcu = _rcu_expedite.prepare(request.expedite_freeze)
        # Armed before the freeze: a thaw that outlives the run's processes (systemd hosts).
        timer = ThawTimer(
            mount_points, request.max_freeze_seconds, rcu.earlier if rcu.fd >= 0 else None
        )
        timer.arm()
        self.freeze_facts.update(
            freeze_expedited=False,
            freeze_expedite_note=rcu.reason,
            thaw_backstop=timer.backstop,
            thaw_backstop_note=timer.reason,
        )
        guardian = Guardian(
            mount_points,
            request.max_freeze_seconds,
            rcu_fd=rcu.fd,
            rcu_earlier=rcu.earlier,
            marker=timer.marker,
        )
        try:
            guardian.start()
        except VmSnapshotError as exc:
            rcu.close()
            timer.cancel()
            self.log.error(f"cannot prepare the freeze: {exc.message}")
            return self._after_freeze_failure(endpoints, exc.status, app_quiesced)
        self.log.info(f"freezing {', '.join(mount_points)}")
        self.log.hold()
        # The snapshot calls, retry included, must end before the guardian's deadline.
        deadline = time.monotonic() + request.max_freeze_seconds * SNAPSHOT_SHARE_OF_DEADLINE
        try:
            try:
                guardian.freeze()
            except VmSnapshotError as exc:
                self.log.error(f"freeze failed: {exc.message}")
                report = guardian.thaw()
                if report.thaw_forced:  # e.g. a FIFREEZE that outlasted the deadline
                    self.thaw_report = report
                return self._after_freeze_failure(endpoints, exc.status, app_quiesced)
            level = "application" if app_quiesced else "filesystem"
            self._snapshot_all(endpoints, level, deadline)
            self.thaw_report = guardian.thaw()
        finally:
            guardian.close()
            self.log.release()
            rcu.close()
            timer.cancel()
        report = self.thaw_report
        self.timings.update(
            sync_ms=report.sync_ms,
            freeze_ms=report.freeze_ms,
            thaw_ms=report.thaw_ms,
            frozen_window_ms=report.frozen_window_ms,
        )
        self.freeze_facts["freeze_expedited"] = report.expedited
        self.log.info(
            f"thawed after {report.frozen_window_ms} ms (expedited: {report.expedited}, "
            f"backstop: {timer.backstop})"
        )
        for error in report.errors:
            self.log.warning(error)
        if report.thaw_forced:
            self.log.error(f"the guardian forced the thaw ({report.forced_reason})")
            # Snapshots taken after the forced thaw may not be consistent: the reference calls
            # this "Snapshots are inconsistent" and fails the run.
            return Status.error
        return snapshot_status_for(self.snapshots)

    def _refresh(self, endpoints: list[BlobEndpoint]) -> None:
        """Renew connections the service may have dropped while the pre-script ran, so the
        frozen window does not pay for a reconnect."""
        request = self.request
        deadline = time.monotonic() + min(
            request.snapshot_timeout, request.max_freeze_seconds * REFRESH_SHARE_OF_DEADLINE
        )
        for endpoint in endpoints:
            try:
                endpoint.open(deadline=deadline)
            except VmSnapshotError as exc:
                self.log.warning(
                    f"disk {endpoint.sas.blob_url} did not answer again: {exc.message}"
                )

    def _after_freeze_failure(
        self, endpoints: list[BlobEndpoint], status: Status, app_quiesced: bool
    ) -> Status:
        if not self.request.crash_fallback_allowed:
            return status
        # The reference's single-disk crash-consistent fallback (docs/reference-behaviour.md §6).
        self.log.warning("taking a crash-consistent snapshot despite the freeze failure")
        self._snapshot_all(endpoints, "crash")
        return status

    def _snapshot_all(
        self, endpoints: list[BlobEndpoint], level: str, deadline: float | None = None
    ) -> None:
        """One thread per disk, every call ending by one deadline (`deadline`, else the share of
        max_freeze_seconds or snapshot_timeout, whichever is shorter).

        A thread still running shortly after the deadline is given up on: its socket is shut
        down under it (a daemon thread, it cannot hold the process) and its disk fails.
        """
        request = self.request
        if deadline is None:
            deadline = time.monotonic() + min(
                request.snapshot_timeout, request.max_freeze_seconds * SNAPSHOT_SHARE_OF_DEADLINE
            )
        metadata = dict(request.backup_metadata)
        metadata.update(
            {_consistency.STAMP_LEVEL_KEY: level, _consistency.STAMP_HOST_KEY: platform.node()}
        )
        results: list[SnapshotResult | None] = [None] * len(endpoints)

        def take(index: int) -> None:
            results[index] = endpoints[index].create_snapshot(metadata, deadline=deadline)

        start = time.monotonic_ns()
        threads = [
            threading.Thread(target=take, args=(i,), daemon=True) for i in range(len(endpoints))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()) + JOIN_GRACE_SECONDS)
        for index, thread in enumerate(threads):
            if thread.is_alive() or results[index] is None:
                endpoints[index].abort()
                results[index] = SnapshotResult.failure(
                    endpoints[index].sas.blob_url,
                    VmSnapshotError(
                        Status.error_http_failure,
                        "no response: the snapshot call did not return by its deadline",
                    ),
                )
        self.timings["snapshot_ms"] = _ms(start, time.monotonic_ns())
        self.snapshots = list(results)

    def _report(self, precheck, pre, post, snapshot_status, snapshots) -> dict:
        outcome = _consistency.final_outcome(
            precheck_status=precheck.status,
            pre_status=pre.status if pre else None,
            post_status=post.status if post else None,
            continue_on_failure=precheck.continue_on_failure,
            fs_freeze_enabled=precheck.fs_freeze_enabled,
            snapshot_status=snapshot_status,
            snapshots_ok=sum(1 for s in snapshots if s.ok),
            snapshots_total=len(self.request.disks) + len(self.request.managed_disks),
            crash_fallback_allowed=self.request.crash_fallback_allowed,
        )
        self.log.info(f"result: {outcome.status.name}, {outcome.consistency}: {outcome.message}")
        return self._result(
            outcome.status,
            outcome.consistency,
            message=outcome.message,
            health_status=outcome.health_status,
            snapshots=snapshots,
            changed=any(s.ok for s in snapshots),
        )

    def _finish_early(self, status: Status, message: str, *, changed: bool = False) -> dict:
        self.log.info(message)
        return self._result(status, "none", message=message, changed=changed)

    def _result(
        self,
        status: Status,
        consistency: str,
        *,
        message: str = "",
        health_status: Status | None = None,
        snapshots: list[SnapshotResult] | None = None,
        changed: bool = False,
    ) -> dict:
        snapshots = snapshots or []
        message = redact(message or describe(status).message)
        result = {
            "changed": changed,
            "consistency": consistency,
            "status_code": int(status),
            "status_name": status.name,
            "message": message,
            "snapshots": [s.as_dict() for s in snapshots],
            "frozen_mounts": self.thaw_report.frozen_mounts if self.thaw_report else [],
            "thaw_forced": bool(self.thaw_report and self.thaw_report.thaw_forced),
            "forced_reason": self.thaw_report.forced_reason if self.thaw_report else None,
            **self.freeze_facts,
            "timings": self.timings,
            "scripts": self.scripts,
        }
        if not self.check_mode:
            result["status_file"] = self._write_status(
                status, consistency, message, health_status or status, snapshots
            )
            self._commit_log()
            if self.log.write_error:
                self.warnings.append(self.log.write_error)
        result["warnings"] = self.warnings
        return result

    def _write_status(self, status, consistency, message, health_status, snapshots) -> str:
        request = self.request
        document = _status_document.build_status_document(
            task_id=request.task_id,
            status=status,
            status_text="success"
            if status in (Status.success_appconsistent, Status.success)
            else "error",
            message=message,
            consistency=consistency,
            snapshots=[s.snapshot_info() for s in snapshots],
            health_status=health_status,
            command_start_ticks=request.command_start_ticks,
            telemetry={
                "FreezeTime": self.timings.get("freeze_ms"),
                "ThawTime": self.timings.get("thaw_ms"),
                "snapshotTimeTaken": self.timings.get("snapshot_ms"),
                "frozenWindowMs": self.timings.get("frozen_window_ms"),
                "consistencyType": consistency,
            },
            unique_machine_id=platform.node(),
            extension_version=EXTENSION_VERSION,
        )
        path = os.path.join(request.state_dir, "status", STATUS_FILE_NAME)
        _status_document.write_status_file(
            path, _status_document.local_status_document(document, vm_type=request.vm_type)
        )
        if request.status_blob:
            data = _status_document.dumps_status_document(document).encode()
            self._upload(request.status_blob, data, "status", "application/json")
        return path

    def _commit_log(self) -> None:
        self.log.flush()
        if self.request.logs_blob:
            self._upload(self.request.logs_blob, self.log.text().encode(), "log", "text/plain")

    def _upload(self, sas: SasUri, data: bytes, what: str, content_type: str) -> None:
        """Write a report blob; the status and the log blob share one deadline."""
        timeout = min(self.request.snapshot_timeout, REPORT_SECONDS)
        deadline = getattr(self, "_report_deadline", None)
        if deadline is None:
            deadline = self._report_deadline = time.monotonic() + timeout
        endpoint = BlobEndpoint(sas, timeout=timeout)
        try:
            endpoint.put_block_blob(data, content_type, deadline=deadline)
        except VmSnapshotError as exc:
            self.warnings.append(f"The {what} blob could not be written: {exc.message}")
        finally:
            endpoint.close()


def _failure(endpoint, exc: VmSnapshotError):
    """A disk's failed result before its snapshot call, of the endpoint's kind."""
    if isinstance(endpoint, ManagedDiskEndpoint):
        return ManagedSnapshotResult.failure(endpoint.target.disk_id, exc)
    return SnapshotResult.failure(endpoint.sas.blob_url, exc)


def run_snapshot(request: SnapshotRequest, *, check_mode: bool = False) -> dict:
    return SnapshotRun(request, check_mode=check_mode).run()
