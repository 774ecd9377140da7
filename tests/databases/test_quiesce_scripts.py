"""The shipped quiesce scripts and their lock helper, run the way the snapshot module runs them
(root, argv, PATH/LANG/HOME only, cwd /), against the test's own PostgreSQL and MariaDB.

Whether a lock is held is judged by the server: a commit from another session must wait while it
is held and go through once it is released, by the post-script, the helper's timer, or the death
of the helper.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pymysql
import pytest
from db_servers import MariadbServer, PostgresServer
from db_writer import SCHEMA

from harness.modules import run_playbook

pytestmark = pytest.mark.root

SCRIPTS = Path(__file__).resolve().parents[2] / "roles/configure_prepost/files/databases"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


@pytest.fixture(scope="module")
def servers_root():
    root = Path(tempfile.mkdtemp(prefix="appconsistent-quiesce-"))
    root.chmod(0o755)  # the servers' own users live below
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mariadb(servers_root):
    server = MariadbServer(servers_root / "mariadb-data", servers_root / "mariadb-run")
    server.init()
    server.start()
    try:
        user, password = MariadbServer.WRITER
        server.sql(
            f"CREATE DATABASE proof; CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}';"
            f" GRANT ALL ON proof.* TO '{user}'@'127.0.0.1';"
        )
        for statement in SCHEMA["mariadb"]:
            server.sql(f"USE proof; {statement}")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def postgresql(servers_root):
    server = PostgresServer(servers_root / "pg-data", servers_root / "pg-run")
    server.init()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def scripts(tmp_path) -> Path:
    """The scripts and helper as the role deploys them: root-owned, 0700, in a 0700 directory."""
    directory = tmp_path / "scripts"
    directory.mkdir(mode=0o700)
    for source in SCRIPTS.iterdir():
        if source.suffix in (".sh", ".py"):
            shutil.copy(source, directory / source.name)
            (directory / source.name).chmod(0o700)
    return directory


def run(script: Path, *params: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(script), *params],
        env=ENV, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


class Committer:
    """Commits one row from another session in a thread; `done` is set when it returned."""

    counter = [1_000_000]

    def __init__(self, server: MariadbServer) -> None:
        self.done = threading.Event()
        self.error: Exception | None = None
        Committer.counter[0] += 1
        number = Committer.counter[0]

        def commit() -> None:
            try:
                with server.connect() as conn:
                    conn.cursor().execute("INSERT INTO acked VALUES (%s, 'x')", (number,))
            except Exception as exc:
                self.error = exc
            self.done.set()

        threading.Thread(target=commit, daemon=True).start()


def mariadb_params(server: MariadbServer, scripts: Path, tmp_path: Path, **extra) -> list[str]:
    values = {
        "socket": server.socket,
        "helper": str(scripts / "hold-lock.py"),
        "state_dir": str(tmp_path / "state"),
        **extra,
    }
    return [f"{key}={value}" for key, value in values.items()]


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphaned holder is reaped by whoever adopted it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def holder_pid(tmp_path: Path) -> int:
    return json.loads((tmp_path / "state" / "holder.pid").read_text())["pid"]


@pytest.mark.parametrize("lock", ["backup_stage", "ftwrl"])
def test_the_lock_holds_commits_until_the_post_script_releases_it(mariadb, scripts, tmp_path, lock):
    params = mariadb_params(mariadb, scripts, tmp_path, lock=lock)
    pre = run(scripts / "mariadb-pre.sh", *params)
    assert pre.returncode == 0, pre.stderr
    assert re.search(
        rf"quiesced: {lock} lock held from locked_at=[\d.]+ acquire_ms=\d+", pre.stderr
    )

    committer = Committer(mariadb)
    assert not committer.done.wait(1.5), "a commit went through while the lock was held"
    # Reads go on.
    assert mariadb.sql("SELECT COUNT(*) >= 0 FROM proof.acked").strip() == "1"

    post = run(scripts / "mariadb-post.sh", *params)
    assert post.returncode == 0, post.stderr
    held = int(re.search(r"released: outcome=released held_ms=(\d+)", post.stderr).group(1))
    assert held >= 1500
    assert committer.done.wait(10) and committer.error is None
    assert not (tmp_path / "state" / "holder.pid").exists()

    again = run(scripts / "mariadb-post.sh", *params)
    assert again.returncode == 0 and "nothing to release" in again.stderr


def test_a_lost_post_script_never_leaves_the_server_locked(mariadb, scripts, tmp_path):
    params = mariadb_params(mariadb, scripts, tmp_path, hold_seconds=2)
    assert run(scripts / "mariadb-pre.sh", *params).returncode == 0
    committer = Committer(mariadb)
    assert committer.done.wait(15) and committer.error is None  # the holder's timer ended it

    post = run(scripts / "mariadb-post.sh", *params)
    assert post.returncode == 1
    assert "outcome=expired" in post.stderr and "was not held until now" in post.stderr


def test_a_killed_holder_releases_the_lock_and_the_post_script_says_so(mariadb, scripts, tmp_path):
    params = mariadb_params(mariadb, scripts, tmp_path)
    assert run(scripts / "mariadb-pre.sh", *params).returncode == 0
    committer = Committer(mariadb)
    assert not committer.done.wait(0.5)
    os.kill(holder_pid(tmp_path), 9)
    assert committer.done.wait(15) and committer.error is None

    post = run(scripts / "mariadb-post.sh", *params)
    assert post.returncode == 1 and "outcome=lost" in post.stderr


def test_a_second_pre_script_replaces_the_first_lock(mariadb, scripts, tmp_path):
    params = mariadb_params(mariadb, scripts, tmp_path)
    assert run(scripts / "mariadb-pre.sh", *params).returncode == 0
    first = holder_pid(tmp_path)
    assert run(scripts / "mariadb-pre.sh", *params).returncode == 0  # no post in between
    second = holder_pid(tmp_path)
    assert first != second and not running(first)
    assert run(scripts / "mariadb-post.sh", *params).returncode == 0
    assert Committer(mariadb).done.wait(10)


def waiting_sessions(server: MariadbServer, blocker_id: int) -> list[tuple]:
    """Sessions other than the blocker and this query that wait for something."""
    return [
        line.split("\t")
        for line in server.sql(
            "SELECT ID, STATE, INFO FROM information_schema.PROCESSLIST"
            f" WHERE ID NOT IN ({blocker_id}, CONNECTION_ID()) AND COMMAND = 'Query'"
        ).splitlines()
    ]


@pytest.mark.parametrize("lock", ["backup_stage", "ftwrl"])
def test_the_lock_is_not_waited_for_beyond_acquire_timeout(mariadb, scripts, tmp_path, lock):
    """The server gives up the wait too (lock_wait_timeout), not only the helper: once the
    pre-script failed, no session of it still waits for the lock while the blocker holds on."""
    blocker = pymysql.connect(unix_socket=mariadb.socket, user="root", database="proof")
    try:
        cursor = blocker.cursor()
        cursor.execute("SELECT CONNECTION_ID()")
        blocker_id = cursor.fetchone()[0]
        cursor.execute("LOCK TABLES acked_myisam WRITE")
        started = time.monotonic()
        params = mariadb_params(mariadb, scripts, tmp_path, acquire_timeout=2, lock=lock)
        pre = run(scripts / "mariadb-pre.sh", *params)
        elapsed = time.monotonic() - started
        assert pre.returncode == 1 and "was not taken" in pre.stderr, pre.stderr
        assert elapsed < 2 + 5, f"the pre-script waited {elapsed:.1f} s for a 2 s lock wait"
        assert not (tmp_path / "state" / "holder.pid").exists()
        assert waiting_sessions(mariadb, blocker_id) == []
    finally:
        blocker.close()
    assert Committer(mariadb).done.wait(10)


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ("group-writable helper", "must be owned by root and not group/other-writable"),
        ("missing helper", "is missing"),
        ("unknown parameter", "unknown parameter 'colour=blue'"),
        ("no server", "cannot query the server"),
    ],
)
def test_the_pre_script_refuses_and_holds_nothing(mariadb, scripts, tmp_path, problem, expected):
    extra: dict = {}
    if problem == "group-writable helper":
        (scripts / "hold-lock.py").chmod(0o770)
    elif problem == "missing helper":
        extra["helper"] = str(tmp_path / "nowhere.py")
    elif problem == "no server":
        extra["socket"] = str(tmp_path / "no.sock")
    params = mariadb_params(mariadb, scripts, tmp_path, **extra)
    if problem == "unknown parameter":
        params.append("colour=blue")
    pre = run(scripts / "mariadb-pre.sh", *params)
    assert pre.returncode == 1 and expected in pre.stderr, pre.stderr
    assert not (tmp_path / "state" / "holder.pid").exists()
    assert Committer(mariadb).done.wait(10)


def checkpoints(server: PostgresServer) -> int:
    with server.connect() as conn:
        return conn.execute("SELECT checkpoints_req FROM pg_stat_bgwriter").fetchone()[0]


def test_the_postgresql_pre_script_checkpoints_and_holds_nothing(postgresql, scripts, tmp_path):
    params = [f"host={postgresql.socket_dir}", f"port={postgresql.port}",
              f"state_dir={tmp_path / 'pg-state'}"]  # fmt: skip
    before = checkpoints(postgresql)
    pre = run(scripts / "postgresql-pre.sh", *params)
    assert pre.returncode == 0, pre.stderr
    assert checkpoints(postgresql) == before + 1
    assert re.search(
        r"quiesced: quiesced_at=[\d.]+ checkpoint=taken checkpoint_ms=\d+ wal_mb=\d+", pre.stderr
    )
    # Writes go on: nothing is held.
    with postgresql.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS during (n int)")
        conn.execute("INSERT INTO during VALUES (1)")
    post = run(scripts / "postgresql-post.sh", *params)
    assert post.returncode == 0 and "no lock to release" in post.stderr
    assert not (tmp_path / "pg-state" / "quiesced").exists()
    again = run(scripts / "postgresql-post.sh", *params)
    assert again.returncode == 0 and "nothing to undo" in again.stderr


def pg_params(server: PostgresServer, tmp_path: Path, *extra: str) -> list[str]:
    return [f"host={server.socket_dir}", f"port={server.port}",
            f"state_dir={tmp_path / 'pg-state'}", *extra]  # fmt: skip


def write_wal(server: PostgresServer, megabytes: int) -> None:
    """Changes of about `megabytes` MB of WAL since the last checkpoint."""
    with server.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS walfill (pad text)")
        conn.execute(
            "INSERT INTO walfill SELECT repeat('w', 900) FROM generate_series(1, %s)",
            (megabytes * 1100,),
        )


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("checkpoint=never", "no CHECKPOINT: checkpoint=never"),
        ("max_wal_mb=1", "more than max_wal_mb=1"),
    ],
)
def test_the_postgresql_pre_script_skips_a_checkpoint_that_may_not_fit(
    postgresql, scripts, tmp_path, setting, said
):
    run(scripts / "postgresql-pre.sh", *pg_params(postgresql, tmp_path))  # a fresh redo point
    write_wal(postgresql, 3)
    before = checkpoints(postgresql)
    pre = run(scripts / "postgresql-pre.sh", *pg_params(postgresql, tmp_path, setting))
    assert pre.returncode == 0, pre.stderr
    assert said in pre.stderr and "checkpoint=skipped checkpoint_ms=0" in pre.stderr
    assert checkpoints(postgresql) == before  # the server did not checkpoint
    assert run(scripts / "postgresql-post.sh", *pg_params(postgresql, tmp_path)).returncode == 0


def test_the_postgresql_pre_script_skips_when_the_last_pace_does_not_fit(
    postgresql, scripts, tmp_path
):
    """The pace of the last CHECKPOINT (kept in state_dir) predicts this one's time."""
    params = pg_params(postgresql, tmp_path, "timeout=10")
    assert run(scripts / "postgresql-pre.sh", *params).returncode == 0
    write_wal(postgresql, 3)
    # 5 s per MB, measured now: about 15 s for 3 MB, over half of the 8 s left.
    (tmp_path / "pg-state" / "pace").write_text(f"5000 {int(time.time())} completed\n")
    before = checkpoints(postgresql)
    pre = run(scripts / "postgresql-pre.sh", *params)
    assert pre.returncode == 0 and "at the last one's pace" in pre.stderr, pre.stderr
    assert checkpoints(postgresql) == before
    # A pace older than a day is measured again: the checkpoint is taken.
    (tmp_path / "pg-state" / "pace").write_text(f"5000 {int(time.time()) - 90000} cancelled\n")
    pre = run(scripts / "postgresql-pre.sh", *params)
    assert pre.returncode == 0 and "checkpoint=taken" in pre.stderr, pre.stderr
    assert checkpoints(postgresql) == before + 1


