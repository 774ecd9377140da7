"""Hostile input: malformed or hostile configurations, files, settings and options.

Every case runs the real snapshot module against a real disk blob and a loop filesystem and
states the code it must end with. In every case: JSON out, no traceback, no secret, no script
run unless every check passed, nothing frozen for longer than the deadline plus one second.

Codes: the run's ``status_code``; ``ARGSPEC`` marks input that Ansible's own argument check
refuses before our code runs. ``framework`` is the pre/post-script code the message must name
(the run itself goes on file-system-consistent, as the reference's failure table says).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
from fault_support import App, run_module_process, snapshot_args, summary

DEADLINE = 3
BOUND = DEADLINE + 1.0
ARGSPEC = None
DELETE = object()
FOREIGN_UID = 4242


@dataclass
class Ctx:
    app: App
    tmp: Path
    disk: Any
    loop: Any


@dataclass(frozen=True)
class Hostile:
    name: str
    code: int | None
    framework: int | None = None
    scripts: bool = False
    setup: Callable[[Ctx], dict | None] | None = None  # may return option overrides
    options: dict = field(default_factory=dict)


def b64(value: Any) -> str:
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.b64encode(data).decode()


def settings(ctx: Ctx, public: dict | None = None, protected: dict | None = None) -> dict:
    """Good extension settings for the disk, with keys replaced (DELETE removes one)."""
    good_public = {
        "commandToExecute": "snapshot",
        "taskId": "hostile-task",
        "objectStr": b64({"backupMetadata": [{"Key": "job", "Value": "nightly"}]}),
    }
    good_protected = {"objectStr": b64({"blobSASUri": [ctx.disk.sas]})}

    def merged(good: dict, changes: dict | None) -> dict:
        result = dict(good)
        for key, value in (changes or {}).items():
            if value is DELETE:
                result.pop(key, None)
            else:
                result[key] = value
        return result

    return {
        "disks": DELETE,
        "settings": merged(good_public, public),
        "protected_settings": merged(good_protected, protected),
    }


def with_settings(public=None, protected=None) -> Callable[[Ctx], dict]:
    return lambda ctx: settings(
        ctx,
        public(ctx) if callable(public) else public,
        protected(ctx) if callable(protected) else protected,
    )


def disk_uri(uri: str) -> Callable[[Ctx], dict]:
    return with_settings(protected={"objectStr": b64({"blobSASUri": [uri]})})


def config(**changes) -> Callable[[Ctx], None]:
    """Rewrite the configuration with keys changed (DELETE removes one)."""

    def setup(ctx: Ctx) -> None:
        data = json.loads(ctx.app.config_path.read_text())
        for key, value in changes.items():
            if value is DELETE:
                data.pop(key, None)
            else:
                data[key] = value
        ctx.app.write_config(data)

    return setup


def raw_config(data: bytes) -> Callable[[Ctx], None]:
    return lambda ctx: ctx.app.write_config(None, raw=data)


def raw_good(transform: Callable[[bytes], bytes]) -> Callable[[Ctx], None]:
    """The good configuration's bytes, transformed."""
    return lambda ctx: ctx.app.write_config(None, raw=transform(ctx.app.config_path.read_bytes()))


def target(ctx: Ctx, which: str) -> Path:
    return {"config": ctx.app.config_path, "pre": ctx.app.pre, "post": ctx.app.post}[which]


def chmod(which: str, mode: int) -> Callable[[Ctx], None]:
    return lambda ctx: os.chmod(target(ctx, which), mode)


def chown(which: str) -> Callable[[Ctx], None]:
    return lambda ctx: os.chown(target(ctx, which), FOREIGN_UID, -1)


def replace_with(which: str, make: Callable[[Path, Ctx], None]) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        path = target(ctx, which)
        path.unlink()
        make(path, ctx)

    return setup


