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
from collections.abc import Callable
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
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._consistency import (
    APPLICATION,
    CRASH,
    FILESYSTEM,
    NONE,
    Outcome,
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
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._run_result import (
    PhaseRun,
    RunFacts,
    Taken,
    build_result,
    status_document,
    unpublished_result,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._sas import SasUri, redact
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._script_runner import (
    end_group,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
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


class RunInterrupted(BaseException):
    """Raised by the module's handler of a stopping signal; the run finishes as for any failure.

    A BaseException, like KeyboardInterrupt: raised at whatever bytecode the signal finds, it must
    pass every ``except Exception`` on its way up (``threading.Thread.start()`` would take it for
    a failed start and undo a thread that runs) until the run's own handlers below."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"interrupted by {signal_name}")
        self.signal_name = signal_name


def _ms(start_ns: int, end_ns: int) -> float:
    return round((end_ns - start_ns) / 1e6, 3)


@dataclass(frozen=True)
class Connections:
    """Every disk's endpoint, opened before anything is quiesced."""

    endpoints: list[BlobEndpoint | ManagedDiskEndpoint]
    # When any disk did not answer, a failed result for every disk in order; else empty.
    failed: list[SnapshotResult | ManagedSnapshotResult]
    ms: float


class SnapshotRun:
    """The state of one run; `run()` is the only entry point.

    Steps return what they did and the orchestration (`run`, `_check`, `_run_locked`,
    `_recover_interrupted_run`, `_unexpected`) records it in `self.facts`; only the freeze step
    and the managed-disk follow-up record as they go (see there why). Every result is built from
    those facts by `_result()`, and `_publish()` is the one place that writes the outcome: the
    status file, the status and log blobs, extension.log.
    """

    def __init__(self, request: SnapshotRequest, *, check_mode: bool = False) -> None:
        self.request = request
        self.check_mode = check_mode
        self.log = RunLog(None if check_mode else request.log_dir)
        self.facts = RunFacts()
        # The record of this run between its pre- and post-scripts, and how far it got.
        self._pending: _interrupted_run.PendingRun | None = None
        self._pre_attempted = False
        self._post_done = False
        # The status and the log blob share one deadline, set by the first upload; a run that
        # publishes again (interrupted while publishing) gets no new one.
        self._report_deadline: float | None = None

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
        except (Exception, RunInterrupted) as exc:  # a code, a status, never a traceback
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

    def _record_pending_post(self) -> str | None:
        """Record the run before its pre-script; a warning when the record cannot be written."""
        request = self.request
        pending = _interrupted_run.PendingRun(
            os.getpid(), request.task_id, request.config_path, request.host_config_path
        )
        self._pending = pending
        try:
            _interrupted_run.record(request.state_dir, pending)
        except OSError as exc:  # the run goes on; only its recovery after a kill is lost
            return (
                f"Cannot record the run in {request.state_dir} ({exc.strerror}): if this run "
                "dies after its pre-script, the next run will not run the post-script for it."
            )
        return None

    def _end_earlier_scripts(self, pending: _interrupted_run.PendingRun) -> list[str]:
        """End the script processes an interrupted run left running (before its post-scripts);
        a warning for each."""
        warnings = []
        for pid, started in pending.scripts:
            ended = end_group(pid, started)
            if ended:
                self.log.warning(ended)
                warnings.append(f"An earlier run's script was still running: {ended}.")
        return warnings

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
            self.facts.warnings.extend(self._end_earlier_scripts(pending))
            earlier = f"An earlier run (pid {pending.pid}, task {pending.task_id})"
            with _prepost.precheck(pending.config_path, pending.host_config_path) as precheck:
                if precheck.status == Status.success:
                    post = self._phase("recovered_post", _prepost.run_post, precheck)
                    self.facts.add_phase(post)
                    message = (
                        f"{earlier} stopped after its pre-script started; its post-scripts ran "
                        f"now: {post.result.message}"
                    )
                else:
                    message = (
                        f"{earlier} stopped after its pre-script started; its post-scripts "
                        f"cannot run: {precheck.message}"
                    )
        self.log.warning(message)
        self.facts.warnings.append(redact(message))
        _interrupted_run.clear(state_dir)

    def _check(self) -> dict:
        """Check mode: the prechecks only; nothing runs, nothing is frozen, taken or written."""
        facts = self.facts
        if os.path.exists(_interrupted_run.pending_path(self.request.state_dir)):
            facts.warnings.append(
                "An earlier run stopped after its pre-script started; the next run runs its "
                "post-scripts first."
            )
        precheck = _prepost.precheck(self.request.config_path, self.request.host_config_path)
        facts.warnings.extend(precheck.warnings)
        try:
            connections = self._open_endpoints()
            for endpoint in connections.endpoints:
                endpoint.close()
        finally:
            precheck.close()
        facts.timings["connect_ms"] = connections.ms
        if connections.failed:
            facts.snapshots = connections.failed
            status = snapshot_status_for(connections.failed)
            return self._result(Outcome(status, NONE, status, ""))
        consistency = _consistency.predicted_consistency(precheck)
        return self._result(
            Outcome(precheck.status, consistency, precheck.status, precheck.message)
        )

    def _run_locked(self) -> dict:
        request, facts = self.request, self.facts
        precheck = _prepost.precheck(request.config_path, request.host_config_path)
        facts.warnings.extend(precheck.warnings)
        self.log.info(f"precheck: {precheck.status.name}: {precheck.message}")
        endpoints: list[BlobEndpoint | ManagedDiskEndpoint] = []
        try:
            connections = self._open_endpoints()
            endpoints = connections.endpoints
            facts.timings["connect_ms"] = connections.ms
            if connections.failed:
                # Fail before quiescing anything: a run that cannot snapshot every disk would
                # only hold the application for a recovery point that is an error anyway.
                for endpoint in endpoints:
                    endpoint.close()
                facts.snapshots = connections.failed
                outcome = self._decide(
                    precheck, None, None, snapshot_status_for(connections.failed)
                )
                return self._result(outcome, self._publish(outcome))
            # Before quiescing anything: a freeze_mounts entry that cannot be frozen is bad
            # input (123), not something to find out while the application is held.
            mount_points = self._mount_points(precheck.fs_freeze_enabled)
            pre = None
            if precheck.status == Status.success:
                warning = self._record_pending_post()
                if warning:
                    facts.warnings.append(warning)
                self._pre_attempted = True
                pre = self._phase("pre", _prepost.run_pre, precheck)
                facts.add_phase(pre)
            pre_status = pre.result.status if pre else None
            # Quiesced from here until the post-script: the flush, the freeze and the snapshot
            # calls all end within max_freeze_seconds of this moment (invariant 1).
            release_by_ns = (
                time.monotonic_ns() + int(self.request.max_freeze_seconds * 1e9)
                if pre_status == Status.success
                else 0
            )
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
                    release_by_ns=release_by_ns,
                    facts=facts,
                )
            else:
                self.log.warning("the failure policy skips the snapshot")
            post = None
            if precheck.status == Status.success:
                post = self._phase("post", _prepost.run_post, precheck)
                self._post_done = True
                facts.add_phase(post)
                _interrupted_run.clear(self.request.state_dir)
            snapshot_status = self._follow_up(endpoints, snapshot_status, facts=facts)
            outcome = self._decide(precheck, pre, post, snapshot_status)
            return self._result(outcome, self._publish(outcome))
        except VmSnapshotError as exc:
            if not self._pre_attempted:
                raise  # nothing ran yet: the module reports the code, as for bad input
            return self._unexpected(exc, precheck)
        except (Exception, RunInterrupted) as exc:
            return self._unexpected(exc, precheck)
        finally:
            for endpoint in endpoints:
                endpoint.close()
            precheck.close()

    def _open_endpoints(self) -> Connections:
        """Connect to every disk blob now, so nothing slow happens while frozen.

        When any disk did not answer, `failed` holds a failed result for every disk in order
        (those that answered are marked as not attempted): the run then stops before quiescing
        anything, since its recovery point could only be a failure.
        """
        start = time.monotonic_ns()
        endpoints: list[BlobEndpoint | ManagedDiskEndpoint] = []
        outcomes: list[SnapshotResult | ManagedSnapshotResult | None] = []
        timeout = min(self.request.snapshot_timeout, self.request.max_freeze_seconds / 2)
        # One deadline for every disk: many slow disks cannot add up their timeouts.
        deadline = time.monotonic() + timeout
        made: list[BlobEndpoint | ManagedDiskEndpoint] = [
            BlobEndpoint(sas, timeout=timeout) for sas in self.request.disks
        ]
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
        ms = _ms(start, time.monotonic_ns())
        if all(outcome is None for outcome in outcomes):
            return Connections(endpoints, [], ms)
        not_attempted = VmSnapshotError(
            Status.error_http_failure, "Not attempted: another disk of this run did not answer."
        )
        failed = [
            outcome or _failure(endpoint, not_attempted)
            for endpoint, outcome in zip(made, outcomes)
        ]
        return Connections(endpoints, failed, ms)

    def _follow_up(
        self,
        endpoints: list[BlobEndpoint | ManagedDiskEndpoint],
        snapshot_status: Status | None,
        *,
        facts: RunFacts,
    ) -> Status | None:
        """After the thaw and the post-script: follow each managed-disk snapshot's operation
        (the background copy) to its end, within snapshot_timeout; a failure found now fails
        that disk, and a code that came from the per-disk results is worked out again.

        Each disk's result is replaced in `facts` as it is followed, so that a run interrupted
        in the follow-up still reports what was found."""
        managed = [e for e in endpoints if isinstance(e, ManagedDiskEndpoint) and e.result]
        if not managed or snapshot_status is None:
            return snapshot_status
        start = time.monotonic_ns()
        snapshots = facts.snapshots
        derived = snapshot_status == snapshot_status_for(snapshots)
        deadline = time.monotonic() + self.request.snapshot_timeout
        for endpoint in managed:
            for index, result in enumerate(snapshots):
                if result is endpoint.result:
                    followed = snapshots[index] = endpoint.follow_up(deadline=deadline)
                    if not followed.ok:
                        self.log.error(f"disk {endpoint.sas.blob_url}: {followed.error}")
        facts.timings["follow_up_ms"] = _ms(start, time.monotonic_ns())
        return snapshot_status_for(snapshots) if derived else snapshot_status

    def _phase(
        self, name: str, runner: Callable[..., _prepost.PhaseResult], precheck: _prepost.Precheck
    ) -> PhaseRun:
        start = time.monotonic_ns()
        result = runner(precheck, on_start=self._note_script)
        ms = _ms(start, time.monotonic_ns())
        for warning in result.warnings:
            self.log.warning(warning)
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
        return PhaseRun(name, result, ms)

    def _unexpected(
        self, exc: Exception | RunInterrupted, precheck: _prepost.Precheck | None
    ) -> dict:
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
                self.facts.add_phase(post)
                _interrupted_run.clear(self.request.state_dir)
                message += f" The post-scripts ran: {post.result.message}"
            except Exception as again:  # the record stays: the next run runs them
                message += (
                    f" The post-scripts could not run ({type(again).__name__}); the next run "
                    "runs them first."
                )
        outcome = Outcome(status, NONE, status, message)
        try:
            return self._result(outcome, self._publish(outcome))
        except Exception as again:
            return unpublished_result(outcome, self.facts, again)

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
        endpoints: list[BlobEndpoint | ManagedDiskEndpoint],
        mount_points: list[str],
        freeze_enabled: bool,
        *,
        release_by_ns: int,
        facts: RunFacts,
    ) -> Status:
        """Freeze, snapshot every disk, thaw; the snapshot code. `release_by_ns`: when the
        application that the pre-script quiesced must be released (0: none was).

        Records in `facts` as it goes rather than on return: a signal or a failure while frozen
        ends the run from inside this step, and its result must still tell what was armed,
        taken and thawed.
        """
        request = self.request
        if not mount_points:
            self.log.info("nothing to freeze" if freeze_enabled else "freeze disabled by config")
            facts.add_taken(self._snapshot_all(endpoints, APPLICATION if release_by_ns else CRASH))
            return snapshot_status_for(facts.snapshots)

        rcu = _rcu_expedite.prepare(request.expedite_freeze)
        # A thaw that outlives the run's processes (systemd hosts), armed below.
        timer = ThawTimer(
            mount_points, request.max_freeze_seconds, rcu.earlier if rcu.fd >= 0 else None
        )
        facts.freeze.update(
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
            marker=timer.marker_path,
            release_by_ns=release_by_ns,
        )
        try:
            guardian.start()  # forks the guardian, then flushes the mounts (seconds on a slow disk)
        except VmSnapshotError as exc:
            rcu.close()
            facts.timings["sync_ms"] = guardian.thaw().sync_ms  # a refused flush: how long it ran
            self.log.error(f"cannot prepare the freeze: {exc.message}")
            facts.freeze_failure = exc.message
            return self._after_freeze_failure(endpoints, exc.status, facts=facts)
        try:
            self._refresh(endpoints)
            # Armed after the flush, right before the freeze: the timer counts from here, and one
            # armed before a long flush would thaw this freeze early.
            timer.arm()
            facts.freeze.update(thaw_backstop=timer.backstop, thaw_backstop_note=timer.reason)
            self.log.info(f"freezing {', '.join(mount_points)}")
            self.log.hold()
            # The snapshot calls, retry included, must end before the guardian's deadline, which
            # comes earlier when the quiesced application's time is running out.
            now_ns = time.monotonic_ns()
            budget = max(0, guardian.deadline_ns(now_ns) - now_ns) / 1e9
            deadline = time.monotonic() + budget * SNAPSHOT_SHARE_OF_DEADLINE
            try:
                guardian.freeze()
            except VmSnapshotError as exc:
                self.log.error(f"freeze failed: {exc.message}")
                facts.freeze_failure = exc.message
                report = guardian.thaw()
                if report.thaw_forced:  # e.g. a FIFREEZE that outlasted the deadline
                    facts.thaw = report
                return self._after_freeze_failure(endpoints, exc.status, facts=facts)
            level = APPLICATION if release_by_ns else FILESYSTEM
            facts.add_taken(self._snapshot_all(endpoints, level, deadline))
            facts.thaw = guardian.thaw()
        finally:
            guardian.close()
            self.log.release()
            rcu.close()
            timer.cancel()
        report = facts.thaw
        facts.timings.update(
            sync_ms=report.sync_ms,
            freeze_ms=report.freeze_ms,
            thaw_ms=report.thaw_ms,
            frozen_window_ms=report.frozen_window_ms,
        )
        facts.freeze["freeze_expedited"] = report.expedited
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
        return snapshot_status_for(facts.snapshots)

    def _refresh(self, endpoints: list[BlobEndpoint | ManagedDiskEndpoint]) -> None:
        """Renew connections the service may have dropped while the scripts and the flush ran,
        so the frozen window does not pay for a reconnect.

        Made right before the freeze, after the guardian's fork and the flush: the first
        requests after a pause or a fork are the slow ones (the server's first work since then,
        this process's copy-on-write faults), and these are not inside the window (bench README,
        "The calls inside the window").
        """
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
        self,
        endpoints: list[BlobEndpoint | ManagedDiskEndpoint],
        status: Status,
        *,
        facts: RunFacts,
    ) -> Status:
        if self.request.crash_fallback_allowed:
            # The reference's single-disk crash-consistent fallback (docs/reference-behaviour.md
            # §6).
            self.log.warning("taking a crash-consistent snapshot despite the freeze failure")
            facts.add_taken(self._snapshot_all(endpoints, CRASH))
        return status

    def _snapshot_all(
        self,
        endpoints: list[BlobEndpoint | ManagedDiskEndpoint],
        level: str,
        deadline: float | None = None,
    ) -> Taken:
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
        results: list[SnapshotResult | ManagedSnapshotResult | None] = [None] * len(endpoints)

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
        return Taken(list(results), _ms(start, time.monotonic_ns()))

    def _decide(
        self,
        precheck: _prepost.Precheck,
        pre: PhaseRun | None,
        post: PhaseRun | None,
        snapshot_status: Status | None,
    ) -> Outcome:
        """The run's outcome by the reference's failure table."""
        snapshots = self.facts.snapshots
        outcome = _consistency.final_outcome(
            precheck_status=precheck.status,
            pre_status=pre.result.status if pre else None,
            post_status=post.result.status if post else None,
            continue_on_failure=precheck.continue_on_failure,
            fs_freeze_enabled=precheck.fs_freeze_enabled,
            snapshot_status=snapshot_status,
            snapshots_ok=sum(1 for s in snapshots if s.ok),
            snapshots_total=len(self.request.disks) + len(self.request.managed_disks),
            crash_fallback_allowed=self.request.crash_fallback_allowed,
            freeze_failure=self.facts.freeze_failure,
        )
        self.log.info(f"result: {outcome.status.name}, {outcome.consistency}: {outcome.message}")
        return outcome

    def _finish_early(self, status: Status, message: str) -> dict:
        """An end before anything ran (a task already done, a command too old)."""
        self.log.info(message)
        outcome = Outcome(status, NONE, status, message)
        return self._result(outcome, self._publish(outcome))

    def _result(self, outcome: Outcome, status_file: str | None = None) -> dict:
        """Every result of the run, from its facts; no I/O (`_publish` writes before this)."""
        return build_result(
            outcome, self.facts, check_mode=self.check_mode, status_file=status_file
        )

    def _publish(self, outcome: Outcome) -> str:
        """Write the outcome: the status file, the status blob, extension.log and the log blob.

        Returns the status file's path. A blob or log that cannot be written is a warning.
        """
        request, facts = self.request, self.facts
        document = status_document(
            outcome,
            facts,
            task_id=request.task_id,
            command_start_ticks=request.command_start_ticks,
        )
        path = os.path.join(request.state_dir, "status", STATUS_FILE_NAME)
        _status_document.write_status_file(
            path, _status_document.local_status_document(document, vm_type=request.vm_type)
        )
        if request.status_blob:
            data = _status_document.dumps_status_document(document).encode()
            warning = self._upload(request.status_blob, data, "status", "application/json")
            if warning:
                facts.warnings.append(warning)
        self.log.flush()
        if request.logs_blob:
            warning = self._upload(request.logs_blob, self.log.text().encode(), "log", "text/plain")
            if warning:
                facts.warnings.append(warning)
        if self.log.write_error:
            facts.warnings.append(self.log.write_error)
        return path

    def _upload(self, sas: SasUri, data: bytes, what: str, content_type: str) -> str | None:
        """Write a report blob by the deadline the status and the log blob share; a warning
        when it could not be written."""
        timeout = min(self.request.snapshot_timeout, REPORT_SECONDS)
        if self._report_deadline is None:
            self._report_deadline = time.monotonic() + timeout
        endpoint = BlobEndpoint(sas, timeout=timeout)
        try:
            endpoint.put_block_blob(data, content_type, deadline=self._report_deadline)
        except VmSnapshotError as exc:
            return f"The {what} blob could not be written: {exc.message}"
        finally:
            endpoint.close()
        return None


def _failure(
    endpoint: BlobEndpoint | ManagedDiskEndpoint, exc: VmSnapshotError
) -> SnapshotResult | ManagedSnapshotResult:
    """A disk's failed result before its snapshot call, of the endpoint's kind."""
    if isinstance(endpoint, ManagedDiskEndpoint):
        return ManagedSnapshotResult.failure(endpoint.target.disk_id, exc)
    return SnapshotResult.failure(endpoint.sas.blob_url, exc)


def run_snapshot(request: SnapshotRequest, *, check_mode: bool = False) -> dict:
    return SnapshotRun(request, check_mode=check_mode).run()