def test_the_postgresql_pre_script_fails_within_its_timeout(postgresql, scripts, tmp_path):
    params = [f"host={postgresql.socket_dir}", "port=1", "timeout=5",
              f"state_dir={tmp_path / 'pg-state'}"]  # fmt: skip
    started = time.monotonic()
    pre = run(scripts / "postgresql-pre.sh", *params)
    assert pre.returncode == 1 and "cannot query the server" in pre.stderr
    assert time.monotonic() - started < 15
    assert run(scripts / "postgresql-post.sh", *params).returncode == 0
    assert run(scripts / "postgresql-pre.sh", "colour=blue").returncode == 1


def test_the_role_deploys_the_scripts_and_they_work_from_there(mariadb, tmp_path):
    config_dir = tmp_path / "azure"
    params = [f"socket={mariadb.socket}", f"helper={config_dir}/vmsnapshot-hold-lock",
              f"state_dir={tmp_path / 'state'}"]  # fmt: skip
    play = run_playbook(
        str(Path(__file__).with_name("deploy-mariadb.yml")),
        extra_vars={"config_dir": str(config_dir), "db_params": params},
    )
    assert play.returncode == 0, play.stdout + play.stderr
    config = json.loads((config_dir / "VMSnapshotScriptPluginConfig.json").read_text())
    assert config["preScriptParams"] == params == config["postScriptParams"]
    for name in ("pre-script.sh", "post-script.sh", "vmsnapshot-hold-lock"):
        info = (config_dir / name).stat()
        assert (info.st_uid, info.st_mode & 0o777) == (0, 0o700)
    assert (config_dir / "vmsnapshot-hold-lock").read_bytes() == (
        SCRIPTS / "hold-lock.py"
    ).read_bytes()

    pre = run(Path(config["preScriptLocation"]), *config["preScriptParams"])
    assert pre.returncode == 0, pre.stderr
    committer = Committer(mariadb)
    assert not committer.done.wait(1)
    post = run(Path(config["postScriptLocation"]), *config["postScriptParams"])
    assert post.returncode == 0 and "outcome=released" in post.stderr
    assert committer.done.wait(10)

    deployment = {"config_dir": str(config_dir), "db_params": params}
    again = run_playbook(str(Path(__file__).with_name("deploy-mariadb.yml")), extra_vars=deployment)
    assert again.returncode == 0 and re.search(r"changed=0\b", again.stdout), again.stdout
    removed = run_playbook(
        str(Path(__file__).with_name("deploy-mariadb.yml")),
        extra_vars={**deployment, "configure_prepost_state": "absent"},
    )
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert sorted(path.name for path in config_dir.iterdir()) == []
