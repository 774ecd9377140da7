"""Permission checks on real files with real owners and modes (the tests run as root)."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._permissions import (
    CheckedFile,
    CheckedScript,
    check_script,
    open_checked,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")

NOBODY = 65534
SCRIPT = b"#!/bin/sh\nexit 0\n"


def make(path, mode=0o700, uid=0, content=SCRIPT):
    path.write_bytes(content)
    os.chown(path, uid, 0)
    os.chmod(path, mode)  # after chown, which clears setuid/setgid
    return str(path)


def make_dir(path, mode=0o755, uid=0):
    path.mkdir()
    os.chown(path, uid, 0)
    os.chmod(path, mode)
    return path


@pytest.fixture
def home(tmp_path):
    """A root-owned 0755 directory under pytest's root-only temporary directory."""
    return make_dir(tmp_path / "home")


def code_of(call, *args):
    try:
        checked = call(*args)
    except VmSnapshotError as exc:
        return exc.status, exc.message
    checked.close()
    return Status.success, ""


ROLE_CODES = {
    "pre": (Status.FailedPrepostPreScriptNotFound, Status.FailedPrepostPreScriptPermissionError),
    "post": (
        Status.FailedPrepostPostScriptNotFound,
        Status.FailedPrepostPostScriptPermissionError,
    ),
}


@pytest.mark.parametrize("role", ["pre", "post"])
@pytest.mark.parametrize(
    ("mode", "uid", "passes"),
    [
        (0o700, 0, True),
        (0o600, 0, True),  # the owner digit is not checked: scripts are run, not exec'd as-is
        (0o500, 0, True),
        (0o400, 0, True),
        (0o710, 0, False),
        (0o750, 0, False),
        (0o701, 0, False),
        (0o755, 0, False),
        (0o740, 0, False),
        (0o704, 0, False),
        (0o700, NOBODY, False),
        (0o4700, 0, False),  # setuid
        (0o2700, 0, False),  # setgid
    ],
)
def test_script_owner_and_mode(home, role, mode, uid, passes):
    path = make(home / "script.sh", mode, uid)
    status, message = code_of(check_script, path, role)
    assert status == (Status.success if passes else ROLE_CODES[role][1]), message
    if not passes:
        assert path in message


@pytest.mark.parametrize("role", ["pre", "post"])
def test_missing_script_is_not_found(home, role):
    status, message = code_of(check_script, str(home / "absent.sh"), role)
    assert status == ROLE_CODES[role][0]
    assert "does not exist" in message


@pytest.mark.parametrize("location", ["", "relative/pre.sh", "pre.sh"])
def test_an_empty_or_relative_location_is_not_found(location):
    # The published template has empty locations: the reference reports "not a file" (302).
    status, message = code_of(check_script, location, "pre")
    assert status == Status.FailedPrepostPreScriptNotFound
    assert "not an absolute path" in message


def test_a_directory_is_not_a_script(home):
    make_dir(home / "dir.sh", 0o700)
    status, message = code_of(check_script, str(home / "dir.sh"), "post")
    assert status == Status.FailedPrepostPostScriptNotFound
    assert "a directory" in message


def test_a_fifo_is_refused_without_hanging(home):
    fifo = home / "fifo.sh"
    os.mkfifo(fifo, 0o600)
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(r=code_of(check_script, str(fifo), "pre"))
    )
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "opening a FIFO blocked"
    assert result["r"][0] == Status.FailedPrepostPreScriptNotFound
    assert "a FIFO" in result["r"][1]


def test_a_symlinked_script_is_refused_even_to_a_good_file(home):
    target = make(home / "real.sh")
    os.symlink(target, home / "link.sh")
    status, message = code_of(check_script, str(home / "link.sh"), "pre")
    assert status == Status.FailedPrepostPreScriptPermissionError
    assert "symbolic link" in message


@pytest.mark.parametrize(
    ("mode", "uid", "passes"),
    [
        (0o755, 0, True),
        (0o700, 0, True),
        (0o775, 0, False),  # group-writable
        (0o757, 0, False),  # world-writable
        (0o777, 0, False),
        (0o1777, 0, True),  # sticky and root-owned, like /tmp
        (0o1777, NOBODY, False),
        (0o755, NOBODY, False),  # its owner could chmod it and swap the script
    ],
)
def test_the_directory_holding_the_script(tmp_path, mode, uid, passes):
    directory = make_dir(tmp_path / "scripts", mode, uid)
    path = make(directory / "pre.sh")
    status, message = code_of(check_script, path, "pre")
    assert status == (Status.success if passes else Status.FailedPrepostPreScriptPermissionError)
    if not passes:
        assert repr(str(directory)) in message


def test_an_unsafe_directory_higher_up_is_refused(tmp_path):
    top = make_dir(tmp_path / "top", 0o777)
    middle = make_dir(top / "middle")
    path = make(middle / "pre.sh")
    status, message = code_of(check_script, path, "pre")
    assert status == Status.FailedPrepostPreScriptPermissionError
    assert "writable by group or other (mode 0777)" in message