def symlink_to_copy(path: Path, ctx: Ctx) -> None:
    real = ctx.tmp / f"real-{path.name}"
    real.write_bytes((ctx.tmp / "app-copy" / path.name).read_bytes())
    real.chmod(0o600 if path.suffix == ".json" else 0o700)
    path.symlink_to(real)


def moved_to(directory_mode: int, uid: int = 0, which: str = "pre") -> Callable[[Ctx], dict]:
    """Move the script into a new directory with this mode and owner; point the config there."""

    def setup(ctx: Ctx) -> dict:
        directory = ctx.tmp / f"scripts-{directory_mode:o}-{uid}"
        directory.mkdir()
        os.chown(directory, uid, -1)
        os.chmod(directory, directory_mode)
        moved = directory / target(ctx, which).name
        os.replace(target(ctx, which), moved)
        config(**{f"{which}ScriptLocation": str(moved)})(ctx)
        return {}

    return setup


def app_dir_mode(mode: int, uid: int = 0) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        os.chown(ctx.app.dir, uid, -1)
        os.chmod(ctx.app.dir, mode)

    return setup


def host_file(text: bytes, mode: int = 0o644) -> Callable[[Ctx], dict]:
    def setup(ctx: Ctx) -> dict:
        path = ctx.tmp / "VMSnapshotPluginHost.conf"
        path.write_bytes(text.replace(b"{config}", str(ctx.app.config_path).encode()))
        path.chmod(mode)
        return {"host_config_path": str(path)}

    return setup


HOST_OK = b"[pre_post]\ntimeoutInSeconds=60\nnumberOfPlugins=1\n"
HOST_PLUGIN = b"pluginName0=ScriptRunner\npluginConfigPath0={config}\n"


def options(**values) -> Callable[[Ctx], dict]:
    return lambda ctx: values


def file_state_dir(ctx: Ctx) -> dict:
    path = ctx.tmp / "a-file"
    path.write_text("not a directory\n")
    return {"state_dir": str(path)}


def relative_path(ctx: Ctx) -> dict:
    return {"config_path": "VMSnapshotScriptPluginConfig.json"}


def symlinked_foreign_dir(ctx: Ctx) -> dict:
    """The config reached through a root-owned link into a directory owned by someone else."""
    foreign = ctx.tmp / "foreign"
    foreign.mkdir()
    os.replace(ctx.app.config_path, foreign / ctx.app.config_path.name)
    os.chown(foreign, FOREIGN_UID, -1)
    link = ctx.tmp / "link"
    link.symlink_to(foreign)
    return {"config_path": str(link / ctx.app.config_path.name)}


def dotdot(ctx: Ctx) -> dict:
    path = ctx.app.dir / ".." / ctx.app.dir.name / ctx.app.config_path.name
    return {"config_path": str(path)}


def fifo(which: str) -> Callable[[Ctx], None]:
    return replace_with(which, lambda path, ctx: os.mkfifo(path, 0o600))


def directory(which: str) -> Callable[[Ctx], None]:
    return replace_with(which, lambda path, ctx: path.mkdir(mode=0o700))


SHELL_PARAMS = ["; rm -rf /", "$(id)", "`id`", "'quoted' \"double\"", "ü😀", "*"]
BIG_NUMBER = b"9" * 5000
CRLF_SAS = "http://127.0.0.1:1/a/c/d?sv=1&sig=abc%3D\r\nHost: evil"

