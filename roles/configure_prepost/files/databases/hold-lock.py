# Copyright: contributors to appconsistent.vmsnapshot
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hold a database lock across a snapshot in a supervised session, with a timer of its own.

Some locks live only as long as the session that took them (MariaDB/MySQL ``BACKUP STAGE`` and
``FLUSH TABLES WITH READ LOCK``). The pre-script cannot keep that session open itself, so it runs
``acquire``: a holder process starts the database's command-line client, sends the lock
statements, waits until the server answers them, and reports back; ``acquire`` then exits 0 and
the pre-script ends, while the holder keeps the session (and the lock) open. The post-script
runs ``release``: the holder sends the release statements, closes the session and records the
outcome. Whatever happens in between, the lock ends:

* after ``--hold-seconds`` the holder releases it by itself (a lost post-script, a killed
  snapshot run): the outcome is then ``expired`` and ``release`` exits non-zero, because the lock
  may have ended before the snapshot;
* if the holder dies, even by SIGKILL, the client reads end-of-file and leaves, and the server
  ends the session and its locks;
* if the client dies or the server drops the session, the outcome is ``lost``.

Usage (as root, with Python 3; the state directory must be root's and not group/other-writable)::

    python3 hold-lock.py acquire --state-dir DIR --hold-seconds 60 --acquire-timeout 20 \
        --lock-sql 'FLUSH TABLES WITH READ LOCK;' --release-sql 'UNLOCK TABLES;' \
        -- mariadb --batch --skip-column-names --unbuffered
    python3 hold-lock.py release --state-dir DIR

``acquire`` prints ``locked_at=<epoch seconds> acquire_ms=<n>``; ``release`` prints
``outcome=<released|expired|lost> held_ms=<n>``, or ``outcome=none`` when nothing was held.
The client must print the result of ``SELECT '<text>';`` as a line of its own (mariadb/mysql
``--batch --skip-column-names``, psql ``-At``) and end its session at end of input.
Standard library only, Python 3.6 or later.
"""

import argparse
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time

MARKER = "vmsnapshot-hold-lock"
RELEASE_TIMEOUT = 10.0
STOP_TIMEOUT = 20.0
NOTIFY_GRACE = 5.0


class HoldError(Exception):
    pass


def _start_time(pid):
    """The kernel's start time of a process, to tell a reused PID apart; None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _paths(state_dir):
    return {
        "pid": os.path.join(state_dir, "holder.pid"),
        "result": os.path.join(state_dir, "result.json"),
        "log": os.path.join(state_dir, "holder.log"),
    }


def _check_state_dir(state_dir):
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    info = os.lstat(state_dir)
    if not os.path.isdir(state_dir) or os.path.islink(state_dir):
        raise HoldError(f"state directory {state_dir} is not a directory")
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise HoldError(
            f"state directory {state_dir} must be owned by uid {os.geteuid()} and not "
            "group/other-writable"
        )


def _write_json(path, data):
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(data, handle)
    os.replace(temporary, path)


def _read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _live_holder(paths):
    """(pid, start) of the recorded holder when it still runs, else None."""
    record = _read_json(paths["pid"])
    if not record:
        return None
    if _start_time(record["pid"]) != record["start"]:
        return None
    return record["pid"], record["start"]


class Session:
    """The database client, fed statements on stdin; its stdout is read line by line."""

    def __init__(self, argv, log):
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, close_fds=True
        )
        self.buffer = b""

    def send(self, sql, marker):
        text = f"{sql}\nSELECT '{marker}';\n"
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def wait_for(self, marker, deadline, wake_fd):
        """'marker' once the client printed it; 'wake' when wake_fd is readable first;
        'eof' when the client ended; 'timeout' at the deadline."""
        out = self.process.stdout.fileno()
        watched = [out] if wake_fd is None else [out, wake_fd]
        while True:
            lines = self.buffer.split(b"\n")
            self.buffer = lines.pop()
            if marker.encode() in [line.strip() for line in lines]:
                return "marker"
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            ready = select.select(watched, [], [], left)[0]
            if wake_fd is not None and wake_fd in ready:
                return "wake"
            if out in ready:
                chunk = os.read(out, 65536)
                if not chunk:
                    return "eof"
                self.buffer += chunk

    def close(self):
        """End of input ends the session; a client that does not leave is killed."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(RELEASE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _hold(args, paths, notify_fd):
    """The holder process: take the lock, report, keep it until released or expired."""
    wake_read, wake_write = os.pipe()

    def on_signal(signum, frame):
        os.write(wake_write, b"x")

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    started = time.monotonic()
    with open(paths["log"], "ab") as log:
        session = Session(args.client, log)
        session.send(args.lock_sql, MARKER + ":locked")
        got = session.wait_for(MARKER + ":locked", started + args.acquire_timeout, wake_read)
        if got != "marker":
            session.process.kill()
            session.close()
            reason = {
                "eof": f"the client ended (see {paths['log']})",
                "timeout": f"no lock within {args.acquire_timeout} s",
                "wake": "asked to stop while acquiring",
            }[got]
            os.write(notify_fd, f"failed {reason}".encode())
            return 1
        locked_at, locked = time.time(), time.monotonic()
        _write_json(paths["pid"], {"pid": os.getpid(), "start": _start_time(os.getpid())})
        acquire_ms = int((locked - started) * 1000)
        os.write(notify_fd, f"locked {locked_at:.6f} {acquire_ms}".encode())
        os.close(notify_fd)

        got = session.wait_for("never printed", locked + args.hold_seconds, wake_read)
        outcome = {"wake": "released", "timeout": "expired", "eof": "lost"}[got]
        if got != "eof":
            session.send(args.release_sql, MARKER + ":released")
            deadline = time.monotonic() + RELEASE_TIMEOUT
            if session.wait_for(MARKER + ":released", deadline, None) != "marker":
                outcome = "release-failed"  # closing the session below still ends the lock
        ended = time.monotonic()
        session.close()
    _write_json(
        paths["result"],
        {
            "outcome": outcome,
            "locked_at": locked_at,
            "held_ms": int((ended - locked) * 1000),
            "acquire_ms": acquire_ms,
        },
    )
    os.unlink(paths["pid"])
    return 0


def acquire(args):
    paths = _paths(args.state_dir)
    _check_state_dir(args.state_dir)
    if _live_holder(paths):
        # A run whose post-script never came: end that lock before taking a new one.
        release(args, quiet=True)
    for stale in (paths["pid"], paths["result"]):
        if os.path.exists(stale):
            os.unlink(stale)
    notify_read, notify_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(notify_read)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        log = os.open(paths["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        code = 1
        try:
            code = _hold(args, paths, notify_write)
        except BaseException as exc:  # the holder reports every failure, then leaves
            sys.stderr.write(f"hold-lock: holder failed: {exc!r}\n")
        finally:
            os._exit(code)
    os.close(notify_write)
    deadline = time.monotonic() + args.acquire_timeout + NOTIFY_GRACE
    message = b""
    while time.monotonic() < deadline:
        if not select.select([notify_read], [], [], deadline - time.monotonic())[0]:
            break
        chunk = os.read(notify_read, 4096)
        if not chunk:
            break
        message += chunk
    words = message.decode().split(" ", 1)
    if words[0] == "locked":
        locked_at, acquire_ms = words[1].split()
        print(f"locked_at={locked_at} acquire_ms={acquire_ms}")
        return 0
    if not message:
        os.kill(pid, signal.SIGKILL)  # a silent holder: its client sees end-of-file and leaves
    os.waitpid(pid, 0)
    reason = words[1] if len(words) > 1 else "the holder gave no answer"
    sys.stderr.write(f"hold-lock: could not take the lock: {reason}\n")
    return 1


def release(args, quiet=False):
    paths = _paths(args.state_dir)
    recorded = os.path.exists(paths["pid"])
    holder = _live_holder(paths)
    if holder:
        pid, start = holder
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _start_time(pid) == start and time.monotonic() < deadline:
            time.sleep(0.01)
        if _start_time(pid) == start:
            os.kill(pid, signal.SIGKILL)  # its client sees end-of-file; the server ends the lock
            sys.stderr.write("hold-lock: the holder did not stop; it was killed\n")
            return 1
    result = _read_json(paths["result"])
    if result is None and recorded:
        # A holder that locked (it records itself only then) and died without a word.
        result = {"outcome": "lost", "held_ms": "unknown"}
    for path in (paths["result"], paths["pid"]):
        if os.path.exists(path):
            os.unlink(path)
    if result is None:
        if not quiet:
            print("outcome=none held_ms=0")
        return 0
    if not quiet:
        print(f"outcome={result['outcome']} held_ms={result['held_ms']}")
    return 0 if result["outcome"] == "released" else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command")
    commands.required = True
    take = commands.add_parser("acquire", help="take the lock in a holder process")
    take.add_argument("--state-dir", required=True)
    take.add_argument("--hold-seconds", type=float, required=True)
    take.add_argument("--acquire-timeout", type=float, required=True)
    take.add_argument("--lock-sql", required=True)
    take.add_argument("--release-sql", required=True)
    take.add_argument("client", nargs=argparse.REMAINDER, help="-- the client's argv")
    give = commands.add_parser("release", help="release the lock the holder keeps")
    give.add_argument("--state-dir", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "acquire":
            args.client = args.client[1:] if args.client[:1] == ["--"] else args.client
            if not args.client:
                raise HoldError("no client command after --")
            if args.hold_seconds <= 0 or args.acquire_timeout <= 0:
                raise HoldError("--hold-seconds and --acquire-timeout must be positive")
            return acquire(args)
        return release(args)
    except (HoldError, OSError) as exc:
        sys.stderr.write(f"hold-lock: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
