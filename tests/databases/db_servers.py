"""The test's own PostgreSQL and MariaDB instances, started from Debian's packages.

Each server gets a data directory the test chooses (on a blob-backed disk), its own port on
127.0.0.1 and its own socket directory, runs as the package's service user, and is stopped by its
PID (never by name). Both classes offer the same small surface: ``init()`` a new data directory,
``start()`` on one (a restored one too: the time it took and the recovery it did are recorded),
``connect()`` for the Python driver, ``integrity()`` for the server's own checks, ``stop()``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg
import pymysql

START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(argv: list[str], *, timeout: float = 120, **options) -> subprocess.CompletedProcess:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, **options
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


def _owned_dir(path: Path, user: str, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.chown(path, user, user)
    path.chmod(mode)
    return path


def _end(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM (a fast, clean shutdown for both servers), then SIGKILL, by PID."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not os.path.exists(f"/proc/{pid}") or _zombie(pid):
                return
            time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


class PostgresServer:
    """A PostgreSQL cluster of the newest installed major version, run as ``postgres``."""

    USER = "postgres"
    BIN = Path(
        sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))[-1]
    )

    def __init__(self, datadir: Path, run_dir: Path) -> None:
        self.datadir = datadir
        self.run_dir = _owned_dir(run_dir, self.USER, 0o755)
        self.port = free_port()
        self.log = run_dir / "server.log"
        self.pid: int | None = None
        self.start_seconds: float | None = None

    @property
    def socket_dir(self) -> str:
        return str(self.run_dir)

    def _as_user(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return _run(["runuser", "-u", self.USER, "--", *argv], timeout=timeout, cwd="/")

    def init(self) -> None:
        """A new cluster with data checksums (so damaged pages are found, not read)."""
        _owned_dir(self.datadir, self.USER)
        self._as_user(
            str(self.BIN / "initdb"), "-D", str(self.datadir), "--auth=trust", "--data-checksums"
        )

    def start(self) -> None:
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.socket_dir} -c shared_buffers=32MB "
            "-c max_wal_size=64MB -c checkpoint_timeout=30min -c log_checkpoints=on "
            # Epoch timestamps, so the test can tell which checkpoint ran when.
            "-c log_line_prefix='%n [%p] '"
        )
        started = time.monotonic()
        self._as_user(
            str(self.BIN / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.log),
            "-o", options, "-w", "-t", str(int(START_TIMEOUT)), "start",
            timeout=START_TIMEOUT + 10,
        )  # fmt: skip
        self.start_seconds = time.monotonic() - started
        self.pid = int((self.datadir / "postmaster.pid").read_text().split()[0])

    def forget_source_lock_file(self) -> None:
        """A snapshot of a running server holds its postmaster.pid; here that server still runs
        (same host), so PostgreSQL would refuse to start on the copy."""
        with contextlib.suppress(FileNotFoundError):
            (self.datadir / "postmaster.pid").unlink()

    def recovery(self) -> dict:
        """What the start of this server had to do, from its log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        redo = re.search(r"redo done at \S+ .*?elapsed: ([\d.]+) s", text)
        return {
            "crash_recovery": "database system was not properly shut down" in text,
            "redo_seconds": float(redo.group(1)) if redo else 0.0,
        }

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.USER, dbname="postgres", autocommit=True
        )

    def integrity(self) -> list[str]:
        """amcheck over every B-tree index (with the heap they index) and every table's heap;
        the problems found, empty when there are none."""
        problems = []
        with self.connect() as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            indexes = conn.execute(
                "SELECT c.oid::regclass::text FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam"
                " WHERE a.amname = 'btree' AND c.relpersistence = 'p'"
            ).fetchall()
            for (index,) in indexes:
                try:
                    conn.execute("SELECT bt_index_check(%s::regclass, true)", (index,))
                except psycopg.Error as exc:
                    problems.append(f"index {index}: {exc}".strip())
            tables = conn.execute(
                "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relkind = 'r'"
                " AND c.relpersistence = 'p'"
            ).fetchall()
            for (table,) in tables:
                for row in conn.execute("SELECT * FROM verify_heapam(%s::regclass)", (table,)):
                    problems.append(f"table {table}: {row}")
        return problems

    def stop(self) -> None:
        if self.pid is not None:
            _end(self.pid)
            self.pid = None


