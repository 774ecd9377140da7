"""The pre/post engine over real configuration files and scripts: precheck, run_pre, run_post."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils import _prepost_config
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._prepost import (
    PhaseResult,
    Precheck,
    precheck,
    run_post,
    run_pre,
)
from ansible_collections.appconsistent.vmsnapshot.plugins.module_utils._status_codes import (
    Status,
    VmSnapshotError,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")

NOBODY = 65534
OK = "#!/bin/sh\nexit 0\n"


def put(path, text, mode, uid=0):
    path.write_text(text)
    os.chown(path, uid, 0)
    os.chmod(path, mode)
    return str(path)


class Site:
    """A directory holding one plugin: its JSON configuration, and its two scripts in bin/."""

    def __init__(self, root, name="app"):
        self.dir = root / name
        self.bin = self.dir / "bin"
        self.bin.mkdir(mode=0o755, parents=True)
        os.chmod(self.dir, 0o755)
        self.log = root / "runs.log"
        self.config = str(self.dir / "config.json")
        self.pre = str(self.bin / "pre.sh")
        self.post = str(self.bin / "post.sh")

    def write(self, pre=None, post=None, config_mode=0o600, **settings):
        """Scripts log "<name> <pre|post> <args>" to the shared log, then run `pre`/`post`."""
        name = self.dir.name
        for path, role, body in ((self.pre, "pre", pre), (self.post, "post", post)):
            logger = f'#!/bin/sh\necho "{name} {role} $*" >> {self.log}\n'
            put(self.bin / os.path.basename(path), logger + (body or "exit 0\n"), 0o700)
        data = {
            "pluginName": "ScriptRunner",
            "preScriptLocation": self.pre,
            "postScriptLocation": self.post,
            "timeoutInSeconds": 30,
            **settings,
        }
        put(self.dir / "config.json", json.dumps(data), config_mode)
        return self

    def runs(self):
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def no_host(tmp_path, monkeypatch):
    """The default host path, pointed at a file that does not exist."""
    path = str(tmp_path / "VMSnapshotPluginHost.conf")
    monkeypatch.setattr(_prepost_config, "DEFAULT_HOST_CONFIG_PATH", path)
    return path


@pytest.fixture
def site(tmp_path):
    return Site(tmp_path)


def host_file(tmp_path, config_paths, timeout=1800, mode=0o644):
    lines = ["[pre_post]", f"timeoutInSeconds: {timeout}", f"numberOfPlugins: {len(config_paths)}"]
    for index, path in enumerate(config_paths):
        lines += [f"pluginName{index}: ScriptRunner", f"pluginConfigPath{index}: {path}"]
    return put(tmp_path / "host.conf", "\n".join(lines) + "\n", mode)


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def test_a_good_configuration_passes_and_holds_its_scripts_open(site, no_host):
    site.write(continueBackupOnFailure=False, fsFreezeEnabled=False)
    before = open_fds()
    check = precheck(site.config, no_host)
    assert isinstance(check, Precheck)
    assert (check.status, check.configured) == (Status.success, True)
    assert check.continue_on_failure is False and check.fs_freeze_enabled is False
    assert check.host_config_path is None and check.host_timeout_seconds == 1800
    [plugin] = check.plugins
    assert (plugin.pre.path, plugin.post.path) == (site.pre, site.post)
    assert len(open_fds() - before) == 4  # each script: its file and its sealed copy
    check.close()
    assert open_fds() == before
    assert site.runs() == []  # the precheck runs nothing


def broken(site, case, tmp_path):
    """Apply one breakage; return the config path to check."""
    if case == "no config":
        return str(tmp_path / "absent.json")
    site.write()
    if case == "config mode":
        os.chmod(site.config, 0o644)
    elif case == "config owner":
        os.chown(site.config, NOBODY, 0)
    elif case == "config symlink":
        os.symlink(site.config, tmp_path / "link.json")
        return str(tmp_path / "link.json")
    elif case == "config json":
        put(tmp_path / "bad.json", '{"preScriptLocation": ', 0o600)
        return str(tmp_path / "bad.json")
    elif case == "no pre":
        os.unlink(site.pre)
    elif case == "no post":
        os.unlink(site.post)
    elif case == "pre mode":
        os.chmod(site.pre, 0o755)
    elif case == "post owner":
        os.chown(site.post, NOBODY, 0)
        os.chmod(site.post, 0o700)
    elif case == "pre dir":
        os.chmod(site.bin, 0o777)
    elif case == "template":
        template = {
            "pluginName": "ScriptRunner",
            "preScriptLocation": "",
            "postScriptLocation": "",
            "preScriptParams": ["", ""],
            "postScriptParams": ["", ""],
            "preScriptNoOfRetries": 0,
            "postScriptNoOfRetries": 0,
            "timeoutInSeconds": 30,
            "continueBackupOnFailure": True,
            "fsFreezeEnabled": True,
        }
        put(tmp_path / "template.json", json.dumps(template), 0o600)
        return str(tmp_path / "template.json")
    return site.config


@pytest.mark.parametrize(
    ("case", "status", "configured", "fragment"),
    [
        ("no config", 316, False, "does not exist"),
        ("config mode", 317, True, "mode 0644"),
        ("config owner", 317, True, "uid 65534"),
        ("config symlink", 317, True, "symbolic link"),
        ("config json", 305, True, "not valid JSON"),
        ("no pre", 302, True, "pre.sh' does not exist"),
        ("no post", 303, True, "post.sh' does not exist"),
        ("pre mode", 306, True, "mode 0755"),
        ("post owner", 307, True, "uid 65534"),
        ("pre dir", 306, True, "writable by group or other"),
        ("template", 302, True, "location '' is not an absolute path"),
    ],
)
def test_precheck_codes(site, tmp_path, no_host, case, status, configured, fragment):
    config = broken(site, case, tmp_path)
    before = open_fds()
    check = precheck(config, no_host)
    assert (int(check.status), check.configured) == (status, configured)
    assert fragment in check.message, check.message
    assert open_fds() == before, "a failed precheck must hold no open script"
    with pytest.raises(VmSnapshotError) as raised:
        run_pre(check)
    assert raised.value.status == check.status
    with pytest.raises(VmSnapshotError):
        run_post(check)
    assert site.runs() == []


def test_the_template_reports_both_missing_scripts(tmp_path, no_host, site):
    check = precheck(broken(site, "template", tmp_path), no_host)
    assert check.status == Status.FailedPrepostPreScriptNotFound
    assert "pre-script location ''" in check.message
    assert "post-script location ''" in check.message
    assert check.plugins[0].config.pre_params == ("", "")


@pytest.mark.parametrize(
    ("case", "status"),
    [("missing", 313), ("mode", 314), ("owner", 314), ("garbage", 304), ("python", 304)],
)
def test_host_file_codes(site, tmp_path, case, status):
    site.write()
    path = str(tmp_path / "host.conf")
    if case != "missing":
        host_file(tmp_path, [site.config])
    if case == "mode":
        os.chmod(path, 0o666)
    elif case == "owner":
        os.chown(path, NOBODY, 0)
    elif case == "garbage":
        put(tmp_path / "host.conf", "not an ini file\n", 0o644)
    elif case == "python":
        text = (tmp_path / "host.conf").read_text().replace("pluginName0: Script", "pluginName0: x")
        put(tmp_path / "host.conf", text, 0o644)
    check = precheck(site.config, path)
    assert int(check.status) == status
    assert check.configured
    assert check.plugins == []


def test_run_pre_and_post_success(site, no_host):
    site.write(preScriptParams=["--quiesce", ""], postScriptParams=["--thaw"])
    with precheck(site.config, no_host) as check:
        pre = run_pre(check)
        post = run_post(check)
    assert isinstance(pre, PhaseResult)
    assert (pre.status, post.status) == (Status.success, Status.success)
    assert pre.continue_backup and post.continue_backup
    assert site.runs() == ["app pre --quiesce ", "app post --thaw"]
    assert pre.runs[0].result.ok and pre.runs[0].result.attempts == 1
    document = pre.as_dict()
    assert document["status_code"] == 1 and document["phase"] == "pre"
    assert document["plugins"][0]["script"]["exit_code"] == 0
    assert json.dumps(document)  # serialisable as a module result


@pytest.mark.parametrize(
    ("pre", "post", "timeout", "continue_on_failure", "pre_status", "post_status", "keep_going"),
    [
        ("exit 1\n", None, 30, True, 300, 1, True),
        ("exit 2\n", None, 30, False, 300, 1, False),
        ("sleep 30\n", None, 1, True, 308, 1, True),
        ("sleep 30\n", None, 1, False, 308, 1, False),
        (None, "exit 1\n", 30, False, 1, 301, False),
        (None, "sleep 30\n", 1, True, 1, 309, True),
    ],
)
def test_script_failures_and_timeouts(
    site, no_host, pre, post, timeout, continue_on_failure, pre_status, post_status, keep_going
):
    site.write(pre, post, timeoutInSeconds=timeout, continueBackupOnFailure=continue_on_failure)
    with precheck(site.config, no_host) as check:
        pre_result = run_pre(check)
        post_result = run_post(check)  # the post-script runs whenever the pre-script was tried
    assert (int(pre_result.status), int(post_result.status)) == (pre_status, post_status)
    failed = pre_result if pre_status != 1 else post_result
    assert failed.continue_backup is keep_going
    assert site.runs() == ["app pre ", "app post "]
    if timeout == 1:
        assert failed.runs[0].result.timed_out
        assert "killed" in failed.message


def test_retries_come_from_the_configuration(site, tmp_path, no_host):
    count = tmp_path / "count"
    body = f"n=$(cat {count} 2>/dev/null || echo 0); echo $((n + 1)) > {count}; exit 1\n"
    site.write(pre=body, preScriptNoOfRetries=2)
    with precheck(site.config, no_host) as check:
        result = run_pre(check)
    assert result.status == Status.FailedPrepostPreScriptFailed
    assert count.read_text() == "3\n"
    assert result.runs[0].result.attempts == 3
    assert "after 3 attempts" in result.message


def test_plugins_run_one_by_one_in_the_listed_order(tmp_path):
    sites = [Site(tmp_path, name).write() for name in ("zeta", "alpha", "mid")]
    host = host_file(tmp_path, [s.config for s in sites], timeout=600)
    with precheck("/unused.json", host) as check:
        assert check.status == Status.success
        assert check.host_timeout_seconds == 600
        assert [p.config_path for p in check.plugins] == [s.config for s in sites]
        run_pre(check)
        run_post(check)
    assert sites[0].runs() == [
        "zeta pre ",
        "alpha pre ",
        "mid pre ",
        "zeta post ",
        "alpha post ",
        "mid post ",
    ]


def test_one_broken_plugin_stops_every_plugin(tmp_path):
    good, bad = Site(tmp_path, "good").write(), Site(tmp_path, "bad").write()
    os.chmod(bad.post, 0o770)
    with precheck("/unused.json", host_file(tmp_path, [good.config, bad.config])) as check:
        assert check.status == Status.FailedPrepostPostScriptPermissionError
        assert check.plugins[0].status == Status.success
        assert check.plugins[0].pre.closed  # nothing can run
        with pytest.raises(VmSnapshotError):
            run_pre(check)
    assert good.runs() == []


def test_flags_are_anded_over_plugins(tmp_path):
    one = Site(tmp_path, "one").write(continueBackupOnFailure=True, fsFreezeEnabled=False)
    two = Site(tmp_path, "two").write(continueBackupOnFailure=False, fsFreezeEnabled=True)
    with precheck("/unused.json", host_file(tmp_path, [one.config, two.config])) as check:
        assert (check.continue_on_failure, check.fs_freeze_enabled) == (False, False)


@pytest.mark.parametrize("phase", ["pre", "post"])
def test_the_plugin_host_budget_covers_the_whole_phase(tmp_path, phase):
    # 2 s for all plugins: the first uses 1.2 s, the second is cut short at ~0.8 s instead of
    # its own 2 s, the third never starts.
    body = "sleep 1.2\n"
    first = Site(tmp_path, "first").write(**{phase: body}, timeoutInSeconds=2)
    second = Site(tmp_path, "second").write(**{phase: "sleep 30\n"}, timeoutInSeconds=2)
    third = Site(tmp_path, "third").write(timeoutInSeconds=2, continueBackupOnFailure=False)
    host = host_file(tmp_path, [first.config, second.config, third.config], timeout=2)
    with precheck("/unused.json", host) as check:
        result = (run_pre if phase == "pre" else run_post)(check)
    budget = {"pre": 310, "post": 311}[phase]
    assert [int(run.status) for run in result.runs] == [1, budget, budget]
    assert int(result.status) == budget
    assert result.continue_backup is True  # the reference: host timeouts carry continueBackup
    assert result.runs[1].result.timed_out
    assert result.runs[1].result.duration_ms < 1900
    assert result.runs[2].result is None
    assert f"third {phase} " not in first.runs()


def test_a_closed_precheck_runs_nothing(site, no_host):
    site.write()
    check = precheck(site.config, no_host)
    check.close()
    with pytest.raises(VmSnapshotError):
        run_pre(check)
    assert site.runs() == []


def test_warnings_are_collected(site, no_host):
    site.write(timeoutInSeconds=5000, preScriptNoOfRetries=-1)
    with precheck(site.config, no_host) as check:
        assert check.status == Status.success
        assert any("above the maximum of 1800" in w for w in check.warnings)
        assert any("'preScriptNoOfRetries' is -1" in w for w in check.warnings)
        assert check.plugins[0].config.timeout_seconds == 1800
