"""What the harness made, on record until it is gone: one mechanism for every harness file.

Each thing made (a loop filesystem, a blob disk, an Azurite, a fleet) is a ``Record``: a JSON file
in its kind's records directory, written atomically before every step of making it, so that a
killed run leaves a record of everything it made. The ``Registry`` of a kind knows that directory
and the records this process owns; it tears those down at exit and on SIGTERM/SIGHUP (then hands
the signal on to the handler it replaced), and ``cleanup`` tears down the records of dead owners.
A process (an owner, a server) is told apart from one that reused its PID by its start time.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shlex
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from typing import Callable, ClassVar, Generic, TypeVar


def state_dir() -> str:
    """Where the records live: ``$APPCONSISTENT_HARNESS_STATE_DIR`` or
    ``${XDG_RUNTIME_DIR:-/run}/appconsistent-harness`` (each kind in its own directory)."""
    explicit = os.environ.get("APPCONSISTENT_HARNESS_STATE_DIR")
    if explicit:
        return explicit
    return os.path.join(os.environ.get("XDG_RUNTIME_DIR") or "/run", "appconsistent-harness")


def run(
    argv: list[str], check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, input=input, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state first, start time 20th."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return []


def process_start(pid: int) -> str | None:
    """The start time of a process (field 22 of /proc/PID/stat), to tell a reused PID apart."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else None


def same_process(pid: int | None, start: str | None) -> bool:
    """Is ``pid`` still the process that started at ``start`` (not gone, not a zombie waiting
    for its parent, not a reused PID)?"""
    fields = _stat(pid) if pid else []
    return len(fields) > 19 and fields[19] == start and fields[0] != "Z"


def record_name(directory: str) -> str:
    """A record's file name: after the directory of the thing it records, and unique."""
    return f"{os.path.basename(directory)}-{uuid.uuid4().hex[:8]}.json"


