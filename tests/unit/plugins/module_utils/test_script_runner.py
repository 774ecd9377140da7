"""The script runner with real scripts: shebangs, argv, environment, retries, output, timeouts."""

from __future__ import annotations

import os
import signal
import time

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._permissions import (
    check_script,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._script_runner import (
    TAIL_BYTES,
    ScriptResult,
    command_for,
    run_script,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="scripts must be root-owned")


@pytest.fixture
def script(tmp_path):
    """Write a root-owned script and return its open CheckedScript; all are closed afterwards."""
    opened = []

    def make(body, mode=0o700, name="script.sh"):
        path = tmp_path / name
        path.write_text(body)
        os.chown(path, 0, 0)
        os.chmod(path, mode)
        opened.append(check_script(str(path), "pre"))
        return opened[-1]

    yield make
    for checked in opened:
        checked.close()


def alive(pid):
    """True while the process exists and is not a zombie waiting for init to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def kill_all(pids):
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def wait_for_lines(path, count, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and len(path.read_text().split()) >= count:
            return [int(x) for x in path.read_text().split()]
        time.sleep(0.02)
    raise AssertionError(f"{path} never got {count} lines")


def test_exit_zero_is_success(script):
    result = run_script(script("#!/bin/sh\necho hello\necho oops >&2\n"), [], 10, 0)
    assert isinstance(result, ScriptResult)
    assert (result.ok, result.exit_code, result.attempts, result.timed_out) == (True, 0, 1, False)
    assert (result.stdout_tail, result.stderr_tail) == ("hello\n", "oops\n")
    assert result.as_dict() == {
        "path": result.path,
        "exit_code": 0,
        "attempts": 1,
        "duration_ms": result.duration_ms,
        "timed_out": False,
        "stdout_tail": "hello\n",
        "stderr_tail": "oops\n",
        "error": None,
        "ok": True,
    }


@pytest.mark.parametrize("code", [1, 2, 3, 255])
def test_any_non_zero_exit_is_failure(script, code):
    # 2 is "warning" in the reference's sample scripts, and still a failure there.
    result = run_script(script(f"#!/bin/sh\nexit {code}\n"), [], 10, 0)
    assert (result.ok, result.exit_code, result.attempts) == (False, code, 1)


def test_death_by_signal_is_a_negative_exit_code(script):
    result = run_script(script("#!/bin/sh\nkill -9 $$\n"), [], 10, 0)
    assert (result.ok, result.exit_code, result.timed_out) == (False, -9, False)


def test_a_bash_shebang_is_honoured(script):
    body = '#!/bin/bash\n[[ -n "$BASH_VERSION" ]] && echo "bash"\nreadlink /proc/$$/exe\n'
    checked = script(body)
    assert command_for(checked) == [f"/proc/self/fd/{checked.run_fd}"]
    result = run_script(checked, [], 10, 0)
    assert result.ok, result.stderr_tail
    assert result.stdout_tail == "bash\n/usr/bin/bash\n"


def test_a_script_without_shebang_runs_under_bin_sh(script):
    checked = script("readlink /proc/$$/exe\necho $0\n")
    assert command_for(checked) == ["/bin/sh", f"/proc/self/fd/{checked.run_fd}"]
    result = run_script(checked, [], 10, 0)
    assert result.stdout_tail == f"{os.path.realpath('/bin/sh')}\n/proc/self/fd/{checked.run_fd}\n"


@pytest.mark.parametrize(
    ("shebang", "interpreter"),
    [("#!/bin/bash", "/usr/bin/bash"), ("#! /usr/bin/env  bash ", "/usr/bin/bash")],
)
def test_a_shebang_is_honoured_without_the_execute_bit(script, shebang, interpreter):
    # The reference runs `sh <script>`, so 0600 scripts are allowed; we still honour #!.
    checked = script(f"{shebang}\nreadlink /proc/$$/exe\n", mode=0o600)
    assert not checked.executable
    result = run_script(checked, [], 10, 0)
    assert result.stdout_tail == f"{interpreter}\n", result.stderr_tail


def test_a_python_script_runs_under_python(script):
    result = run_script(
        script("#!/usr/bin/python3\nimport sys\nprint(sys.argv[1:])\n"), ["x", "y z"], 10, 0
    )
    assert result.stdout_tail == "['x', 'y z']\n"


def test_params_are_argv_without_a_shell(script, tmp_path):
    marker = tmp_path / "injected"
    params = ["a b", "", f"$(touch {marker})", "*", ";echo no"]
    result = run_script(script("#!/bin/sh\nprintf '[%s]' \"$@\"\n"), params, 10, 0)
    assert result.stdout_tail == f"[a b][][$(touch {marker})][*][;echo no]"
    assert not marker.exists()


def test_clean_environment_cwd_stdin_and_own_session(script):
    body = """#!/bin/sh
tr '\\0' '\\n' < /proc/$$/environ | sort
pwd
readlink /proc/$$/fd/0
stat=$(cat /proc/$$/stat)
set -- ${stat##*) }
echo "pid=$$ group=$3 session=$4"
"""
    os.environ["LEAK_TEST_SECRET"] = "must-not-leak"
    try:
        result = run_script(script(body), [], 10, 0)
    finally:
        del os.environ["LEAK_TEST_SECRET"]
    lines = result.stdout_tail.splitlines()
    assert lines[:4] == [
        "HOME=/root",
        "LANG=C.UTF-8",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        f"VMSNAPSHOT_SCRIPT_PATH={result.path}",
    ]
    assert lines[4:6] == ["/", "/dev/null"]
    pid = lines[6].split()[0].split("=")[1]
    assert lines[6] == f"pid={pid} group={pid} session={pid}"


def test_retries_really_rerun_the_script(script, tmp_path):
    count = tmp_path / "count"
    body = f"""#!/bin/sh
n=$(cat {count} 2>/dev/null || echo 0)
n=$((n + 1))
echo $n > {count}
echo "run $n"
[ "$n" -ge 3 ]
"""
    result = run_script(script(body), [], 30, 5)
    assert (result.ok, result.attempts) == (True, 3)
    assert count.read_text() == "3\n"
    assert result.stdout_tail == "run 3\n"  # the last attempt's output


def test_retries_stop_at_the_configured_count(script, tmp_path):
    count = tmp_path / "count"
    body = f"#!/bin/sh\necho x >> {count}\nexit 1\n"
    result = run_script(script(body), [], 30, 2)
    assert (result.ok, result.exit_code, result.attempts) == (False, 1, 3)
    assert count.read_text() == "x\nx\nx\n"


def test_the_timeout_covers_all_retries(script, tmp_path):
    count = tmp_path / "count"
    body = f"#!/bin/sh\necho x >> {count}\nsleep 0.4\nexit 1\n"
    start = time.monotonic()
    result = run_script(script(body), [], 1, 100)
    elapsed = time.monotonic() - start
    assert result.timed_out and not result.ok and result.exit_code is None
    runs = len(count.read_text().split())
    assert runs == result.attempts
    assert 2 <= runs <= 4
    assert elapsed < 3


def test_a_slow_script_within_its_timeout(script):
    result = run_script(script("#!/bin/sh\nsleep 0.5\necho done\n"), [], 10, 0)
    assert result.ok and result.stdout_tail == "done\n"
    assert 500 <= result.duration_ms < 5000


def test_noisy_output_is_drained_and_bounded(script):
    body = """#!/bin/sh
head -c 6000000 /dev/zero | tr '\\0' 'o' &
head -c 6000000 /dev/zero | tr '\\0' 'e' >&2
wait
echo
echo LAST-OUT
echo LAST-ERR >&2
"""
    result = run_script(script(body), [], 60, 0)
    assert result.ok, result.error
    for tail, last in ((result.stdout_tail, "LAST-OUT\n"), (result.stderr_tail, "LAST-ERR\n")):
        marker, _newline, data = tail.partition("\n")
        assert marker.startswith("[") and marker.endswith(" earlier bytes dropped]")
        assert tail.endswith(last)
        assert len(data) <= TAIL_BYTES


def test_a_timed_out_script_is_killed_with_its_whole_tree(script, tmp_path):
    pids = tmp_path / "pids"
    orphan = tmp_path / "orphan.py"
    # Orphaned (its parent exits) and out of the process group: only its session links it.
    orphan.write_text(
        f"""import os, signal, time
if os.fork():
    os._exit(0)
os.setpgid(0, 0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open("{pids}", "a").write(f"{{os.getpid()}}\\n")
time.sleep(300)
"""
    )
    body = f"""#!/bin/sh
echo $$ >> {pids}
sh -c 'trap "" TERM; echo $$ >> {pids}; while :; do sleep 0.1; done' &
setsid sh -c 'trap "" TERM; echo $$ >> {pids}; while :; do sleep 0.1; done' &
/usr/bin/python3 {orphan}
trap "" TERM
while :; do sleep 0.1; done
"""
    checked = script(body)
    recorded = []
    try:
        start = time.monotonic()
        result = run_script(checked, [], 2, 3)
        returned = time.monotonic()
        recorded = [int(x) for x in pids.read_text().split()]
        assert len(recorded) == 4, "the script did not start all its children in time"
        assert result.timed_out and result.exit_code is None and result.attempts == 1
        assert returned - start < 2 + 1.0
        assert [pid for pid in recorded if alive(pid)] == []
        assert result.error is None
    finally:
        kill_all(recorded)


def test_a_script_that_exits_0_keeps_the_processes_it_left_behind(script, tmp_path):
    pids = tmp_path / "pids"
    done = tmp_path / "done"
    # A lock holder the post-script would stop, and a late writer that would block on a full
    # pipe (or die of SIGPIPE) if its output were no longer read.
    body = f"""#!/bin/sh
sleep 60 &
echo $! >> {pids}
(sleep 0.3; head -c 2000000 /dev/zero && echo complete > {done}) &
echo $! >> {pids}
echo quiesced
"""
    recorded = []
    try:
        start = time.monotonic()
        result = run_script(script(body), [], 30, 0)
        assert result.ok and result.stdout_tail == "quiesced\n"
        assert time.monotonic() - start < 5, "waited for the background processes"
        recorded = wait_for_lines(pids, 2)
        holder, writer = recorded
        assert alive(holder)
        end = time.monotonic() + 20
        while alive(writer) and time.monotonic() < end:
            time.sleep(0.05)
        assert not alive(writer), "the late writer blocked on its pipe"
        assert done.read_text() == "complete\n", "the late writer died of SIGPIPE"
        assert alive(holder)
    finally:
        kill_all(recorded)


def test_an_interpreter_that_does_not_exist(script):
    result = run_script(script("#!/nonexistent/interpreter\n"), [], 10, 1)
    assert (result.ok, result.exit_code, result.attempts) == (False, None, 2)
    assert "cannot be started" in result.error


def test_the_checked_file_is_the_file_that_runs(script, tmp_path):
    checked = script("#!/bin/sh\necho original\n")
    replacement = tmp_path / "replacement"
    replacement.write_text("#!/bin/sh\necho replaced\n")
    os.chmod(replacement, 0o700)
    os.replace(replacement, checked.path)
    assert run_script(checked, [], 10, 0).stdout_tail == "original\n"


def test_a_closed_script_cannot_run(script):
    checked = script("#!/bin/sh\n")
    checked.close()
    with pytest.raises(ValueError):
        run_script(checked, [], 10, 0)
