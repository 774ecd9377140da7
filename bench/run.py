"""Run every benchmark, print its tables, write bench/results/<name>.json and a summary.

    bench/run.sh [--quick] [--only freeze_window|script_overhead|fleet ...]

`bench/run.sh` installs what is missing (scripts/bootstrap.sh) and runs this file with the
checkout's virtual environment. Needs root: loop filesystems, fsfreeze, network namespaces.
See bench/README.md for the method and what each number means.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import bench_fleet
import bench_freeze_window
import bench_managed_disks
import bench_script_overhead
import benchlib

# name -> (run(reps, log) returning one result or a list of them, full reps, quick reps)
BENCHMARKS = {
    "freeze_window": (bench_freeze_window.run, 30, 6),
    "script_overhead": (bench_script_overhead.run, 30, 6),
    "fleet": (bench_fleet.run, 3, 1),
    "managed_disks": (bench_managed_disks.run, 20, 4),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions, 5 hosts only")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="these only")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (loop filesystems, fsfreeze, network namespaces)", file=sys.stderr)
        return 2
    os.environ["LANG"] = "C.UTF-8"
    targets, written = [], []
    started = time.monotonic()
    for name in args.only or BENCHMARKS:
        run, full, quick = BENCHMARKS[name]
        reps = quick if args.quick else full
        print(f"\n=== {name} ({reps} repetitions) ===", flush=True)
        start, load = time.monotonic(), [round(x, 2) for x in os.getloadavg()]
        kwargs = {"sizes": (5,)} if args.quick and name == "fleet" else {}
        results = run(reps, log=lambda line: print(line, flush=True), **kwargs)
        for result in results if isinstance(results, list) else [results]:
            result["load_average_at_start"] = load
            for text in result["tables"]:
                print(f"\n{text}")
            written.append(str(benchlib.write_result(result).relative_to(benchlib.ROOT)))
            targets += [{"benchmark": result["name"], **t.as_dict()} for t in result["targets"]]
        print(f"({name}: {time.monotonic() - start:.0f} s)", flush=True)

    summary = {
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "seconds": round(time.monotonic() - started),
        "machine": benchlib.machine(),
        "results": written,
        "targets_met": sum(t["met"] for t in targets),
        "targets_missed": sum(not t["met"] for t in targets),
        "targets": targets,
    }
    benchlib.RESULTS.mkdir(parents=True, exist_ok=True)
    (benchlib.RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for target in targets:
        target["verdict"] = "met" if target["met"] else "MISSED"
    print(
        "\n"
        + benchlib.table(
            "Summary: every figure against its target",
            [("figure", "figure"), ("value", "value"), ("unit", "unit"), ("target <=", "limit"),
             ("", "verdict")],
            targets,
        )
    )  # fmt: skip
    missed = [t for t in targets if not t["met"]]
    for target in missed:
        if target["note"]:
            print(f"  {target['figure']}: {target['note']}")
    print(f"\n{summary['targets_met']} targets met, {len(missed)} missed; results: bench/results/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