class MariadbServer:
    """A MariaDB server (mariadbd), run as ``mysql`` with no option files but its own."""

    USER = "mysql"
    WRITER = ("writer", "writer-password")  # a test account on 127.0.0.1 only

    def __init__(self, datadir: Path, run_dir: Path) -> None:
        self.datadir = datadir
        self.run_dir = _owned_dir(run_dir, self.USER, 0o755)
        self.port = free_port()
        self.log = run_dir / "server.log"
        self.process: subprocess.Popen | None = None
        self.start_seconds: float | None = None

    @property
    def socket(self) -> str:
        return str(self.run_dir / "mysqld.sock")

    def init(self) -> None:
        _owned_dir(self.datadir, self.USER)
        _run(
            ["mariadb-install-db", "--no-defaults", f"--user={self.USER}",
             f"--datadir={self.datadir}", "--skip-test-db",
             "--auth-root-authentication-method=socket"],
            cwd="/",
        )  # fmt: skip

    def start(self) -> None:
        argv = [
            "mariadbd", "--no-defaults", f"--user={self.USER}", f"--datadir={self.datadir}",
            f"--socket={self.socket}", f"--port={self.port}", "--bind-address=127.0.0.1",
            f"--pid-file={self.run_dir / 'mysqld.pid'}", f"--log-error={self.log}",
            "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M",
            # A table the snapshot caught mid-write must show in CHECK TABLE, not be repaired
            # silently when first opened.
            "--myisam-recover-options=OFF", "--skip-name-resolve",
        ]  # fmt: skip
        started = time.monotonic()
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, cwd="/")
        deadline = started + START_TIMEOUT
        while True:
            ping = subprocess.run(
                ["mariadb-admin", "--no-defaults", f"--socket={self.socket}", "-uroot", "ping"],
                capture_output=True, timeout=30, check=False,
            )  # fmt: skip
            if ping.returncode == 0:
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
                self.stop()
                raise RuntimeError(f"mariadbd did not start: {log}")
            time.sleep(0.1)
        self.start_seconds = time.monotonic() - started

    def recovery(self) -> dict:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return {
            "crash_recovery": "Starting crash recovery" in text,
            "log_warnings": [
                line.strip()
                for line in text.splitlines()
                if re.search(r"\[(ERROR|Warning)\]", line)
                and re.search(r"crash|corrupt|not closed|repair", line, re.I)
            ],
        }

    def sql(self, statement: str) -> str:
        """Run SQL as root over the socket (unix_socket authentication)."""
        return _run(
            ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "--batch",
             "--skip-column-names", "-e", statement],
        ).stdout  # fmt: skip

    def connect(self) -> pymysql.Connection:
        user, password = self.WRITER
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user=user,
            password=password,
            database="proof",
            autocommit=True,
        )

    def integrity(self) -> list[str]:
        """CHECK TABLE ... EXTENDED on every table of the test's schema; every line that is not
        a plain OK."""
        tables = self.sql("SHOW TABLES FROM proof").split()
        if not tables:
            return ["no tables in schema proof"]
        report = self.sql(f"CHECK TABLE {', '.join(f'proof.{t}' for t in tables)} EXTENDED")
        return [
            line
            for line in report.splitlines()
            if line.strip() and not re.fullmatch(r"\S+\tcheck\tstatus\tOK", line.strip())
        ]

    def stop(self) -> None:
        if self.process is not None:
            _end(self.process.pid)
            self.process = None
