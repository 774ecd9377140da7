"""What every benchmark shares: import paths, statistics, tables, targets and the results files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
VENV_BIN = ROOT / ".venv" / "bin"
COLLECTIONS = ROOT / ".cache" / "collections"

# The collection by its import path, and the test harness (Azurite, loop filesystems, the fleet).
for _path in (COLLECTIONS, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3)


def p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 3)


def ms_since(start_ns: int) -> float:
    return (time.monotonic_ns() - start_ns) / 1e6


@dataclass
class Target:
    """One figure compared with its target (`value <= limit`), with what bounds it when missed."""

    figure: str
    value: float
    limit: float
    unit: str
    note: str = ""

    @property
    def met(self) -> bool:
        return self.value <= self.limit

    def as_dict(self) -> dict:
        return {**asdict(self), "met": self.met}


def table(title: str, columns: Sequence[tuple[str, str]], rows: Sequence[dict]) -> str:
    """A plain-text table of `rows` (dicts): `columns` are (header, key); numbers right-aligned."""
    headers = [column[0] for column in columns]
    keys = [column[1] for column in columns]
    cells = [[_cell(row[key]) for key in keys] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[key], (int, float)) for row in rows) for key in keys]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
        ).rstrip()

    out = [title, line(headers), line(["-" * w for w in widths])]
    return "\n".join(out + [line(row) for row in cells])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return "-" if value is None else str(value)


def machine() -> dict:
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def write_result(result: dict) -> Path:
    """bench/results/<name>.json: the benchmark's result, the machine, when, targets resolved."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{result['name']}.json"
    document = {
        "name": result["name"],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **{key: value for key, value in result.items() if key not in ("name", "targets")},
        "targets": [target.as_dict() for target in result["targets"]],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