class Record:
    """One thing made; its JSON record holds ``fields``, then the owner and the record's path.

    A subclass declares its ``registry``, says what it is in ``str()`` (for ``cleanup``), and its
    ``teardown`` (safe to call twice and after a partial set-up) ends with ``forget()``.
    """

    fields: ClassVar[tuple[str, ...]] = ()
    noun: ClassVar[str]  # what the CLI calls one of them
    registry: ClassVar[Registry]
    owner_pid: int | None  # None: made by a CLI ``up``, it belongs to no process
    owner_start: str | None

    def __init__(self, record: dict, state_file: str) -> None:
        for field in (*self.fields, "owner_pid", "owner_start"):
            setattr(self, field, record.get(field))
        self.state_file = state_file

    def as_dict(self) -> dict:
        keys = (*self.fields, "owner_pid", "owner_start", "state_file")
        return {key: getattr(self, key) for key in keys}

    def save(self) -> None:
        """Replace the record in one step: a killed run leaves the old one or the new one."""
        temporary = f"{self.state_file}.tmp"
        with open(temporary, "w") as handle:
            json.dump(self.as_dict(), handle, indent=2)
        os.replace(temporary, self.state_file)

    def owner_alive(self) -> bool:
        return same_process(self.owner_pid, self.owner_start)

    def teardown(self) -> None:
        raise NotImplementedError

    def forget(self) -> None:
        """The last step of a teardown: the record goes, on disk and in this process."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.state_file)
        self.registry.discard(self)


R = TypeVar("R", bound=Record)


class Registry(Generic[R]):
    """The records of one kind (the class that declares it) and the ones this process owns.

    ``directory`` is called each time (the tests point the state directory elsewhere);
    ``order`` sorts records into the order they must be torn down in.
    """

    def __init__(
        self, directory: Callable[[], str], order: Callable[[list[R]], list[R]] = list
    ) -> None:
        self.directory = directory
        self.order = order
        self.kind: type[R]
        self._live: dict[str, R] = {}  # made by this process and not yet torn down
        self._lock = threading.Lock()
        self._hooks_pid: int | None = None
        self._previous_handlers: dict[int, object] = {}

    def __set_name__(self, kind: type[R], name: str) -> None:
        self.kind = kind

    def new_directory(self, prefix: str, base_dir: str | None) -> str:
        """A fresh temp directory for one thing, made once the records directory exists."""
        os.makedirs(self.directory(), mode=0o700, exist_ok=True)
        return tempfile.mkdtemp(prefix=prefix, dir=base_dir)

    @contextlib.contextmanager
    def making(self, record: dict, owned: bool, name: str | None = None) -> Iterator[R]:
        """Record what is made (in the file ``name``, by default ``record_name`` of
        ``record["base_dir"]``), then yield it to be made; a failure tears it down.

        While it is being made it belongs to this process, so that a killed or interrupted
        making is torn down or reclaimed. ``owned``: it stays this process's, torn down when the
        process exits; ``False`` (a CLI ``up``): then it belongs to no process, left to
        ``down``/``cleanup``.
        """
        owner = os.getpid()
        record = {**record, "owner_pid": owner, "owner_start": process_start(owner)}
        name = name or record_name(record["base_dir"])
        made = self.kind(record, os.path.join(self.directory(), name))
        self._install_hooks()
        with self._lock:
            self._live[made.state_file] = made
        try:
            made.save()
            yield made
        except BaseException:
            made.teardown()
            raise
        if not owned:
            made.owner_pid = made.owner_start = None
            self.discard(made)
            made.save()

    def discard(self, made: R) -> None:
        with self._lock:
            self._live.pop(made.state_file, None)

    def load(self) -> list[R]:
        directory = self.directory()
        try:
            names = sorted(name for name in os.listdir(directory) if name.endswith(".json"))
        except FileNotFoundError:
            return []
        loaded = []
        for name in names:
            path = os.path.join(directory, name)
            with contextlib.suppress(FileNotFoundError), open(path) as handle:  # gone meanwhile
                loaded.append(self.kind(json.load(handle), path))
        return loaded

    def leftovers(self, everything: bool = False, unowned: bool = True) -> list[R]:
        """The records whose owner process is gone, and with ``unowned`` those that belong to
        no process (a CLI's ``up``); all of them with ``everything``; in teardown order."""
        return [
            made
            for made in self.order(self.load())
            if everything
            or (made.owner_pid is None and unowned)
            or (made.owner_pid is not None and not made.owner_alive())
        ]

    def cleanup(self, everything: bool = False, unowned: bool = True) -> list[R]:
        """Tear down the ``leftovers``; every one is tried before the first failure is raised."""
        removed, failures = [], []
        for made in self.leftovers(everything, unowned):
            try:
                made.teardown()
            except Exception as exc:  # tear the others down before reporting
                failures.append(exc)
            else:
                removed.append(made)
        if failures:
            raise failures[0]
        return removed

    def _teardown_all(self) -> None:
        if os.getpid() != self._hooks_pid:  # a forked child (a freeze guardian) must not clean up
            return
        with self._lock:
            owned = self.order(list(self._live.values()))
        for made in owned:
            with contextlib.suppress(Exception):
                made.teardown()

    def _on_signal(self, signum: int, frame: object) -> None:
        self._teardown_all()
        previous = self._previous_handlers.pop(signum, None) or signal.SIG_DFL
        signal.signal(signum, previous)
        if callable(previous):
            previous(signum, frame)
        else:
            os.kill(os.getpid(), signum)

    def _install_hooks(self) -> None:
        if self._hooks_pid == os.getpid():
            return
        self._hooks_pid = os.getpid()
        atexit.register(self._teardown_all)
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGHUP):
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def factory(self, make: Callable[..., R]) -> Iterator[Callable[..., R]]:
        """The body of a pytest factory fixture: ``make`` for the test, then a teardown of all it
        made, newest first (every one is tried before the first failure is raised)."""
        made: list[R] = []

        def factory(*args: object, **options: object) -> R:
            made.append(make(*args, **options))
            return made[-1]

        yield factory
        failures = []
        for each in reversed(made):
            try:
                each.teardown()
            except Exception as exc:  # tear the others down before reporting
                failures.append(exc)
        if failures:
            raise failures[0]

    def command_line(
        self, description: str, up_help: str
    ) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction, argparse.ArgumentParser]:
        """The parser of the ``up``, ``down`` and ``cleanup`` commands every such CLI has; returns
        it, its subcommands and ``up``, for the caller's own options."""
        parser = argparse.ArgumentParser(description=description)
        commands = parser.add_subparsers(dest="command", required=True)
        up = commands.add_parser("up", help=up_help)
        up.add_argument("--base-dir")
        up.add_argument("--json", help="also write the record to this file")
        down = commands.add_parser("down", help=f"tear down the {self.kind.noun} that up recorded")
        down.add_argument("--json", required=True, help="the file up wrote")
        clean = commands.add_parser("cleanup", help="tear down recorded leftovers of dead owners")
        clean.add_argument("--all", action="store_true", help="also those whose owner is alive")
        return parser, commands, up

    def run_command(self, args: argparse.Namespace, up: Callable[[], R]) -> int:
        """Carry out the ``up`` (by calling ``up``), ``down`` or ``cleanup`` that ``args`` asks."""
        if args.command == "up":
            text = json.dumps(up().as_dict(), indent=2)
            if args.json:
                with open(args.json, "w") as handle:
                    handle.write(text + "\n")
            print(text)
        elif args.command == "down":
            with open(args.json) as handle:
                state_file = json.load(handle)["state_file"]
            # Only what the records directory still records is touched.
            recorded = [made for made in self.load() if made.state_file == state_file]
            for made in recorded:
                made.teardown()
            print(f"removed {len(recorded)} {self.kind.noun}(s)")
        else:
            for made in self.cleanup(everything=args.all):
                print(f"removed {made}")
        return 0
