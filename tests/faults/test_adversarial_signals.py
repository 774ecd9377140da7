"""Signals other than SIGINT and SIGTERM: SIGHUP, SIGQUIT, SIGUSR1, SIGALRM to the module.

Each ends a Python process by default, so the module died where it stood: the guardian thawed,
but the post-script never ran and the application stayed quiesced until the *next* run (a
terminal closed under an interactive `ansible-playbook`, a `kill -HUP` meant for a daemon).
Every signal whose default is to end the process must be handled like SIGTERM: the run stops
where it is and finishes (thaw, post-script, status), with a JSON result.
"""

from __future__ import annotations

import signal
import time

import pytest
from fault_support import ModuleProcess, snapshot_args, wait_for
from test_interrupts import PAIR, finished_properly

from harness.faultproxy import Rule, is_snapshot

DEADLINE = 3
SIGNALS = [signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGALRM]


@pytest.mark.parametrize("signum", SIGNALS, ids=[s.name for s in SIGNALS])
def test_another_signal_while_frozen(
    figures, make_app, meter, proxy, proxied_disks, loop_ext4, run_dirs, tmp_path, signum
):
    scenario = figures.scenario(
        "other-signals", "kill", "SIGHUP, SIGQUIT, SIGUSR1, SIGALRM to the module",
        deadline=DEADLINE,
    )  # fmt: skip
    proxy.rules[:] = [Rule(is_snapshot, delay=1.5)]
    app = make_app("app")
    args = snapshot_args(proxied_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
    with scenario.case(f"{signum.name} while frozen") as case:
        run = ModuleProcess(args, tmp_path)
        case.check(wait_for(lambda: app.count("pre-end") == 1, 30), "no pre-script")
        case.check(wait_for(lambda: meter.blocked_for() > 0, 10), "never frozen")
        time.sleep(0.3)
        run.process.send_signal(signum)
        result = run.finish()
        finished_properly(case, meter, app, run, result, run_dirs)
        case.check(app.entries() == PAIR, f"journal: {app.entries()}")


@pytest.mark.parametrize("signum", SIGNALS, ids=[s.name for s in SIGNALS])
def test_another_signal_in_the_pre_script(
    figures, make_app, meter, blob_disks, loop_ext4, run_dirs, tmp_path, signum
):
    scenario = figures.scenario(
        "other-signals", "kill", "SIGHUP, SIGQUIT, SIGUSR1, SIGALRM to the module",
        deadline=DEADLINE,
    )  # fmt: skip
    app = make_app("app", pre_extra="sleep 1.5")
    args = snapshot_args(blob_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
    with scenario.case(f"{signum.name} in the pre-script") as case:
        run = ModuleProcess(args, tmp_path)
        case.check(wait_for(lambda: app.count("pre-start") == 1, 30), "no pre-script")
        time.sleep(0.5)
        run.process.send_signal(signum)
        result = run.finish()
        finished_properly(case, meter, app, run, result, run_dirs)
        case.check(app.count("post-end") == 1, f"journal: {app.entries()}")


HELPER_STOPPED_BY_SIGTERM = 'sleep 30 & helper=$!; sleep 0.2; kill "$helper"; wait "$helper"'


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_post_script_after_a_signal_gets_default_signal_handling(
    figures, make_app, meter, proxy, proxied_disks, loop_ext4, run_dirs, tmp_path, signum
):
    """The module ignores a second SIGINT/SIGTERM while it finishes; its post-script must not
    inherit that: a helper it stops with `kill` (SIGTERM) must stop, not hold the post-script
    until its own timeout kills it."""
    scenario = figures.scenario(
        "other-signals", "kill", "SIGHUP, SIGQUIT, SIGUSR1, SIGALRM to the module",
        deadline=DEADLINE,
    )  # fmt: skip
    proxy.rules[:] = [Rule(is_snapshot, delay=1.5)]
    app = make_app("app", post_extra=HELPER_STOPPED_BY_SIGTERM, timeout=20)
    args = snapshot_args(proxied_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
    with scenario.case(f"{signum.name}, then a post-script that relies on SIGTERM") as case:
        run = ModuleProcess(args, tmp_path)
        case.check(wait_for(lambda: app.count("pre-end") == 1, 30), "no pre-script")
        case.check(wait_for(lambda: meter.blocked_for() > 0, 10), "never frozen")
        signalled = time.monotonic()
        run.process.send_signal(signum)
        result = run.finish()
        took = time.monotonic() - signalled
        finished_properly(case, meter, app, run, result, run_dirs)
        case.check(app.entries() == PAIR, f"journal: {app.entries()}")
        case.check(took < DEADLINE + 8, f"returned {took:.1f} s after the signal")


def _is_status_put(method: str, target: str) -> bool:
    return method == "PUT" and "comp=snapshot" not in target


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", ["connect", "status blob"])
def test_a_signal_outside_the_scripts(
    figures, make_app, meter, proxy, proxied_disks, azurite, loop_ext4, run_dirs, tmp_path,
    phase, signum,
):  # fmt: skip
    """SIGINT/SIGTERM while the run connects (a slow properties call, before any script) or
    writes the status blob (after the post-script): a JSON result, nothing left quiesced."""
    scenario = figures.scenario(
        "other-signals", "kill", "SIGHUP, SIGQUIT, SIGUSR1, SIGALRM to the module",
        deadline=DEADLINE,
    )  # fmt: skip
    app = make_app("app")
    if phase == "connect":
        proxy.rules[:] = [Rule(lambda method, target: method == "HEAD", delay=3.0)]
        status_uri = azurite.status_blob_sas(container=azurite.create_container())
    else:
        proxy.rules[:] = [Rule(_is_status_put, delay=3.0)]
        status_uri = proxy.url_for(azurite.status_blob_sas(container=azurite.create_container()))
    args = snapshot_args(
        proxied_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE,
        status_blob_uri=status_uri, snapshot_timeout=5.0,
    )  # fmt: skip
    with scenario.case(f"{signum.name} at the {phase}") as case:
        run = ModuleProcess(args, tmp_path)
        if phase == "connect":
            case.check(
                wait_for(lambda: any(m == "HEAD" for m, _t, _s in proxy.seen), 30), "no HEAD"
            )
        else:
            case.check(wait_for(lambda: app.count("post-end") == 1, 30), "no post-script")
            case.check(
                wait_for(lambda: any(_is_status_put(m, t) for m, t, _s in proxy.seen), 30),
                "no status blob write",
            )
        time.sleep(0.3)
        run.process.send_signal(signum)
        result = run.finish()
        finished_properly(case, meter, app, run, result, run_dirs, post_expected=phase != "connect")
        expected = [] if phase == "connect" else PAIR
        case.check(app.entries() == expected, f"journal: {app.entries()}")
