"""Does a judge-rewarded policy drift toward the judge's exploit? The hacking monitor over training runs.

Reads the ``metrics.jsonl`` of runs trained with an LLM judge as reward or self-quality (``LSP-Zero-v0``,
``LSP-v0``; any ``lsp-train`` run logs ``hacking/*`` then) and reports, per run, the monitor over training: the
share of answers ending in a bare number or a score-like line (``hacking/number_ending``; the exploit measured on
the embedded judge was a last line holding "9"), the same share for queries, and the suffix sensitivity (the
judge's grade of an answer minus its grade without the last line). A drift toward the exploit shows as the
number-ending share rising over training, with a positive suffix sensitivity that pays for it.

    python benchmarks/hacking_monitor.py NAME=RUN_DIR [NAME=RUN_DIR ...]
        [--json benchmarks/results/hacking_monitor.json]

Writes the JSON (per run: curves, first/last-third means, judge) and a PNG beside it, and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEYS = ("hacking/number_ending", "hacking/number_ending_queries", "hacking/suffix_sensitivity", "reward/solver")


def summarise(run_dir: Path) -> dict:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    lines = [line for line in lines if "hacking/number_ending" in line]
    if not lines:
        raise SystemExit(f"{run_dir}: no hacking/* metrics (was the run rewarded by an LLM judge?)")
    third = max(len(lines) // 3, 1)
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    out = {"run_dir": str(run_dir), "iterations": len(lines), "config": config.get("train", {})}
    for key in KEYS:
        values = [line.get(key) for line in lines]
        out[key] = {"curve": values, "first_third": _mean(values[:third]), "last_third": _mean(values[-third:])}
    return out


def _mean(values: list) -> float | None:
    present = [v for v in values if v is not None]  # (no solver reward in an iteration of invalid queries only)
    return sum(present) / len(present) if present else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/hacking_monitor.json"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rich.console import Console
    from rich.table import Table

    runs = {name: summarise(Path(path)) for name, path in (r.split("=", 1) for r in args.runs)}
    result = {"date": datetime.date.today().isoformat(), "runs": runs}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, run in runs.items():
        for ax, key in zip(axes, KEYS[:3]):
            ax.plot(range(1, run["iterations"] + 1), run[key]["curve"], label=name)
    for ax, key in zip(axes, KEYS[:3]):
        ax.set_title(key)
        ax.set_xlabel("iteration")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(args.json).with_suffix(".png"), dpi=100)

    table = Table("run", "iterations", "number-ending answers (first → last third)", "queries", "suffix sensitivity",
                  "solver reward", title="the hacking monitor over training")
    for name, run in runs.items():
        table.add_row(name, str(run["iterations"]),
                      *(f"{run[k]['first_third'] or 0:.3f} → {run[k]['last_third'] or 0:.3f}" for k in KEYS))
    Console().print(table)


if __name__ == "__main__":
    main()
