"""Head-to-head in the paper's own domain: instruction following with verifiable instructions (IFEval-style).

Arms, each trained from the embedded model for the same wall-clock budget with ``lsp-train`` (one subprocess per
arm and seed, one at a time so each has the whole machine):
  data      GRPO on `LSP-IF-Data-v0` (requests from the training list; held-out topics excluded)
  lsp_zero  GRPO self-play on `LSP-IF-v0`, no data
  lsp       the same with the self-quality reward (`--quality`)
  lsp_kl    the paper's recipe (`--recipe paper`: REINFORCE, A = R − V, sequence log-probability, β = 0.04) with
            the self-quality reward
Held-out IFEval figures (greedy; `prompt_strict`, `prompt_loose`, `instruction_strict`, `instruction_loose`) before
and after, on `--split` (``dev`` while choosing a recipe, ``test`` for reported figures), the rate per instruction
type, and what the challenger learned to ask: its mix of instruction types and its invalid-query rate over training.
`--also-splits test_rephrased` scores each run's final checkpoint (and the starting model) on more splits too:
``test_rephrased`` holds out the wording as well as the topics (the training list shares ``test``'s sentence
templates, so ``test`` favours the data arm).

    python benchmarks/learning_curve_instructions.py --split test          # 10 min per arm: 3 + 3 + 2 + 2 runs
    python benchmarks/learning_curve_instructions.py --split test --also-splits test_rephrased --arms data,lsp_zero
    python benchmarks/learning_curve_instructions.py --minutes 2 --seeds 1 --lsp-seeds 1 --split dev \\
        --output /tmp/if.json

Writes JSON (``before``: the starting model's four figures; ``arms``: arm → ``{"seeds", "after", "after_std",
"runs"}``; with ``--also-splits``, ``also``: split → ``{"before", "arms": arm → {"after", "after_std"},
"gain_ratio"}``), a PNG beside it, and a table per split. Shares ``lsp_train`` with ``learning_curve.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.learning_curve import add_shared_arguments, lsp_train  # noqa: E402
from lsp_env.tasks import InstructionsTask  # noqa: E402
from lsp_env.tasks.instructions import FIGURES  # noqa: E402

# every arm but lsp_kl shares the tuned GRPO recipe (its arithmetic-only parts do not apply here); the answer budget
# is 64 tokens, which also bounds the requests the env accepts (`max_answer_tokens`)
RECIPE = ["--recipe", "tuned", "--max-completion-length", "64"]
ARMS = {
    "data": ["--env", "LSP-IF-Data-v0", *RECIPE],
    "lsp_zero": ["--env", "LSP-IF-v0", *RECIPE],
    "lsp": ["--env", "LSP-IF-v0", "--quality", *RECIPE],
    "lsp_kl": ["--env", "LSP-IF-v0", "--quality", "--recipe", "paper", "--max-completion-length", "64"],
}


def read_run(lines: list[dict]) -> dict:
    """Iterations, the held-out figures after training (and the per-type rates), and the challenger's curves."""
    trained = [line for line in lines if "time/iteration" in line]
    evals = [line for line in lines if "eval/prompt_strict" in line]
    final = evals[-1] if evals else {}
    curve, trained_at = [], 0.0
    for line in lines:  # the evaluation after the last iteration has no time of its own: that iteration's
        trained_at = line.get("time/trained", trained_at)
        if "eval/prompt_strict" in line:
            curve.append((trained_at, line["eval/prompt_strict"]))
    return {
        "iterations": trained[-1]["step"] if trained else 0,
        "trained_seconds": trained[-1]["time/trained"] if trained else 0.0,
        "after": {k: final.get(f"eval/{k}") for k in FIGURES},
        "after_per_type": {k[5:]: v for k, v in final.items() if k.startswith("eval/") and ":" in k},
        "curve": curve,
        "solver_reward_curve": [(line["step"], line["reward/solver"]) for line in trained if "reward/solver" in line],
        "invalid_query_curve": [(line["step"], line["invalid_query_rate"]) for line in trained],
        "valid_queries": sum(line.get("valid_queries", 0) for line in trained),  # the requests the solver answered
        # the share of the iteration's valid queries asking for each instruction type
        "asked_curve": [(line["step"], {k[13:]: v for k, v in line.items() if k.startswith("instructions/")
                                        and k != "instructions/per_query"}) for line in trained],
    }


def score_splits(model: str, splits: list[str], args) -> dict[str, dict]:
    """IFEval's figures of one model (a name or a checkpoint directory) on each split, greedy, 64-token answers."""
    from agents.policy import Policy
    from lsp_env.evaluation import instruction_following_rates

    policy = Policy(model, bf16=args.bf16, backend=args.backend)
    scores = {split: instruction_following_rates(policy, split, max_new_tokens=64) for split in splits}
    if args.backend == "vllm":  # its engine holds memory the runs need
        policy.backend.close()
    return scores