def test_a_symlinked_directory_in_a_trusted_directory_is_followed(home):
    real = make_dir(home / "real")
    make(real / "pre.sh")
    os.symlink("real", home / "alias")
    checked = check_script(str(home / "alias" / "pre.sh"), "pre")
    with checked:
        assert os.fstat(checked.fd).st_ino == os.stat(real / "pre.sh").st_ino


def test_a_symlinked_directory_pointing_into_an_unsafe_directory_is_refused(home, tmp_path):
    unsafe = make_dir(tmp_path / "unsafe", 0o755, NOBODY)
    make(unsafe / "pre.sh")
    os.symlink(str(unsafe), home / "alias")
    status, _message = code_of(check_script, str(home / "alias" / "pre.sh"), "pre")
    assert status == Status.FailedPrepostPreScriptPermissionError


def test_a_directory_symlink_loop_is_refused(home):
    os.symlink("b", home / "a")
    os.symlink("a", home / "b")
    status, message = code_of(check_script, str(home / "a" / "pre.sh"), "pre")
    assert status == Status.FailedPrepostPreScriptPermissionError
    assert "symbolic links" in message


def test_the_checked_file_is_the_file_that_is_read(home):
    path = make(home / "pre.sh", content=b"#!/bin/sh\necho original\n")
    with check_script(path, "pre") as checked:
        make(home / "evil.sh", content=b"#!/bin/sh\necho replaced\n")
        os.replace(home / "evil.sh", path)
        assert checked.read(1024) == b"#!/bin/sh\necho original\n"


def test_a_checked_script_is_a_closable_context_manager(home):
    path = make(home / "pre.sh", 0o700)
    with check_script(path, "post") as checked:
        assert isinstance(checked, CheckedScript)
        assert (checked.path, checked.role, checked.executable) == (path, "post", True)
        fd = checked.fd
        assert os.get_inheritable(fd) is False  # O_CLOEXEC: no other child inherits it
        assert stat.S_ISREG(os.fstat(fd).st_mode)
    assert checked.closed
    with pytest.raises(OSError):
        os.fstat(fd)
    with check_script(make(home / "ro.sh", 0o600), "pre") as checked:
        assert checked.executable is False


@pytest.mark.parametrize(
    ("mode", "uid", "passes"),
    [
        (0o600, 0, True),
        (0o400, 0, True),
        (0o200, 0, True),
        (0o000, 0, True),
        (0o700, 0, False),  # owner execute
        (0o640, 0, False),
        (0o644, 0, False),
        (0o604, 0, False),
        (0o602, 0, False),
        (0o600, NOBODY, False),
        (0o4600, 0, False),
    ],
)
def test_config_owner_and_mode(home, mode, uid, passes):
    path = make(home / "VMSnapshotScriptPluginConfig.json", mode, uid, b"{}")
    status, message = code_of(open_checked, path, "config")
    assert status == (Status.success if passes else Status.FailedPrepostPluginConfigPermissionError)
    if not passes:
        assert path in message


def test_config_missing_symlinked_and_readable(home):
    missing = str(home / "absent.json")
    assert code_of(open_checked, missing, "config")[0] == Status.FailedPrepostPluginConfigNotFound
    real = make(home / "real.json", 0o600, content=b'{"a": 1}')
    os.symlink(real, home / "link.json")
    status, _message = code_of(open_checked, str(home / "link.json"), "config")
    assert status == Status.FailedPrepostPluginConfigPermissionError
    with open_checked(real, "config") as checked:
        assert isinstance(checked, CheckedFile)
        assert checked.read(100) == b'{"a": 1}'
        assert checked.read(3) == b'{"a"'  # limit + 1 bytes: the caller can tell "too big"


@pytest.mark.parametrize(
    ("mode", "uid", "passes"),
    [
        (0o644, 0, True),
        (0o640, 0, True),
        (0o604, 0, True),
        (0o600, 0, True),
        (0o744, 0, True),  # the owner digit is not checked
        (0o664, 0, False),
        (0o646, 0, False),
        (0o654, 0, False),
        (0o645, 0, False),
        (0o644, NOBODY, False),
        (0o2644, 0, False),
    ],
)
def test_host_config_owner_and_mode(home, mode, uid, passes):
    path = make(home / "VMSnapshotPluginHost.conf", mode, uid, b"[pre_post]\n")
    status, message = code_of(open_checked, path, "host_config")
    expected = Status.FailedPrepostPluginhostConfigPermissionError
    assert status == (Status.success if passes else expected), message


def test_host_config_missing(home):
    status, _message = code_of(open_checked, str(home / "absent.conf"), "host_config")
    assert status == Status.FailedPrepostPluginhostConfigNotFound


def test_a_missing_parent_directory_is_not_found(home):
    status, _message = code_of(check_script, str(home / "no" / "such" / "pre.sh"), "post")
    assert status == Status.FailedPrepostPostScriptNotFound


def test_a_file_used_as_a_directory_is_not_found(home):
    make(home / "file")
    status, _message = code_of(check_script, str(home / "file" / "pre.sh"), "pre")
    assert status == Status.FailedPrepostPreScriptNotFound


def test_an_unknown_script_role_is_a_programming_error(home):
    with pytest.raises(ValueError):
        check_script(make(home / "pre.sh"), "config")
