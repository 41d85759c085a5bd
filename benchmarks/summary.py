"""``summary.md``: the headline table (every goal, pass/fail) and each section's tables, rebuilt from
the section JSON files in the results directory, so ``--only SECTION`` refreshes one section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ORDER = ("digits", "fashion", "resnet18", "mobilenet", "efficientnet", "vit", "bert")


def _cell(v: Any) -> str:
    return str(v).replace("|", "/").replace("\n", " ")


def md_table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def load_sections(out: Path) -> list[dict[str, Any]]:
    found = {}
    for name in ORDER:
        path = out / f"{name}.json"
        if path.is_file():
            found[name] = json.loads(path.read_text())
    return [found[n] for n in ORDER if n in found]


def render(out: Path) -> str:
    sections = load_sections(out)
    machine = json.loads((out / "machine.json").read_text()) if (out / "machine.json").is_file() else {}
    lines = ["# edgekit benchmarks", ""]
    if machine:
        versions = machine.get("versions", {})
        lines += [
            f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, flags {', '.join(machine.get('flags', [])) or '-'}, "
            f"{machine.get('os')}, Python {machine.get('python')}; {machine.get('threads_used', 2)} threads for every runtime.",
            f"Versions: {', '.join(f'{k} {v}' for k, v in versions.items())}.",
            "",
        ]
    commands = sorted({s.get("command", "") for s in sections})
    lines += ["Reproduce: " + "; ".join(f"`{c}`" for c in commands if c), ""]
    if any(s.get("smoke") for s in sections):
        lines += ["**Smoke run**: tiny sizes and 1 repeat; the numbers only show the code paths work.", ""]

    head = []
    for s in sections:
        if s["status"] != "ok":
            head.append([s["section"], f"section {s['status']}: {s.get('reason', '')}", "-", "-", "n/a"])
        for g in s.get("goals", []):
            head.append([s["section"], g["goal"], g["target"], g["measured"], g["verdict"]])
    passed = sum(1 for r in head if r[4] == "pass")
    judged = sum(1 for r in head if r[4] in ("pass", "FAIL"))
    lines += [f"## Headline: {passed} of {judged} goals met", ""]
    lines += md_table(["section", "goal", "target", "measured", "result"], head)
    lines.append("")

    for s in sections:
        lines += [f"## {s.get('title') or s['section']}", ""]
        lines.append(f"Run {s.get('created', '?')} in {s.get('seconds', 0):.0f} s; status **{s['status']}**"
                     + (f": {s['reason']}" if s.get("reason") else "") + ".")
        lines.append("")
        loads = [x for r in s.get("data", {}).get("rows", []) for pair in r.get("load_average") or [] for x in pair]
        # the benchmark's own 2 threads hold the load average near 2; above 2.5 something else ran
        if loads and max(loads) > 2.5:
            lines += [f"**Warning:** the 1-minute load average reached {max(loads):.2f} while these rows were timed "
                      "(2 of it is the benchmark's own threads; other processes shared the 2 cores): "
                      "treat the latencies as noisy.", ""]
        for t in s.get("tables", []):
            lines += [f"### {t['title']}", ""]
            lines += md_table(t["columns"], t["rows"])
            if t.get("note"):
                lines += ["", t["note"]]
            lines.append("")
        if s.get("goals"):
            lines += ["Goals:", ""]
            lines += md_table(["goal", "target", "measured", "result"],
                              [[g["goal"], g["target"], g["measured"], g["verdict"]] for g in s["goals"]])
            lines.append("")
        for note in s.get("notes", []):
            lines.append(f"- {note}")
        if s.get("notes"):
            lines.append("")
    return "\n".join(lines) + "\n"


def write_summary(out: Path) -> Path:
    path = out / "summary.md"
    tmp = path.with_name(".summary.md.tmp")
    tmp.write_text(render(out))
    tmp.replace(path)
    return path
