"""Head-to-head: does self-play with no data improve the model about as much as data-driven RL? (arithmetic)

Arms, each trained from the embedded model for the same wall-clock budget with ``lsp-train`` (one subprocess per
arm and seed, one at a time so each has the whole machine):
  data      GRPO on `LSP-Arith-Data-v0` (problems from the seeded generator, held-out set excluded)
  lsp_zero  GRPO self-play on `LSP-Arith-v0`, no data (R-Zero's payoff, headline-level few-shot examples)
  lsp       the same with the self-quality reward (`--quality`)
  python benchmarks/learning_curve.py -- --payoff zero_sum   # the paper's zero-sum payoff instead (flags after --
                                                               # go to every arm; the last one given wins)
Held-out solve rate (greedy) before, during and after; the headline levels are 1-digit sums, 2-digit + 1-digit
sums and 1-digit products; harder levels are reported beside them.

    python benchmarks/learning_curve.py                    # 10 min per arm, 3 + 3 + 1 runs (~85 min on 2 cores)
    python benchmarks/learning_curve.py --minutes 2 --seeds 1 --output /tmp/lc.json   # a quick look

Writes JSON (``solve_rate_before``, ``solve_rate_after``, ``data_baseline_after``, ``gain_ratio`` on the headline
levels, averaged over seeds; per-level, per-seed and curve detail under other keys), a PNG beside it, and a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.recipes import RECIPES  # noqa: E402

ARMS = {
    "data": ["--env", "LSP-Arith-Data-v0"],
    "lsp_zero": ["--env", "LSP-Arith-v0"],
    "lsp": ["--env", "LSP-Arith-v0", "--quality"],
}
# The recipe shared by every arm (only the env differs), chosen by the pilot runs described in the README:
# `lsp-train --recipe tuned` (agents/recipes.py lists its values). Its self-play part is R-Zero's payoff, which pays
# the challenger most for problems its solver solves half the time (the zero-sum payoff drove the generated problems'
# solve rate to ~0.03 and left the solver little to learn from), and few-shot examples from the headline levels (the
# difficulty the challenger's prompt shows; the data baseline draws its problems from the same levels); neither
# changes the data baseline, which has no challenger. bf16 is passed explicitly (--bf16 / --no-bf16 here).
RECIPE = ["--recipe", "tuned"]


def lsp_train(flags: list[str], out: Path, quiet: bool = False) -> list[dict]:
    """One ``lsp-train`` run in a subprocess, into a fresh ``out``; returns its ``metrics.jsonl`` lines."""
    if out.exists():
        shutil.rmtree(out)
    subprocess.run([sys.executable, "-m", "agents.train", *flags, "--output-dir", str(out)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL if quiet else None)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def add_shared_arguments(parser: argparse.ArgumentParser, name: str, eval_every: int, minutes: float = 10.0,
                         seeds: int = 3) -> None:
    """The flags every head-to-head script shares: the budget, the seeds, the model, bf16, the evaluation cadence,
    where the result (``benchmarks/results/<name>.json``) and the runs (``runs/<name>/``) go, extra lsp-train flags."""
    parser.add_argument("--minutes", type=float, default=minutes,
                        help="training budget per arm and seed (evaluation excluded)")
    parser.add_argument("--seeds", type=int, default=seeds, help="seeds per arm (the baselines' and LSP-Zero's)")
    parser.add_argument("--eval-every", type=int, default=eval_every, help="held-out evaluation every k iterations")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="default: where the hardware has fast bf16")
    parser.add_argument("--output", default=str(ROOT / f"benchmarks/results/{name}.json"))
    parser.add_argument("--workdir", default=str(ROOT / f"runs/{name}"))
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("extra", nargs="*", help="more lsp-train flags for every run (after --)")


def read_run(lines: list[dict]) -> dict:
    """Iterations, training seconds, reward curves and (with ``--eval-every``) the held-out solve rates of one run."""
    trained = [line for line in lines if "time/iteration" in line]
    trained_seconds = trained[-1]["time/trained"] if trained else 0.0
    run = {
        "iterations": trained[-1]["step"] if trained else 0, "trained_seconds": trained_seconds,
        # (no solver reward in an iteration whose queries were all invalid)
        "solver_reward_curve": [(line["step"], line["reward/solver"]) for line in trained if "reward/solver" in line],
        "invalid_query_curve": [(line["step"], line["invalid_query_rate"]) for line in trained
                                if "invalid_query_rate" in line],
        # the solve rate of the problems the challenger generated (V(q) averaged over the iteration's valid queries)
        "generated_solve_rate_curve": [(line["step"], line["group_value"]) for line in trained
                                       if "group_value" in line],
    }
    evals = [line for line in lines if "eval/headline" in line]
    if evals:
        final = evals[-1]
        run.update(
            after_headline=final["eval/headline"], after_overall=final["eval/overall"],
            after_per_level={k[5:]: v for k, v in final.items()
                             if k.startswith("eval/") and k[5:] not in ("headline", "overall")},
            # (seconds trained, headline rate); the final evaluation comes after the last iteration's time
            curve=[(line.get("time/trained", trained_seconds if line["step"] else 0.0), line["eval/headline"])
                   for line in evals],
        )
    return run


def run_arm(arm: str, seed: int, args, workdir: Path) -> dict:
    flags = [*ARMS[arm], *RECIPE, *args.extra, "--model", args.model, "--seed", str(seed), "--iterations", "100000",
             "--max-minutes", str(args.minutes), "--eval-every", str(args.eval_every), "--eval-at-start", "false"]
    flags += ["--bf16", "true" if args.bf16 else "false"]
    start = time.time()
    lines = lsp_train(flags, workdir / f"{arm}-seed{seed}", args.quiet)
    return {"arm": arm, "seed": seed, "wall_seconds": time.time() - start, **read_run(lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lsp-seeds", type=int, default=1, help="seeds for LSP (self-quality)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run are first-seed, first-seed + 1, ...")
    parser.add_argument("--arms", default="data,lsp_zero,lsp")
    parser.add_argument("--reuse", default=None, help="an earlier result JSON: keep its base evaluation and its runs "
                        "that this invocation does not run (recorded under 'reused'), instead of measuring them again")
    add_shared_arguments(parser, "learning_curve", eval_every=15)
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from agents.policy import Policy
    from lsp_env.evaluation import arithmetic_solve_rates
    from lsp_env.models import bf16_supported

    if args.bf16 is None:
        args.bf16 = bf16_supported()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    console = Console()
    planned = [(arm, args.first_seed + k) for arm in args.arms.split(",")
               for k in range(args.lsp_seeds if arm == "lsp" else args.seeds)]
    runs, args.reused = [], None
    if args.reuse:  # greedy evaluation of the same base model is deterministic: no need to measure it twice
        old = json.loads(Path(args.reuse).read_text())
        before = {"headline": old["solve_rate_before"], "per_level": old["before_per_level"],
                  "overall": old["before_overall"]}
        runs = [r for r in old["runs"] if (r["arm"], r["seed"]) not in planned]
        args.reused = {"from_date": old["date"], "recipe": old["recipe"],
                       "runs": [f"{r['arm']}-seed{r['seed']}" for r in runs]}
    else:
        console.print("evaluating the starting model on the held-out set ...")
        before = arithmetic_solve_rates(Policy(args.model, bf16=args.bf16))
    for arm, seed in planned:
        console.print(f"training {arm} seed {seed} for {args.minutes} min ...")
        runs.append(run_arm(arm, seed, args, workdir))
        _write(args, before, runs)  # partial results survive an interrupted benchmark
    result = _write(args, before, runs)
    table = Table("arm", "seeds", "iterations", "headline before", "headline after", "overall after",
                  title="held-out solve rate (greedy)")
    for arm, summary in result["arms"].items():
        table.add_row(arm, str(summary["seeds"]), f"{summary['iterations_mean']:.0f}",
                      f"{result['solve_rate_before']:.3f}",
                      f"{summary['headline_after_mean']:.3f} ± {summary['headline_after_std']:.3f}",
                      f"{summary['overall_after_mean']:.3f}")
    console.print(table)
    console.print(f"gain ratio (LSP-Zero / data) = {result['gain_ratio']:.2f}   (target >= 0.9, after >= 0.5)")


def _write(args, before: dict, runs: list[dict]) -> dict:
    import numpy as np

    arms = {}
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = [r for r in runs if r["arm"] == arm]
        headline = [r["after_headline"] for r in mine]
        arms[arm] = {
            "seeds": len(mine), "headline_after_mean": float(np.mean(headline)),
            "headline_after_std": float(np.std(headline)),
            "overall_after_mean": float(np.mean([r["after_overall"] for r in mine])),
            "iterations_mean": float(np.mean([r["iterations"] for r in mine])),
            "per_level_after_mean": {lvl: float(np.mean([r["after_per_level"][lvl] for r in mine]))
                                     for lvl in mine[0]["after_per_level"]},
        }
    b = before["headline"]
    data_after = arms.get("data", {}).get("headline_after_mean", float("nan"))
    selfplay_after = arms.get("lsp_zero", {}).get("headline_after_mean", float("nan"))
    result = {
        "solve_rate_before": b,
        "solve_rate_after": selfplay_after,
        "data_baseline_after": data_after,
        "lsp_after": arms.get("lsp", {}).get("headline_after_mean", float("nan")),
        "gain_ratio": (selfplay_after - b) / (data_after - b) if data_after > b else float("nan"),
        "before_per_level": before["per_level"],
        "before_overall": before["overall"],
        "arms": arms,
        "runs": runs,
        "budget_minutes_per_arm": args.minutes,
        "recipe": RECIPE + list(args.extra),
        "recipe_values": RECIPES["tuned"],
        "arm_flags": ARMS,
        "reused": args.reused,
        "bf16": args.bf16,
        "model": args.model,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "date": datetime.date.today().isoformat(),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    _plot(result, out.with_suffix(".png"))
    return result


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"data": "tab:blue", "lsp_zero": "tab:orange", "lsp": "tab:green"}
    fig, ax = plt.subplots(figsize=(6.5, 4))
    labelled = set()
    for run in result["runs"]:
        xs = [0.0] + [t / 60 for t, _ in run["curve"]]
        ys = [result["solve_rate_before"]] + [v for _, v in run["curve"]]
        label = None if run["arm"] in labelled else run["arm"]
        labelled.add(run["arm"])
        ax.plot(xs, ys, marker="o", color=colors.get(run["arm"]), alpha=0.8, label=label)
    ax.set_xlabel("training minutes (2 CPU cores)")
    ax.set_ylabel("held-out solve rate, headline levels")
    ax.set_title(f"self-play vs data (gain ratio {result['gain_ratio']:.2f})")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
