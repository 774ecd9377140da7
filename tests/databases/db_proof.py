"""The restore proof: snapshots of a database under load, each restored and started, rows checked.

One ``Experiment`` per database. The data directory lives on a blob-backed disk (an ext4 on a
loop device whose every write lands in an Azurite page blob). While a writer commits and records
each acknowledged transaction (and, for PostgreSQL, pgbench runs beside it), the snapshot module
takes snapshots, alternately with the collection's quiesce scripts (``scripts``) and without any
(``none``: no configuration, so a file-system-consistent snapshot: freeze, snapshot, thaw). Each
snapshot is then restored with the snapshot_restore module into a new blob, attached as a new
disk, and the database is started on it with its own port, and checked: every transaction
acknowledged before the pre-script finished (``none``: before the snapshot run started) must be
there, the running totals must match the rows, and the server's own integrity checks must pass.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from db_servers import MariadbServer, PostgresServer
from db_writer import SCHEMA

from harness.azurite import Azurite
from harness.blobdisk import BlobDisk
from harness.modules import run_module
from harness.scriptset import ScriptSet

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "roles" / "configure_prepost" / "files" / "databases"
# Small on purpose: Azurite checks a copy source's SAS by downloading the whole source into one
# string (about 2 s per 100 MiB, and HTTP 500 from 512 MiB up), and a restore waits for that.
DISK_BYTES = 256 * 1024**2
RESTORE_TIMEOUT = 120
# Beside the writer's own load: the load of issue 19's report, more than the blob disk writes
# back during a CHECKPOINT; unthrottled, pgbench only starves the 2 cores.
PGBENCH_CLIENTS, PGBENCH_TPS = 4, 200
DATA_SUBDIR = "data"
HOST_LOCK_WAIT = 300.0  # seconds another snapshot run on this host may hold the host lock
EPOCH = re.compile(r"(?:locked_at|quiesced_at)=([\d.]+)")
HELD = re.compile(r"held_ms=(\d+)")
CHECKPOINT = re.compile(r"checkpoint_ms=(\d+)")
SERVERS = {"postgresql": PostgresServer, "mariadb": MariadbServer}


@dataclass
class Snapshot:
    """One snapshot run and, later, what its restore showed."""

    index: int
    mode: str  # "scripts" or "none"
    started: float  # epoch seconds, taken by the test before the module ran
    ended: float
    status_name: str
    consistency: str
    snapshot: str | None
    quiesced_at: float | None  # the pre-script's own word: when the database was quiesced
    hold_ms: int | None  # how long a lock was held (MariaDB); 0 for PostgreSQL (no lock)
    checkpoint_ms: int | None
    writer_stall_ms: int = 0  # the longest gap between acknowledgements during the run
    writer_tps_pre_script: float | None = None  # the writer's commits/s during the pre-script
    restored: bool = False
    started_ok: bool = False
    start_seconds: float | None = None
    recovery: dict = field(default_factory=dict)
    rows_required: int = 0  # acknowledged before the cut-off: must all be there
    rows_found: int = 0
    missing: list = field(default_factory=list)
    unknown_rows: int = 0  # rows the writer never started: must be none
    totals_match: bool | None = None
    integrity_problems: list = field(default_factory=list)
    error: str | None = None
    timings: dict = field(default_factory=dict)  # seconds: restore, attach, start, checks
    module_timings: dict = field(default_factory=dict)  # the snapshot module's, in ms
    pre_script: str = ""  # what the pre-script said (its last line)
    message: str = ""  # the snapshot module's message

    @property
    def cutoff(self) -> float:
        return self.quiesced_at if self.mode == "scripts" else self.started

    @property
    def passed(self) -> bool:
        return (
            self.started_ok
            and not self.missing
            and not self.unknown_rows
            and self.totals_match is True
            and not self.integrity_problems
            and self.error is None
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "cutoff": self.cutoff, "passed": self.passed}


def _last_line(script: dict) -> str:
    """The last line a script wrote, from the module's record of it."""
    lines = [line for line in (script.get("stderr_tail") or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def read_acks(path: Path) -> list[tuple[int, float]]:
    acks = []
    for line in path.read_text().splitlines():
        number, at = line.split()
        acks.append((int(number), float(at)))
    return acks


class Experiment:
    def __init__(
        self,
        kind: str,
        azurite: Azurite,
        attach: Callable[..., BlobDisk],
        workdir: Path,
    ) -> None:
        self.kind = kind
        self.azurite = azurite
        self.attach = attach
        self.workdir = workdir
        self.container = azurite.create_container()
        self.source_blob = f"{kind}-data.vhd"
        self.disk: BlobDisk | None = None
        self.server = None
        self.writer: subprocess.Popen | None = None
        self.pgbench: subprocess.Popen | None = None
        self.acks_file = workdir / "acks.txt"
        self.snapshots: list[Snapshot] = []
        self.config_path: Path | None = None
        self.state_dir = workdir / "quiesce-state"
        # Sockets and server logs, where the servers' own users can reach them (tmp_path is 0700).
        self.run_root = Path(tempfile.mkdtemp(prefix="appconsistent-db-"))
        self.run_root.chmod(0o755)

    # --- the source database under load ---------------------------------------------------

    def start_source(self) -> None:
        self.azurite.create_page_blob(self.source_blob, DISK_BYTES, container=self.container)
        sas = self.azurite.blob_sas(self.container, self.source_blob)
        self.disk = self.attach(sas, mkfs="ext4", mount=True)
        self.server = SERVERS[self.kind](
            Path(self.disk.mount_point) / DATA_SUBDIR, self.run_root / "source"
        )
        self.server.init()
        self.server.start()
        self._create_schema()
        self.config_path = self._deploy_scripts()

    def _create_schema(self) -> None:
        if self.kind == "postgresql":
            with self.server.connect() as conn:
                for statement in SCHEMA["postgresql"]:
                    conn.execute(statement)
            bench = [str(PostgresServer.BIN / "pgbench"), "-h", "127.0.0.1", "-p"]
            subprocess.run(
                ["runuser", "-u", "postgres", "--", *bench, str(self.server.port), "-i", "-q",
                 "-s", "1", "postgres"],
                check=True, capture_output=True, cwd="/", timeout=120,
            )  # fmt: skip
        else:
            user, password = MariadbServer.WRITER
            self.server.sql(
                "CREATE DATABASE proof; "
                f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
                f"GRANT ALL ON proof.* TO '{user}'@'127.0.0.1';"
            )
            for statement in SCHEMA["mariadb"]:
                self.server.sql(f"USE proof; {statement}")

    def _deploy_scripts(self) -> Path:
        """The shipped scripts and helper, root-owned 0700, and their configuration (0600)."""
        directory = self.workdir / "prepost"
        helper = directory / "hold-lock.py"
        self.state_dir.mkdir(mode=0o700)
        if self.kind == "postgresql":
            params = [f"host={self.server.socket_dir}", f"port={self.server.port}"]
        else:
            params = [f"socket={self.server.socket}", f"helper={helper}"]
        params.append(f"state_dir={self.state_dir}")
        scripts = ScriptSet(
            directory,
            (SCRIPTS / f"{self.kind}-pre.sh").read_text(),
            (SCRIPTS / f"{self.kind}-post.sh").read_text(),
            params=(params, params),
        )
        scripts.write_script(helper, (SCRIPTS / "hold-lock.py").read_text())
        return scripts.config_path

    def start_load(self, clients: int = PGBENCH_CLIENTS, rate: int = PGBENCH_TPS) -> None:
        self.writer = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("db_writer.py")), self.kind,
             str(self.server.port), str(self.acks_file)],
        )  # fmt: skip
        if self.kind == "postgresql":
            self.pgbench = subprocess.Popen(
                ["runuser", "-u", "postgres", "--", str(PostgresServer.BIN / "pgbench"),
                 "-h", "127.0.0.1", "-p", str(self.server.port), "-c", str(clients),
                 "-R", str(rate), "-T", "600", "-n", "postgres"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
            )  # fmt: skip

    def stop_load(self) -> None:
        for process in (self.pgbench, self.writer):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(30)
        if self.writer is not None and self.writer.returncode != 0:
            raise AssertionError(f"the writer failed with {self.writer.returncode}")

    def close(self) -> None:
        """Stop whatever still runs (also after a failure); the disks go with their fixture."""
        for process in (self.pgbench, self.writer):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(30)
        if self.server is not None:
            self.server.stop()
        shutil.copytree(
            self.run_root,
            self.workdir / "server-logs",
            ignore=shutil.ignore_patterns(".s.PGSQL.*", "*.sock"),  # a killed server's sockets
            dirs_exist_ok=True,
        )
        shutil.rmtree(self.run_root, ignore_errors=True)

    def server_version(self) -> str:
        if self.kind == "postgresql":
            with self.server.connect() as conn:
                return "PostgreSQL " + conn.execute("SHOW server_version").fetchone()[0]
        return "MariaDB " + self.server.sql("SELECT VERSION()").strip()

    # --- snapshots ------------------------------------------------------------------------

    def take(self, mode: str) -> Snapshot:
        config = self.config_path if mode == "scripts" else self.workdir / "no-such-config.json"
        args = {
            "disks": [self.azurite.blob_sas(self.container, self.source_blob)],
            "config_path": str(config),
            "freeze_mounts": [self.disk.mount_point],
            "state_dir": str(self.workdir / "module-state"),
            "log_dir": str(self.workdir / "module-log"),
            "max_freeze_seconds": 30,
        }
        # One snapshot run per host: while another test's run holds the host lock, wait.
        waited_until = time.monotonic() + HOST_LOCK_WAIT
        while True:
            started = time.time()
            result = run_module("snapshot", args, timeout=180)
            ended = time.time()
            busy = "holds the host lock" in str(result.get("msg") or result.get("message"))
            if not busy or time.monotonic() > waited_until:
                break
            time.sleep(0.5)
        scripts = json.dumps(result.get("scripts", {}))
        epoch, held = EPOCH.search(scripts), HELD.search(scripts)
        checkpoint = CHECKPOINT.search(scripts)
        disk = (result.get("snapshots") or [{}])[0]
        snapshot = Snapshot(
            index=len(self.snapshots),
            mode=mode,
            started=started,
            ended=ended,
            status_name=result.get("status_name", "?"),
            consistency=result.get("consistency", "?"),
            snapshot=disk.get("snapshot"),
            quiesced_at=float(epoch.group(1)) if epoch else None,
            hold_ms=int(held.group(1))
            if held
            else (0 if epoch and self.kind == "postgresql" else None),
            checkpoint_ms=int(checkpoint.group(1)) if checkpoint else None,
            module_timings=result.get("timings", {}),
            pre_script=_last_line(result.get("scripts", {}).get("pre", {})),
            message=str(result.get("msg") or result.get("message") or "")[:500],
        )
        self.snapshots.append(snapshot)
        return snapshot

    def measure_stalls(self) -> None:
        """The longest gap between two acknowledgements during each snapshot run."""
        acks = read_acks(self.acks_file)
        for snapshot in self.snapshots:
            times = [at for _number, at in acks if snapshot.started - 1 <= at <= snapshot.ended + 1]
            gaps = [later - earlier for earlier, later in zip(times, times[1:])]
            snapshot.writer_stall_ms = int(max(gaps, default=0) * 1000)
            pre_ms = snapshot.module_timings.get("pre_ms")
            if snapshot.quiesced_at is not None and pre_ms:
                begun = snapshot.quiesced_at - pre_ms / 1000
                count = sum(1 for _n, at in acks if begun <= at <= snapshot.quiesced_at)
                snapshot.writer_tps_pre_script = round(count / (pre_ms / 1000), 1)

    # --- restore and check ----------------------------------------------------------------

    def restore_and_check(self, snapshot: Snapshot) -> None:
        """Restore into a new blob, attach, start, check, stop, detach; record everything."""
        acks = read_acks(self.acks_file)
        if snapshot.snapshot is None:
            snapshot.error = f"no snapshot was taken ({snapshot.status_name})"
            return
        target = f"{self.kind}-restore-{snapshot.index}.vhd"
        clock = time.monotonic()
        restored = run_module(
            "snapshot_restore",
            {
                "snapshot_uri": self.azurite.blob_sas(
                    self.container, self.source_blob, permissions="r", snapshot=snapshot.snapshot
                ),
                "destination_uri": self.azurite.blob_sas(self.container, target, permissions="rcw"),
                "timeout": RESTORE_TIMEOUT,
            },
        )
        snapshot.timings["restore"] = round(time.monotonic() - clock, 3)
        if restored.get("failed") or restored.get("action") != "create":
            snapshot.error = f"restore failed: {restored.get('msg')}"
            return
        snapshot.restored = True
        clock = time.monotonic()
        disk = self.attach(self.azurite.blob_sas(self.container, target), mount=True)
        snapshot.timings["attach"] = round(time.monotonic() - clock, 3)
        server = SERVERS[self.kind](
            Path(disk.mount_point) / DATA_SUBDIR, self.run_root / f"restore-{snapshot.index}"
        )
        try:
            if self.kind == "postgresql":
                server.forget_source_lock_file()
            try:
                server.start()
            except Exception as exc:
                snapshot.error = f"the database did not start: {exc}"[:2000]
                return
            snapshot.started_ok = True
            snapshot.start_seconds = round(server.start_seconds, 3)
            snapshot.recovery = server.recovery()
            clock = time.monotonic()
            self._check_rows(snapshot, server, acks)
            snapshot.integrity_problems = server.integrity() + self._pgbench_problems(server)
            snapshot.timings["checks"] = round(time.monotonic() - clock, 3)
        finally:
            clock = time.monotonic()
            server.stop()
            disk.teardown()
            snapshot.timings["stop"] = round(time.monotonic() - clock, 3)

    def _pgbench_problems(self, server) -> list[str]:
        """pgbench's TPC-B invariant: every balance total equals the sum of the history."""
        if self.kind != "postgresql":
            return []
        with server.connect() as conn:
            sums = conn.execute(
                "SELECT (SELECT sum(abalance) FROM pgbench_accounts),"
                " (SELECT sum(bbalance) FROM pgbench_branches),"
                " (SELECT sum(tbalance) FROM pgbench_tellers),"
                " (SELECT coalesce(sum(delta), 0) FROM pgbench_history)"
            ).fetchone()
        return [] if len(set(sums)) == 1 else [f"pgbench balances differ: {sums}"]

    def _check_rows(self, snapshot: Snapshot, server, acks: list[tuple[int, float]]) -> None:
        issued = max((number for number, _at in acks), default=0) + 1  # the one in flight
        required = {number for number, at in acks if at <= snapshot.cutoff}
        tables = ["acked"] + (["acked_myisam"] if self.kind == "mariadb" else [])
        found_in = {}
        with server.connect() as conn:
            cursor = conn.cursor()
            for table in tables:
                cursor.execute(f"SELECT id FROM {table}")
                found_in[table] = {row[0] for row in cursor.fetchall()}
            cursor.execute("SELECT n, s FROM totals")
            totals = cursor.fetchone()
        found = found_in["acked"]
        snapshot.rows_required = len(required)
        snapshot.rows_found = len(found)
        snapshot.missing = sorted(
            f"{table}:{number}" for table, rows in found_in.items() for number in required - rows
        )[:20]
        snapshot.unknown_rows = sum(
            1 for rows in found_in.values() for number in rows if number > issued
        )
        snapshot.totals_match = (
            totals is not None and totals[0] == len(found) and totals[1] == sum(found)
        )