def resumed(path: Path, args) -> tuple[dict | None, list[dict]]:
    """The starting model's figures (split → rates) and the runs of an earlier invocation's output, if it measured the
    same thing."""
    if not path.exists():
        return None, []
    earlier = json.loads(path.read_text())
    mine = {"split": args.split, "backend": args.backend, "extra_flags": args.extra, "model": args.model,
            "bf16": args.bf16, "budget_minutes_per_arm": args.minutes,
            "also_splits": args.also_splits}  # under the keys summarise writes them
    for key, value in mine.items():
        if earlier.get(key, [] if key == "also_splits" else None) != value:
            raise SystemExit(f"--resume: {path} has {key}={earlier.get(key)!r}, this invocation {value!r}")
    before = {split: {**part["before"], "per_instruction": part["before_per_type"]}
              for split, part in {args.split: earlier, **earlier.get("also", {})}.items()}
    return before, [run for arm in earlier["arms"].values() for run in arm["runs"]]


def summarise(before: dict, runs: list[dict], args) -> dict:
    """The JSON: ``before`` (split → the starting model's rates) and the runs, as means and spreads per arm."""
    import numpy as np

    def per_arm(afters: dict[str, list[dict]], start: dict) -> tuple[dict, dict | None]:
        arms = {arm: {"after": {k: float(np.mean([a[k] for a in mine])) for k in FIGURES},
                      "after_std": {k: float(np.std([a[k] for a in mine])) for k in FIGURES}}
                for arm, mine in afters.items()}
        gains = {arm: a["after"]["prompt_strict"] - start["prompt_strict"] for arm, a in arms.items()}
        data_gain = gains.get("data", 0.0)
        return arms, ({arm: g / data_gain for arm, g in gains.items() if arm != "data"} if data_gain > 0 else None)

    by_arm = {arm: [r for r in runs if r["arm"] == arm] for arm in dict.fromkeys(r["arm"] for r in runs)}
    main, gain_ratio = per_arm({arm: [r["after"] for r in mine] for arm, mine in by_arm.items()}, before[args.split])
    arms = {arm: {"seeds": len(mine), **main[arm], "iterations_mean": float(np.mean([r["iterations"] for r in mine])),
                  "runs": mine} for arm, mine in by_arm.items()}
    also = {}
    for split in args.also_splits:
        also_arms, also_ratio = per_arm(
            {arm: [r["also_after"][split] for r in mine] for arm, mine in by_arm.items()}, before[split])
        also[split] = {"before": {k: before[split][k] for k in FIGURES},
                       "before_per_type": before[split]["per_instruction"], "arms": also_arms,
                       "gain_ratio": also_ratio}
    start = before[args.split]
    return {
        "before": {k: start[k] for k in FIGURES}, "before_per_type": start["per_instruction"], "arms": arms,
        "gain_ratio": gain_ratio, **({"also": also, "also_splits": args.also_splits} if also else {}),
        "split": args.split, "budget_minutes_per_arm": args.minutes, "arm_flags": ARMS, "model": args.model,
        "bf16": args.bf16, "backend": args.backend, "extra_flags": args.extra,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "date": datetime.date.today().isoformat(),
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (curves, asked) = plt.subplots(1, 2, figsize=(12, 4))
    for k, (arm, summary) in enumerate(result["arms"].items()):
        for n, run in enumerate(summary["runs"]):
            xs = [0.0] + [t / 60 for t, _ in run["curve"]]
            ys = [result["before"]["prompt_strict"]] + [v for _, v in run["curve"]]
            curves.plot(xs, ys, marker="o", color=f"C{k}", alpha=0.8, label=None if n else arm)
            for m, split in enumerate(result.get("also", {})):  # the final checkpoint on the other splits
                curves.scatter([0.0, xs[-1]], [result["also"][split]["before"]["prompt_strict"],
                                               run["also_after"][split]["prompt_strict"]],
                               marker="xd+"[m % 3], color=f"C{k}", label=None if n else f"{arm}, {split}")
    curves.set_xlabel("training minutes")
    splits = ", ".join([result["split"], *result.get("also", {})])
    curves.set_ylabel(f"held-out prompt-level strict accuracy ({splits})")
    curves.legend()
    selfplay = next((s["runs"][0] for arm, s in result["arms"].items() if arm != "data"), None)
    if selfplay and selfplay["asked_curve"]:
        names = sorted({name for _, mix in selfplay["asked_curve"] for name in mix})
        steps = [step for step, _ in selfplay["asked_curve"]]
        window = min(10, len(steps))  # an iteration holds only N queries: its own mix is mostly noise
        for name in names:
            shares = np.convolve([mix.get(name, 0.0) for _, mix in selfplay["asked_curve"]], np.ones(window) / window,
                                 mode="valid")
            asked.plot(steps[window - 1:], shares, label=name.split(":")[1])
        asked.set_title(f"what the challenger asks ({selfplay['arm']}, seed {selfplay['seed']})")
        asked.set_xlabel("iteration")
        asked.set_ylabel(f"share of valid queries (mean of the last {window} iterations)")
        asked.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=100000, help="or an iteration budget (plumbing tests)")
    parser.add_argument("--lsp-seeds", type=int, default=2, help="seeds for lsp and lsp_kl")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--split", choices=InstructionsTask.heldout_splits, default="test",
                        help="the split scored during and after training (dev while choosing a recipe)")
    parser.add_argument("--also-splits", default="",
                        help="comma-separated further splits that score each run's final checkpoint and the "
                             "starting model, e.g. test_rephrased (its wording held out too)")
    parser.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                        help="generation backend of every run and of the starting model's evaluation")
    parser.add_argument("--resume", action="store_true",
                        help="keep the starting model's figures and the runs already in --output (written with the "
                             "same split, backend, model, bf16, budget and extra flags) and train only the arm-seed "
                             "pairs it lacks")
    add_shared_arguments(parser, "learning_curve_instructions", eval_every=15)
    args = parser.parse_args()
    args.also_splits = [split for split in args.also_splits.split(",") if split]
    for split in args.also_splits:
        if split not in InstructionsTask.heldout_splits or split == args.split:
            parser.error(f"--also-splits {split}: want other splits of {InstructionsTask.heldout_splits}")

    from rich.console import Console
    from rich.table import Table

    from lsp_env.models import bf16_supported

    if args.bf16 is None:
        args.bf16 = bf16_supported()
    console = Console()
    before, runs = resumed(Path(args.output), args) if args.resume else (None, [])
    if before is None:
        console.print(f"evaluating the starting model on the held-out {[args.split, *args.also_splits]} splits ...")
        before = score_splits(args.model, [args.split, *args.also_splits], args)
    done = {(r["arm"], r["seed"]) for r in runs}
    arms = args.arms.split(",")
    # seed by seed, every arm in turn: a run cut short still leaves each arm measured on the same seeds
    planned = [(arm, seed) for seed in range(max(args.seeds, args.lsp_seeds)) for arm in arms
               if seed < (args.seeds if arm in ("data", "lsp_zero") else args.lsp_seeds) and (arm, seed) not in done]
    for arm, seed in planned:
        console.print(f"training {arm} seed {seed} ...")
        flags = [*ARMS[arm], *args.extra, "--model", args.model, "--seed", str(seed), "--iterations",
                 str(args.iterations), "--max-minutes", str(args.minutes), "--eval-every", str(args.eval_every),
                 "--eval-at-start", "false", "--eval-split", args.split, "--bf16", "true" if args.bf16 else "false",
                 "--backend", args.backend]
        start = time.time()
        out = Path(args.workdir) / f"{arm}-seed{seed}"
        lines = lsp_train(flags, out, args.quiet)
        run = {"arm": arm, "seed": seed, "wall_seconds": time.time() - start, **read_run(lines)}
        if args.also_splits:  # the final checkpoint, which lsp-train always writes
            scores = score_splits(str(out / (out / "latest").read_text().strip()), args.also_splits, args)
            run["also_after"] = {split: {**{k: r[k] for k in FIGURES},
                                         "per_type": {i: v["strict"] for i, v in r["per_instruction"].items()}}
                                 for split, r in scores.items()}
        runs.append(run)
        result = summarise(before, runs, args)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=1))  # partial results survive an interruption
    result = summarise(before, runs, args)
    plot(result, Path(args.output).with_suffix(".png"))
    for split, part in {args.split: result, **result.get("also", {})}.items():
        table = Table("arm", "seeds", "iterations", "valid requests", *FIGURES,
                      title=f"held-out IFEval figures ({split}, greedy)")
        table.add_row("before", "", "", "", *(f"{part['before'][k]:.3f}" for k in FIGURES))
        for arm, s in part["arms"].items():
            mine = result["arms"][arm]
            table.add_row(arm, str(mine["seeds"]), f"{mine['iterations_mean']:.0f}",
                          ", ".join(str(r.get("valid_queries", "?")) for r in mine["runs"]),
                          *(f"{s['after'][k]:.3f} ± {s['after_std'][k]:.3f}" for k in FIGURES))
        console.print(table)
        console.print(f"gain ratio of prompt_strict against data ({split}): {part['gain_ratio']}")


if __name__ == "__main__":
    main()
