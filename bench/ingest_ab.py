"""Side-by-side ingest benchmark: bench/ingest.py of two source trees in alternating rounds, one table of ratios."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from machine import cpu_line

STAGE_KEYS = ("overall", "read", "decode", "preprocess", "encode", "write")


def run_tree(tree: Path, bench_args: list[str], out: Path) -> dict[str, Any]:
    """One bench/ingest.py run with `tree` first on the import path; its JSON figures."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(tree / "bench" / "ingest.py"), *bench_args, "--json", str(out)]
    subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


def collect(rounds: int, trees: dict[str, Path], bench_args: list[str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per tree, per run label, every round's run; the order of the trees flips each round."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in trees}
    order = list(trees)
    with tempfile.TemporaryDirectory(prefix="medsearch-ab-") as tmp:
        for i in range(rounds):
            for name in order if i % 2 == 0 else reversed(order):
                print(f"round {i + 1}/{rounds}: {name}", file=sys.stderr, flush=True)
                figures = run_tree(trees[name], bench_args, Path(tmp) / f"{name}-{i}.json")
                for run in figures["runs"]:
                    runs[name].setdefault(run["label"], []).append(run)
    return runs


def table(runs: dict[str, dict[str, list[dict[str, Any]]]], old: str, new: str) -> str:
    """Median img/s per stage of each tree, new ÷ old, and every round's figure (the spread is the noise)."""
    head = f"| run | stage | {old} img/s | {new} img/s | {new} ÷ {old} | {old} rounds | {new} rounds |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for label, old_runs in runs[old].items():
        new_runs = runs[new].get(label, [])
        if not new_runs:
            continue
        for stage in STAGE_KEYS:
            a = statistics.median(r["images_per_second"][stage] for r in old_runs)
            b = statistics.median(r["images_per_second"][stage] for r in new_runs)
            ratio = f"{b / a:.2f}" if a > 0 else "n/a"
            each = [", ".join(f"{r['images_per_second'][stage]:,.1f}" for r in rs) for rs in (old_runs, new_runs)]
            lines.append(f"| {label} | {stage} | {a:,.1f} | {b:,.1f} | {ratio} | {each[0]} | {each[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse, alternate the two trees, print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--old", type=Path, required=True, help="source tree of the baseline (e.g. a git worktree)")
    parser.add_argument("--new", type=Path, default=Path.cwd(), help="source tree under test (default: here)")
    parser.add_argument("--rounds", type=int, default=3, help="bench/ingest.py runs per tree, alternating")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="after --: options for bench/ingest.py")
    args = parser.parse_args(argv)
    print(cpu_line(), flush=True)
    bench_args = [a for a in args.bench_args if a != "--"]
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    runs = collect(args.rounds, trees, bench_args)
    print(f"command: python bench/ingest_ab.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"{args.rounds} rounds per tree, alternating; medians over rounds; {cpu_line()}\n")
    print(table(runs, "old", "new"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
