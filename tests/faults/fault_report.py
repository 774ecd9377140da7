"""The figures table of the fault suite, from the results JSON it writes.

    python tests/faults/fault_report.py [tests/output/faults/results.json] [--update-readme]

Prints the Markdown table; with --update-readme it also replaces the table between the
figures markers of tests/faults/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parents[1] / "tests" / "output" / "faults" / "results.json"
README = HERE / "README.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"
COLUMNS = (
    "scenario",
    "attacks",
    "runs",
    "invariants held",
    "worst frozen (ms)",
    "deadline (s)",
    "left frozen",
    "tracebacks",
    "secrets",
    "notes",
)


def _notes(notes: dict) -> str:
    return ", ".join(f"{key}: {value}" for key, value in sorted(notes.items()))


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join(["---"] * len(COLUMNS)) + " |",
    ]
    for row in rows:
        cells = (
            f"`{row['name']}`",
            row["attacks"],
            str(row["runs"]),
            "yes" if row["held"] else f"**NO** ({len(row['failures'])} failures)",
            f"{row['worst_frozen_ms']:.0f}" if row["worst_frozen_ms"] else "-",
            f"{row['deadline']:g}" if row.get("deadline") else "-",
            str(row["left_frozen"]),
            str(row["tracebacks"]),
            str(row["secrets"]),
            _notes(row["notes"]),
        )
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    frozen = [row["worst_frozen_ms"] for row in rows if row["worst_frozen_ms"]]
    lines.append(
        "| **total** | | "
        + " | ".join(
            (
                str(sum(row["runs"] for row in rows)),
                f"{sum(row['held'] for row in rows)}/{len(rows)}",
                f"{max(frozen):.0f}" if frozen else "-",
                "",
                str(sum(row["left_frozen"] for row in rows)),
                str(sum(row["tracebacks"] for row in rows)),
                str(sum(row["secrets"] for row in rows)),
                "",
            )
        )
        + " |"
    )
    return "\n".join(lines) + "\n"


def update_readme(table: str, readme: Path = README) -> None:
    text = readme.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(f"{head}{START}\n{table}{END}{tail}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default=str(RESULTS))
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    table = markdown_table(json.loads(Path(args.results).read_text()))
    print(table, end="")
    if args.update_readme:
        update_readme(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
