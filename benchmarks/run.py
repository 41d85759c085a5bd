"""Reproduce edgekit's headline benchmark table with one command.

    python benchmarks/run.py [--smoke] [--only SECTION,...] [--repeats 3] [--out benchmarks/results]

Sections: digits, fashion, resnet18, mobilenet, bert (see benchmarks/README.md). Each writes
``<out>/<section>.json``; ``<out>/summary.md`` (Markdown tables, goals with pass/fail) is rebuilt from
every section JSON in ``<out>``, and ``<out>/machine.json`` describes the machine. Artifacts go to
``<out>/artifacts`` (or ``--work``). Exit 0 when every requested section ran (goals may still fail:
they are results), 1 when a section raised.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run as a script, Python puts benchmarks/ first on the path: import it as the `benchmarks` package
# from the repository root instead (and let no benchmarks/*.py shadow a top-level module).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECTIONS = ("digits", "fashion", "resnet18", "mobilenet", "efficientnet", "vit", "bert")
SMOKE_SECTIONS = ("digits", "resnet18", "mobilenet")


def _runner(name: str) -> Callable[..., object]:
    from benchmarks.sections import bert, digits, fashion, latency

    return {"digits": digits.run, "fashion": fashion.run, "resnet18": latency.run_resnet18,
            "mobilenet": latency.run_mobilenet, "efficientnet": latency.run_efficientnet, "vit": latency.run_vit,
            "bert": bert.run}[name]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, 1 repeat, no peer tools, no fashion/bert: the same code paths in < 2 minutes")
    p.add_argument("--only", default="", help=f"comma-separated sections (default: all): {', '.join(SECTIONS)}")
    p.add_argument("--repeats", type=int, default=None, help="timing repeats per latency section; median reported (3)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="results directory")
    p.add_argument("--work", type=Path, default=None, help="artifacts directory (default: OUT/artifacts)")
    p.add_argument("--reuse", action="store_true",
                   help="reuse artifacts a previous run left in the work directory (timings are always fresh)")
    p.add_argument("--no-peers", action="store_true", help="skip the peer rows (NNCF, ONNX Runtime quantize_static)")
    p.add_argument("--quiet", action="store_true", help="only the summary on stderr")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.only.split(",") if s.strip()] or list(SMOKE_SECTIONS if args.smoke else SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.smoke:
        names = [n for n in names if n in SMOKE_SECTIONS]
    args.sections = names
    args.repeats = args.repeats or (1 if args.smoke else 3)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def make_ctx(args: argparse.Namespace) -> object:
    from benchmarks.common import Ctx
    from edgekit.bench.harness import TimingConfig

    if args.smoke:
        timing = TimingConfig(warmup=2, min_runs=5, min_time=0.05, block_time=0.01, settle=1, max_time=5.0)
    else:
        timing = TimingConfig(warmup=10, min_runs=50, min_time=2.0, block_time=0.05, settle=2, max_time=60.0)
    return Ctx(out=args.out, work=args.work or args.out / "artifacts", smoke=args.smoke, repeats=args.repeats,
               reuse=args.reuse, peers=not (args.no_peers or args.smoke), timing=timing)


def machine_json(out: Path, command: str) -> dict[str, object]:
    from edgekit.bench.report import machine

    data = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command,
            **machine().model_dump(), "load_average": list(os.getloadavg()), "threads_used": 2}
    (out / "machine.json").write_text(json.dumps(data, indent=2) + "\n")
    return data


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    from benchmarks.common import Section, log
    from benchmarks.summary import write_summary
    from edgekit import console

    console.set_quiet(args.quiet)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    machine_json(args.out, command.strip())
    ctx = make_ctx(args)
    failed = []
    for name in args.sections:
        log(f"section {name} ({'smoke' if args.smoke else 'full'}), load average {os.getloadavg()[0]:.2f}")
        started = time.perf_counter()
        try:
            sec = _runner(name)(ctx)
        except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others' results
            traceback.print_exc()
            sec = Section(name, name, status="failed", reason=f"{type(exc).__name__}: {exc}")
            failed.append(name)
        assert isinstance(sec, Section)
        sec.seconds = time.perf_counter() - started
        payload = {"section": name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "command": command.strip(), "smoke": args.smoke, **sec.to_json()}
        (args.out / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
        log(f"section {name}: {sec.status} in {sec.seconds:.0f} s -> {args.out / f'{name}.json'}")
    summary = write_summary(args.out)
    console.err.print(summary.read_text(), markup=False, highlight=False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