CORPUS = [
    # --- the configuration's content: 305, the snapshot goes on file-system-consistent
    Hostile("config empty", 1, 305, setup=raw_config(b"")),
    Hostile("config truncated JSON", 1, 305, setup=raw_config(b'{"pluginName": "ScriptRunner", ')),
    Hostile("config a JSON array", 1, 305, setup=raw_config(b"[]")),
    Hostile("config JSON null", 1, 305, setup=raw_config(b"null")),
    Hostile("config not UTF-8", 1, 305, setup=raw_config(b'{"pluginName": "\xff\xfe"}')),
    Hostile("config nested 100000 deep", 1, 305, setup=raw_config(b"[" * 100000)),
    Hostile("config number of 5000 digits", 1, 305,
            setup=raw_good(lambda data: data.replace(b'"timeoutInSeconds": 30',
                                                     b'"timeoutInSeconds": ' + BIG_NUMBER))),
    Hostile("config of 2 MiB", 1, 305, setup=config(appName="a" * 2 * 1024 * 1024)),
    Hostile("preScriptLocation missing", 1, 305, setup=config(preScriptLocation=DELETE)),
    Hostile("preScriptLocation a number", 1, 305, setup=config(preScriptLocation=42)),
    Hostile("preScriptLocation with NUL", 1, 305, setup=config(preScriptLocation="/bin/true\0x")),
    Hostile("timeoutInSeconds quoted", 1, 305, setup=config(timeoutInSeconds="30")),
    Hostile("timeoutInSeconds 0", 1, 305, setup=config(timeoutInSeconds=0)),
    Hostile("timeoutInSeconds negative", 1, 305, setup=config(timeoutInSeconds=-5)),
    Hostile("timeoutInSeconds NaN", 1, 305,
            setup=raw_good(lambda data: data.replace(b'"timeoutInSeconds": 30',
                                                     b'"timeoutInSeconds": NaN'))),
    Hostile("timeoutInSeconds Infinity", 1, 305,
            setup=raw_good(lambda data: data.replace(b'"timeoutInSeconds": 30',
                                                     b'"timeoutInSeconds": Infinity'))),
    Hostile("continueBackupOnFailure a string", 1, 305,
            setup=config(continueBackupOnFailure="false")),
    Hostile("fsFreezeEnabled null", 1, 305, setup=config(fsFreezeEnabled=None)),
    Hostile("preScriptParams a string", 1, 305, setup=config(preScriptParams="a b")),
    Hostile("preScriptParams holds null", 1, 305, setup=config(preScriptParams=[None])),
    Hostile("preScriptParams holds an object", 1, 305, setup=config(preScriptParams=[{"x": 1}])),
    # --- odd but valid configurations: the scripts run, application-consistent
    Hostile("config with a UTF-8 BOM", 0, scripts=True,
            setup=raw_good(lambda data: b"\xef\xbb\xbf" + data)),
    Hostile("config with duplicate keys", 0, scripts=True,
            setup=raw_good(lambda data: data.replace(b"{", b'{"timeoutInSeconds": 99, ', 1))),
    Hostile("timeoutInSeconds 1e308 (capped)", 0, scripts=True,
            setup=config(timeoutInSeconds=1e308)),
    Hostile("negative retries (0 used)", 0, scripts=True, setup=config(preScriptNoOfRetries=-3)),
    Hostile("shell metacharacters and unicode in parameters", 0, scripts=True,
            setup=config(preScriptParams=SHELL_PARAMS)),
    Hostile("unknown keys and a unicode plugin name", 0, scripts=True,
            setup=config(pluginName="插件-ü", somethingElse={"a": [1, 2]})),
    Hostile("appName of 512 KiB", 0, scripts=True, setup=config(appName="a" * 512 * 1024)),
    # --- the configuration file itself: owner, mode, type, place
    Hostile("config mode 0644", 1, 317, setup=chmod("config", 0o644)),
    Hostile("config with owner execute", 1, 317, setup=chmod("config", 0o700)),
    Hostile("config owned by another user", 1, 317, setup=chown("config")),
    Hostile("config setuid", 1, 317, setup=chmod("config", 0o4600)),
    Hostile("config a symbolic link", 1, 317, setup=replace_with("config", symlink_to_copy)),
    Hostile("config a directory", 1, 316, setup=directory("config")),
    Hostile("config a FIFO", 1, 316, setup=fifo("config")),
    Hostile("config is /dev/zero", 1, 316, options={"config_path": "/dev/zero"}),
    Hostile("config is /etc/shadow", 1, 317, options={"config_path": "/etc/shadow"}),
    Hostile("config in a world-writable directory", 1, 317, setup=app_dir_mode(0o777)),
    Hostile("config in a directory of another user", 1, 317,
            setup=app_dir_mode(0o700, FOREIGN_UID)),
    Hostile("config through a link into another user's directory", 1, 317,
            setup=symlinked_foreign_dir),
    Hostile("config in a world-writable sticky directory", 0, scripts=True,
            setup=app_dir_mode(0o1777)),
    Hostile("config path relative", 1, 316, setup=relative_path),
    Hostile("config path missing", 1, 316, options={"config_path": "/nonexistent/x.json"}),
    Hostile("config path with ..", 0, scripts=True, setup=dotdot),
    # --- the scripts
    Hostile("pre-script mode 0755", 1, 306, setup=chmod("pre", 0o755)),
    Hostile("post-script mode 0770", 1, 307, setup=chmod("post", 0o770)),
    Hostile("pre-script owned by another user", 1, 306, setup=chown("pre")),
    Hostile("pre-script setuid", 1, 306, setup=chmod("pre", 0o4700)),
    Hostile("pre-script setgid", 1, 306, setup=chmod("pre", 0o2700)),
    Hostile("pre-script a symbolic link", 1, 306, setup=replace_with("pre", symlink_to_copy)),
    Hostile("pre-script missing", 1, 302, setup=lambda ctx: ctx.app.pre.unlink()),
    Hostile("post-script a directory", 1, 303, setup=directory("post")),
    Hostile("pre-script a FIFO", 1, 302, setup=fifo("pre")),
    Hostile("pre-script in a world-writable directory", 1, 306, setup=moved_to(0o777)),
    Hostile("post-script in another user's directory", 1, 307,
            setup=moved_to(0o700, FOREIGN_UID, "post")),
    Hostile("pre-script is /bin/sh", 1, 306, setup=config(preScriptLocation="/bin/sh")),
    Hostile("pre-script is /proc/self/exe", 1, 306,
            setup=config(preScriptLocation="/proc/self/exe")),
    Hostile("pre-script path relative", 1, 302, setup=config(preScriptLocation="pre-script.sh")),
    Hostile("pre-script mode 0755, stop on failure", 306,
            setup=lambda ctx: (chmod("pre", 0o755)(ctx),
                               config(continueBackupOnFailure=False)(ctx))[-1]),
    Hostile("post-script missing, stop on failure", 303,
            setup=lambda ctx: (ctx.app.post.unlink(),
                               config(continueBackupOnFailure=False)(ctx))[-1]),
    # --- the plugin host file
    Hostile("host file without a section", 1, 304, setup=host_file(b"numberOfPlugins=1\n")),
    Hostile("host file numberOfPlugins text", 1, 304,
            setup=host_file(b"[pre_post]\nnumberOfPlugins=one\n")),
    Hostile("host file with 1000 plugins", 1, 304,
            setup=host_file(b"[pre_post]\nnumberOfPlugins=1000\n")),
    Hostile("host file plugin os.system", 1, 304,
            setup=host_file(HOST_OK + b"pluginName0=os.system\npluginConfigPath0={config}\n")),
    Hostile("host file mode 0666", 1, 314, setup=host_file(HOST_OK + HOST_PLUGIN, 0o666)),
    Hostile("host file missing", 1, 313,
            options={"host_config_path": "/nonexistent/VMSnapshotPluginHost.conf"}),
    Hostile("host file lists no plugins", 1, 316,
            setup=host_file(b"[pre_post]\nnumberOfPlugins=0\n")),
    Hostile("host file timeout -1", 1, 304,
            setup=host_file(b"[pre_post]\ntimeoutInSeconds=-1\nnumberOfPlugins=1\n" + HOST_PLUGIN)),
    Hostile("host file not UTF-8", 1, 304, setup=host_file(b"[pre_post]\n\xff\xfe=1\n")),
    # --- extension settings and SAS URIs: 11 (16 without settings), nothing quiesced
    Hostile("objectStr not base64", 11, setup=with_settings(protected={"objectStr": "%%%"})),
    Hostile("objectStr base64 of text", 11,
            setup=with_settings(protected={"objectStr": b64(b"hello")})),
    Hostile("objectStr a JSON list", 11, setup=with_settings(protected={"objectStr": b64([1])})),
    Hostile("objectStr without blobSASUri", 11,
            setup=with_settings(protected={"objectStr": b64({"other": []})})),
    Hostile("objectStr nested 50000 deep", 11,
            setup=with_settings(protected={"objectStr": b64(b"[" * 50000 + b"]" * 50000)})),
    Hostile("objectStr a number of 5000 digits", 11,
            setup=with_settings(protected={"objectStr": b64(BIG_NUMBER)})),
    Hostile("SAS not a URL", 11, setup=disk_uri("not a url at all")),
    Hostile("SAS with the file scheme", 11, setup=disk_uri("file:///etc/passwd?sig=abc")),
    Hostile("SAS with the ftp scheme", 11, setup=disk_uri("ftp://127.0.0.1/a/c/d?sig=abc")),
    Hostile("SAS javascript:", 11, setup=disk_uri("javascript:alert(1)//?sig=abc")),
    Hostile("SAS without a signature", 11, setup=disk_uri("http://127.0.0.1:1/a/c/d?sv=1")),
    Hostile("SAS with CRLF header injection", 11, setup=disk_uri(CRLF_SAS)),
    Hostile("SAS with a non-ASCII host", 11, setup=disk_uri("http://bl\u00f6b.example/a/c/d?sig=x")),
    Hostile("SAS with user info", 11, setup=disk_uri("http://u:p@127.0.0.1:1/a/c/d?sig=abc")),
    Hostile("SAS with a repeated sig", 11, setup=disk_uri("http://127.0.0.1:1/a/c/d?sig=a&sig=b")),
    Hostile("commandToExecute missing", 11,
            setup=with_settings(public={"commandToExecute": DELETE})),
    Hostile("no settings at all", 16,
            setup=lambda ctx: {"disks": DELETE, "settings": {}, "protected_settings": {}}),
    Hostile("command ticks not a number", 11,
            setup=with_settings(public={"commandStartTimeUTCTicks": "soon"})),
    Hostile("command ticks of the year 1", 402, setup=with_settings(
        public={"commandStartTimeUTCTicks": "1"})),
    Hostile("command ticks of 40 digits", 11,
            setup=with_settings(public={"commandStartTimeUTCTicks": "9" * 40})),
    Hostile("backupMetadata Key starting with a digit", 11, setup=with_settings(
        public={"objectStr": b64({"backupMetadata": [{"Key": "1job", "Value": "x"}]})})),
    Hostile("backupMetadata Value with CRLF", 11, setup=with_settings(
        public={"objectStr": b64({"backupMetadata": [{"Key": "job", "Value": "x\r\nA: b"}]})})),
    Hostile("backupMetadata Value ending in a newline", 11, setup=with_settings(
        public={"objectStr": b64({"backupMetadata": [{"Key": "job", "Value": "x\n"}]})})),
    Hostile("backupMetadata not a list", 11, setup=with_settings(
        public={"objectStr": b64({"backupMetadata": {"job": "x"}})})),
    Hostile("customSettings backupRetryCount -1", 11, setup=with_settings(
        public={"customSettings": {"backupRetryCount": -1}})),
    Hostile("customSettings not JSON", 11, setup=with_settings(public={"customSettings": "{"})),
    Hostile("unicode taskId", 0, scripts=True,
            setup=with_settings(public={"taskId": "tâche-😀-\u202e"})),
    # --- module options
    Hostile("disks empty", 11, options={"disks": []}),
    Hostile("disks a relative path", 11, options={"disks": ["disk0.vhd"]}),
    Hostile("status_blob_uri with the ftp scheme", 11,
            options={"status_blob_uri": "ftp://127.0.0.1/a/c/d?sig=abc"}),
    Hostile("backup_metadata key with a newline", 11, options={"backup_metadata": {"job\n": "x"}}),
    Hostile("backup_metadata value non-ASCII", 11, options={"backup_metadata": {"job": "é"}}),
    Hostile("backup_metadata value with CRLF", 11,
            options={"backup_metadata": {"job": "x\r\nInjected: 1"}}),
    Hostile("max_freeze_seconds 0", 11, options={"max_freeze_seconds": 0}),
    Hostile("max_freeze_seconds a billion", 11, options={"max_freeze_seconds": 10**9}),
    Hostile("max_freeze_seconds not a number", ARGSPEC, options={"max_freeze_seconds": "soon"}),
    Hostile("snapshot_timeout NaN", 11, options={"snapshot_timeout": "nan"}),
    Hostile("snapshot_timeout negative", 11, options={"snapshot_timeout": -1}),
    Hostile("state_dir relative", 11, options={"state_dir": "state"}),
    Hostile("state_dir a file", 2, setup=file_state_dir),
    Hostile("state_dir under /proc", 12, options={"state_dir": "/proc/no/such/dir"}),
    Hostile("freeze_mounts a plain directory", 123, options={"freeze_mounts": ["/usr/share"]}),
    Hostile("freeze_mounts a tmpfs", 123, options={"freeze_mounts": ["/dev/shm"]}),
    Hostile("freeze_mounts relative", 123, options={"freeze_mounts": ["mnt"]}),
    Hostile("log_dir not writable (a warning)", 0, scripts=True,
            options={"log_dir": "/proc/no/such/dir"}),
]  # fmt: skip

