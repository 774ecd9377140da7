"""The proof's figures: per database and mode, from the snapshots' records; and the table."""

from __future__ import annotations

from statistics import mean

from db_proof import Snapshot

MODES = ("scripts", "none")
COLUMNS = (
    ("database", "database"),
    ("scripts", "mode"),
    ("snapshots_taken", "taken"),
    ("restored", "restored"),
    ("started", "started"),
    ("passed", "passed"),
    ("rows_checked", "rows checked"),
    ("rows_missing", "missing"),
    ("integrity_problems", "integrity problems"),
    ("held_quiesced_ms_max", "held quiesced ms (max)"),
    ("writer_stall_ms_max", "writer stall ms (max)"),
    ("writer_tps_pre_script_min", "writer tps in pre-script (min)"),
    ("start_seconds_max", "start s (max)"),
    ("redo_seconds_max", "redo s (max)"),
)


def _mode_figures(snapshots: list[Snapshot]) -> dict:
    held = [s.hold_ms for s in snapshots if s.hold_ms is not None]
    return {
        "snapshots_taken": sum(1 for s in snapshots if s.snapshot),
        "consistency": sorted({s.consistency for s in snapshots}),
        "restored": sum(s.restored for s in snapshots),
        "started": sum(s.started_ok for s in snapshots),
        "passed": sum(s.passed for s in snapshots),
        "rows_checked": sum(s.rows_required for s in snapshots if s.started_ok),
        "rows_missing": sum(len(s.missing) for s in snapshots),
        "integrity_problems": sum(len(s.integrity_problems) for s in snapshots),
        "held_quiesced_ms_max": max(held) if held else None,
        "held_quiesced_ms_mean": round(mean(held)) if held else None,
        "writer_stall_ms_max": max((s.writer_stall_ms for s in snapshots), default=None),
        "writer_tps_pre_script_min": min(
            (s.writer_tps_pre_script for s in snapshots if s.writer_tps_pre_script is not None),
            default=None,
        ),
        "start_seconds_max": max(
            (s.start_seconds for s in snapshots if s.start_seconds is not None), default=None
        ),
        "crash_recoveries": sum(bool(s.recovery.get("crash_recovery")) for s in snapshots),
        "redo_seconds_max": max(
            (s.recovery["redo_seconds"] for s in snapshots if "redo_seconds" in s.recovery),
            default=None,
        ),
        "checkpoint_ms_max": max(
            (s.checkpoint_ms for s in snapshots if s.checkpoint_ms is not None), default=None
        ),
    }


def figures(server_version: str, load: str, snapshots: list[Snapshot]) -> dict:
    return {
        "server": server_version,
        "load": load,
        "modes": {mode: _mode_figures([s for s in snapshots if s.mode == mode]) for mode in MODES},
        "snapshots": [s.as_dict() for s in snapshots],
    }


def table(recorded: dict) -> str:
    rows = [[title for _key, title in COLUMNS]]
    for database, data in recorded.items():
        for mode, values in data["modes"].items():
            cells = {"database": database, "scripts": mode, **values}
            rows.append(
                ["-" if cells.get(key) is None else str(cells[key]) for key, _title in COLUMNS]
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = [
        "scripts: the shipped quiesce scripts ran (application-consistent snapshots); none: no",
        "scripts (file-system-consistent: freeze, snapshot, thaw), under the same load.",
        "rows checked: transactions acknowledged before the pre-script finished (none: before the",
        "run started), each looked up in the restored and started database.",
        "held quiesced: how long the lock was held; PostgreSQL holds none (its pre-script runs a",
        "CHECKPOINT when it fits, see checkpoint_ms_max). writer stall: the longest wait for an",
        "acknowledgement during the snapshot run; writer tps in pre-script: its commits per second",
        "while the pre-script ran. Every snapshot, with its problems, is in results.json.",
    ]
    return "\n".join([*lines, "", *notes])
