"""The file that was checked is the file that runs, on a filesystem that enforces ownership.

* A pre-script that loosens the post-script's mode and appends a line to it, or a change made
  from outside at varied moments between the check and the post-script: the appended line
  never runs (the checked bytes run from a sealed memfd), a warning says the file changed,
  and the application is released.
* A FUSE filesystem (bindfs) that claims root:root 0700 for files another user owns: scripts
  and the configuration there are refused with the permission code; nothing runs.
* ``link/../x`` names the ``x`` beside the link's target, as the kernel resolves it, never the
  ``x`` that a textual normalisation would pick.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time

import pytest
from fault_support import ModuleProcess, run_module_process, snapshot_args, summary, wait_for

DEADLINE = 3
BOUND = DEADLINE + 1.0
PAIR = ["pre-start", "pre-end", "post-start", "post-end"]
FOREIGN_UID = 4242
APPEND = '\necho "TAMPERED $(id -u)" >> "$dir/journal"\n'


def released(case, meter, app, run, result) -> None:
    case.module_output(run)
    case.frozen(meter, run.started, BOUND)
    case.check(app.lock_free(), "the application's lock is held")
    case.check(meter.writable_after(time.monotonic(), 2.0), "the filesystem is not writable")


def test_a_pre_script_that_tampers_with_the_post_script(
    figures, make_app, meter, blob_disks, loop_ext4, run_dirs, tmp_path
):
    scenario = figures.scenario(
        "checked-file-runs", "scripts", "a script changed after the check", deadline=DEADLINE
    )
    tamper = (
        f"chmod 0777 \"$dir/post-script.sh\"\nprintf '%s' '{APPEND}' >> \"$dir/post-script.sh\""
    )
    app = make_app(pre_extra=tamper)
    args = snapshot_args(blob_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
    with scenario.case("chmod 0777 and append, from the pre-script") as case:
        result, run = run_module_process(args, tmp_path)
        released(case, meter, app, run, result)
        case.check("TAMPERED" in app.post.read_text(), "the test did not tamper")
        case.check(app.entries() == PAIR, f"the appended line ran: {app.entries()}")
        warnings = " ".join(str(w) for w in (result or {}).get("warnings", []))
        case.check("changed after the check" in warnings, f"no warning: {warnings[:300]}")
        case.check(result and result["status_code"] == 0, summary(result))
    scenario.assert_held()


def test_changes_from_outside_at_varied_moments(
    figures, make_app, meter, blob_disks, loop_ext4, run_dirs, tmp_path
):
    scenario = figures.scenario(
        "checked-file-runs", "scripts", "a script changed after the check", deadline=DEADLINE
    )
    rng = random.Random(165)
    for index, how in enumerate(("append", "rewrite in place", "truncate and grow")):
        app = make_app(f"app-{index}", pre_extra="sleep 0.6")
        args = snapshot_args(blob_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
        after = rng.uniform(0.0, 0.5)
        with scenario.case(f"{how} +{after:.2f} s into the pre-script") as case:
            run = ModuleProcess(args, tmp_path)
            case.check(wait_for(lambda app=app: "pre-start" in app.entries(), 30), "no pre")
            time.sleep(after)
            original = app.post.read_bytes()
            with open(app.post, "r+b") as handle:  # the same inode the run checked
                if how == "append":
                    handle.seek(0, os.SEEK_END)
                    handle.write(APPEND.encode())
                elif how == "rewrite in place":
                    handle.write(b"#!/bin/sh\ndir=" + str(app.dir).encode() + APPEND.encode())
                    handle.truncate()
                else:
                    handle.truncate(0)
                    handle.write(original + APPEND.encode())
            os.chmod(app.post, 0o777)
            result = run.finish()
            released(case, meter, app, run, result)
            case.check(
                not any(entry == "TAMPERED" for entry in app.entries()),
                f"the changed bytes ran: {app.entries()}",
            )
            case.check(app.count("post-end") == 1, f"the post-script did not run: {app.entries()}")
    scenario.assert_held()


@pytest.fixture
def bindfs_mount(tmp_path):
    """A FUSE (bindfs) view of a directory owned by another user, claiming root:root 0700."""
    if shutil.which("bindfs") is None or not os.path.exists("/dev/fuse"):
        pytest.skip("bindfs or /dev/fuse is not available")
    source = tmp_path / "foreign"
    source.mkdir()
    mount = tmp_path / "fuse"
    mount.mkdir(mode=0o700)
    done = subprocess.run(
        ["bindfs", "--force-user=root", "--force-group=root", "--perms=0700", str(source),
         str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"bindfs cannot mount here: {done.stderr.strip()}")
    yield source, mount
    subprocess.run(["fusermount", "-u", str(mount)], check=False)


@pytest.mark.parametrize("what", ["pre-script", "post-script", "configuration"])
def test_files_on_fuse_are_refused(
    figures, make_app, meter, blob_disks, loop_ext4, run_dirs, tmp_path, bindfs_mount, what
):
    scenario = figures.scenario(
        "fuse-ownership", "scripts", "a FUSE filesystem claiming root 0700", deadline=DEADLINE
    )
    source, mount = bindfs_mount
    app = make_app()
    name = {"pre-script": app.pre, "post-script": app.post, "configuration": app.config_path}[what]
    foreign = source / name.name
    foreign.write_bytes(name.read_bytes())
    os.chown(foreign, FOREIGN_UID, FOREIGN_UID)
    foreign.chmod(0o666)  # another user wrote it; the FUSE view says root 0700
    seen = (mount / name.name).stat()
    assert (seen.st_uid, seen.st_mode & 0o777) == (0, 0o700), "bindfs did not disguise it"
    config_path = app.config_location
    if what == "configuration":
        config_path = str(mount / name.name)
    else:
        config = json.loads(app.config_path.read_text())
        config[f"{what.split('-')[0]}ScriptLocation"] = str(mount / name.name)
        app.write_config(config)
    args = snapshot_args(blob_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
    args["config_path"] = config_path
    codes = {"pre-script": 306, "post-script": 307, "configuration": 317}
    with scenario.case(what) as case:
        result, run = run_module_process(args, tmp_path)
        released(case, meter, app, run, result)
        message = (result or {}).get("message", "")
        case.check(f"framework: {codes[what]} " in message, f"not {codes[what]}: {message[:300]}")
        case.check(app.entries() == [], f"a script ran: {app.entries()}")
        info, info_run = run_module_process({"config_path": config_path}, tmp_path, "prepost_info")
        case.module_output(info_run, "prepost_info")
        case.check(info and info.get("status_code") == codes[what], summary(info))
        case.check("fuse" in (info or {}).get("message", ""), f"no reason: {summary(info)}")
    scenario.assert_held()


def test_dot_dot_after_a_link_is_resolved_by_the_kernel(
    figures, make_app, meter, blob_disks, loop_ext4, run_dirs, tmp_path
):
    scenario = figures.scenario(
        "dot-dot-by-the-kernel", "scripts", "link/../x in a script path", deadline=DEADLINE
    )
    app = make_app()
    real = app.dir / "real"
    (real / "sub").mkdir(parents=True, mode=0o700)
    real.chmod(0o700)
    (app.dir / "link").symlink_to(real / "sub")
    app.write_script(real / app.pre.name, f'#!/bin/sh\necho "kernel-pre" >> "{app.dir}/journal"\n')
    config = json.loads(app.config_path.read_text())
    config["preScriptLocation"] = f"{app.dir}/link/../{app.pre.name}"
    app.write_config(config)
    args = snapshot_args(blob_disks(1), app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
    with scenario.case("link/../pre-script.sh") as case:
        result, run = run_module_process(args, tmp_path)
        released(case, meter, app, run, result)
        case.check(result and result["status_code"] == 0, summary(result))
        case.check(
            app.entries() == ["kernel-pre", "post-start", "post-end"],
            f"not the kernel's file: {app.entries()}",
        )
    scenario.assert_held()