SCRIPTS = ["pre-start", "pre-end", "post-start", "post-end"]


@pytest.mark.parametrize("hostile", CORPUS, ids=[case.name for case in CORPUS])
def test_hostile_input(
    figures, make_app, meter, blob_disks, azurite, loop_ext4, run_dirs, tmp_path, hostile
):
    scenario = figures.scenario(
        "hostile-input", "input", "malformed and hostile input", deadline=DEADLINE
    )
    app = make_app()
    copy = tmp_path / "app-copy"
    copy.mkdir(mode=0o700)
    for path in (app.config_path, app.pre, app.post):
        (copy / path.name).write_bytes(path.read_bytes())
    disk = blob_disks(1)[0]
    ctx = Ctx(app, tmp_path, disk, loop_ext4)
    args = snapshot_args([disk], app, run_dirs, [loop_ext4], max_freeze_seconds=DEADLINE)
    with scenario.case(hostile.name) as case:
        if hostile.setup:
            args.update(hostile.setup(ctx) or {})
        args.update(hostile.options)
        args = {key: value for key, value in args.items() if value is not DELETE}
        result, process = run_module_process(args, tmp_path)
        case.module_output(process)
        case.frozen(meter, process.started, BOUND)
        case.check(result is not None, "no JSON result")
        result = result or {}
        if hostile.code is ARGSPEC:
            case.check(result.get("failed") and "status_code" not in result, summary(result))
        else:
            case.check(result.get("status_code") == hostile.code, summary(result))
        if hostile.framework is not None:
            message = result.get("message", "")
            case.check(
                f"pre/post-script framework: {hostile.framework} " in message,
                f"the message does not name {hostile.framework}: {message[:300]}",
            )
        case.check(app.entries() == (SCRIPTS if hostile.scripts else []), f"{app.entries()}")
        case.check(
            "root:" not in process.stdout, "the content of a refused file reached the output"
        )
        if hostile.name == "shell metacharacters and unicode in parameters":
            line = app.journal.read_text().splitlines()[0]
            case.check(line == "pre-start " + " ".join(SHELL_PARAMS), f"parameters: {line!r}")
        scenario.note("refused by Ansible" if hostile.code is ARGSPEC else f"code {hostile.code}")


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 60 and len({case.name for case in CORPUS}) == len(CORPUS)
