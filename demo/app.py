"""The demo's application: appends numbered records to a ledger on each filesystem, forever.

It honours a quiesce protocol through files in its control directory, as a database would
through its own commands: when `quiesce` appears it flushes both ledgers to disk (fsync), writes
the last record number to `quiesced` and waits until `quiesce` is gone. `count` always holds the
number of records written so far. Each hold adds one line to `events.log` (flushed to disk):
``held at record N for T ms``; N is the last record written before the hold, so when the
application said it was quiesced, both ledgers held exactly records 1..N on disk.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def publish(path: Path, text: str) -> None:
    """Replace ``path`` in one step: a reader never sees it empty or half written."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--control", required=True, type=Path)
    parser.add_argument("mounts", nargs="+")
    args = parser.parse_args()
    control = args.control
    control.mkdir(parents=True, exist_ok=True)
    ledgers = [
        open(os.path.join(m, "ledger.txt"), "a", encoding="ascii")  # noqa: SIM115 - for the run
        for m in args.mounts
    ]
    number = 0
    while True:
        if (control / "quiesce").exists():
            for ledger in ledgers:
                ledger.flush()
                os.fsync(ledger.fileno())
            held = time.monotonic()
            publish(control / "quiesced", f"{number}\n")
            while (control / "quiesce").exists():
                time.sleep(0.005)
            (control / "quiesced").unlink()
            with open(control / "events.log", "a", encoding="ascii") as events:
                held_ms = (time.monotonic() - held) * 1000
                events.write(f"held at record {number} for {held_ms:.0f} ms\n")
                events.flush()
                os.fsync(events.fileno())
        number += 1
        for ledger in ledgers:
            ledger.write(f"record {number:08d} {time.time():.6f}\n")
        if number % 50 == 0:
            for ledger in ledgers:
                ledger.flush()
            publish(control / "count", f"{number}\n")
        time.sleep(0.001)


if __name__ == "__main__":
    main()
