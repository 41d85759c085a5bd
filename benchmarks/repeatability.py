"""Do two back-to-back ``edgekit bench`` runs agree? Runs it N times and compares every consecutive pair.

    python benchmarks/repeatability.py [ARTIFACT] [--runs 4] [--out benchmarks/results] [-- BENCH OPTIONS]

Without ARTIFACT it trains the default digits model and compresses it with the ``int8`` recipe in a
temporary directory first. Each run is a fresh ``edgekit bench ARTIFACT --target openvino --target
onnxruntime --batch 1,8`` process (plus any options after ``--``); for each pair of consecutive runs
the script reports, per row, the relative difference of the speedups, ``|s2 - s1| / s1``, the
largest over the rows, and whether the two runs' 95 % speedup intervals overlap (they should, if
the intervals are honest). The goals: < 10 % apart, every pair of intervals overlapping. Writes
``<out>/repeatability.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess  # noqa: S404 - runs our own CLI
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL = 0.10


def edgekit(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "edgekit", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv


def default_artifact(work: Path) -> Path:
    for args in (("train", "--out", str(work / "ckpt")), ("compress", str(work / "ckpt"), "--recipe", "int8")):
        res = edgekit(*args)
        if res.returncode != 0:
            sys.exit(f"edgekit {' '.join(args)} failed: {res.stderr.strip().splitlines()[-1:]}")
    return work / "ckpt" / "int8"


def key(row: dict) -> tuple[str, str, str, int]:
    return row["variant"], row["target"], row["precision_requested"], row["batch"]


def compare(a: dict, b: dict) -> list[dict]:
    other = {key(r): r for r in b["rows"]}
    out = []
    for r in a["rows"]:
        o = other.get(key(r))
        if r["is_baseline"] or r["status"] != "ok" or not o or o["status"] != "ok" or not r["speedup"] or not o["speedup"]:
            continue
        a_int, b_int = r.get("speedup_interval"), o.get("speedup_interval")
        overlap = bool(a_int and b_int and a_int[0] <= b_int[1] and b_int[0] <= a_int[1])
        out.append({"row": "/".join(map(str, key(r))), "first": r["speedup"], "second": o["speedup"],
                    "difference": abs(o["speedup"] - r["speedup"]) / r["speedup"],
                    "first_interval": a_int, "second_interval": b_int, "intervals_overlap": overlap})
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", nargs="?", type=Path, help="an int8 (or other compressed) artifact")
    p.add_argument("--runs", type=int, default=4, help="back-to-back bench runs (>= 2)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.runs < 2:
        p.error("--runs must be >= 2")
    with tempfile.TemporaryDirectory() as tmp:
        art = args.artifact or default_artifact(Path(tmp))
        reports, walls = [], []
        for i in range(args.runs):
            started = time.perf_counter()
            res = edgekit("bench", str(art), "--target", "openvino", "--target", "onnxruntime", "--batch", "1,8",
                          "--out", str(Path(tmp) / f"run{i}"), "--json", *extra)
            if res.returncode != 0:
                sys.exit(f"edgekit bench failed: {res.stderr.strip().splitlines()[-1:]}")
            walls.append(time.perf_counter() - started)
            reports.append(json.loads(res.stdout))
            print(f"run {i + 1}/{args.runs}: {walls[-1]:.1f} s", file=sys.stderr)
    pairs = [compare(a, b) for a, b in zip(reports, reports[1:], strict=False)]
    worst = [max(r["difference"] for r in rows) for rows in pairs]
    overlapping = sum(r["intervals_overlap"] for rows in pairs for r in rows)
    compared = sum(len(rows) for rows in pairs)
    result = {"command": f"edgekit bench ARTIFACT --target openvino --target onnxruntime --batch 1,8 {' '.join(extra)}".strip(),
              "machine": reports[0]["machine"], "config": reports[0]["config"], "wall_s": walls,
              "speedups": [{"/".join(map(str, key(r))): r["speedup"] for r in rep["rows"] if r["speedup"] and not r["is_baseline"]}
                           for rep in reports],
              "intervals": [{"/".join(map(str, key(r))): r.get("speedup_interval") for r in rep["rows"]
                             if r["speedup"] and not r["is_baseline"]} for rep in reports],
              "pairs": pairs, "largest_difference_per_pair": worst, "goal": GOAL,
              "intervals_overlapping": f"{overlapping} of {compared}",
              "met": max(worst) < GOAL and overlapping == compared}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "repeatability.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = list(result["speedups"][0])
    lines = ["# Repeatability of `edgekit bench`", "", f"`{result['command']}`, {args.runs} runs back to back on "
             f"{result['machine']['cpu']} ({result['machine']['cores']} cores); each run {min(walls):.0f}-{max(walls):.0f} s.",
             "", "| row | " + " | ".join(f"run {i + 1}" for i in range(args.runs)) + " |", "|---|" + "---|" * args.runs]
    def cell(run: int, r: str) -> str:
        s, i = result["speedups"][run].get(r), result["intervals"][run].get(r)
        return "-" if s is None else f"{s:.2f}x" + (f" ({i[0]:.2f}-{i[1]:.2f})" if i else "")

    lines += [f"| {r} | " + " | ".join(cell(k, r) for k in range(args.runs)) + " |" for r in rows]
    lines += ["", "Largest relative difference of a row's speedup between consecutive runs: "
              + ", ".join(f"{100 * w:.1f} %" for w in worst) + f" (goal < {100 * GOAL:.0f} %: "
              + ("met" if max(worst) < GOAL else "**not met**") + "). "
              + f"95 % intervals of consecutive runs overlap for {overlapping} of {compared} rows (goal: all: "
              + ("met" if overlapping == compared else "**not met**") + ")."]
    (args.out / "repeatability.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
