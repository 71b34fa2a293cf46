"""Algorithm comparison: the self-play algorithms, the data baseline and the follow-up stage, under one budget.

Every arm trains the same starting model with ``lsp-train`` (one subprocess per stage, one at a time so each has
the whole machine) for the same budget: ``--minutes`` of training per arm and seed (evaluation excluded), or
``--iterations`` per arm (then runs are exactly reproducible on CPU, whatever else the machine is doing). A
two-stage arm splits its budget in half.

Arms (both tasks unless said):
  data                 GRPO on the data env (arithmetic problems / dialogue instructions from a list): data-driven RL
  lsp_zero             GRPO self-play, no data: the pure game (arithmetic: R-Zero's payoff and headline-level
                       few-shot examples, the tuned recipe of learning_curve.py; dialogue: the paper's zero-sum game)
  lsp_zero_pg          the same game with the policy-gradient agent and plain advantages R - V (the paper's REINFORCE;
                       GRPO adds the group std scaling; with one update per batch its clipped ratio is 1)
  lsp                  LSP: lsp_zero plus the self-quality reward (the frozen reference grades query and answer)
  data_then_lsp        the data baseline for half the budget, then LSP from its checkpoint (the paper's follow-up stage)
  payoff_zero_sum, payoff_learnability, payoff_variance    (arithmetic) lsp_zero with another challenger payoff
                       (``lsp_zero`` itself is the rzero payoff)
Metrics: arithmetic, the held-out greedy solve rate on the headline levels (curves from ``--eval-every``);
dialogue, the preference for the trained model's answers over the starting model's on the held-out instructions:
the pairwise LLM judge's probability, on the starting model, averaged over both answer orders (AlpacaEval 2's
weighted win rate; ``lsp_env.evaluation.dialogue_win_rate``, whose discrete ``win_rate`` is stored beside it: the
embedded judge's position bias makes that one a tie on every instruction). The start itself scores 0.5.

    python benchmarks/compare_algorithms.py                   # 2 min per arm, 2 seeds, both tasks (~75 min on 2 cores)
    python benchmarks/compare_algorithms.py --tasks arithmetic --arms data,lsp_zero --minutes 1 --seeds 1 \\
        --output /tmp/cmp.json                                # a quick look
    python benchmarks/compare_algorithms.py --model HuggingFaceTB/SmolLM2-1.7B-Instruct --backend vllm \\
        --iterations 200 --seeds 3 -- --num-queries 64 --num-generations 8   # paper scale, on a GPU

Flags after ``--`` go to every run (the last one given wins). Writes JSON (per run, per arm mean / std / min / max),
a PNG beside it and a table; partial results are written after every run.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from learning_curve import RECIPE, add_shared_arguments, lsp_train, read_run  # noqa: E402

# An arm is a list of stages, each a list of lsp-train flags (after the task's recipe, so they win over it).
ARITH_DATA = ["--env", "LSP-Arith-Data-v0"]
ARITH_ZERO = ["--env", "LSP-Arith-v0"]
DIALOGUE_DATA = ["--env", "LSP-Data-v0"]
DIALOGUE_ZERO = ["--env", "LSP-Zero-v0"]
PG = ["--agent", "pg", "--scale-rewards", "none"]
TASKS = {
    "arithmetic": {
        "recipe": RECIPE,
        "arms": {
            "data": [ARITH_DATA],
            "lsp_zero": [ARITH_ZERO],
            "lsp_zero_pg": [ARITH_ZERO + PG],
            "lsp": [ARITH_ZERO + ["--quality"]],
            "data_then_lsp": [ARITH_DATA, ARITH_ZERO + ["--quality"]],
            "payoff_zero_sum": [ARITH_ZERO + ["--payoff", "zero_sum"]],
            "payoff_learnability": [ARITH_ZERO + ["--payoff", "learnability"]],
            "payoff_variance": [ARITH_ZERO + ["--payoff", "variance"]],
        },
    },
    "dialogue": {
        # the arithmetic recipe with room for an answer and the paper's zero-sum payoff (example_levels does not
        # apply to dialogue); the reward is the env's LLM judge on the reference
        "recipe": [*RECIPE, "--num-generations", "4", "--max-completion-length", "64", "--payoff", "zero_sum"],
        "arms": {
            "data": [DIALOGUE_DATA],
            "lsp_zero": [DIALOGUE_ZERO],
            "lsp_zero_pg": [DIALOGUE_ZERO + PG],
            "lsp": [["--env", "LSP-v0"]],
            "data_then_lsp": [DIALOGUE_DATA, ["--env", "LSP-v0"]],
        },
    },
}
DEFAULT_ARMS = {"arithmetic": list(TASKS["arithmetic"]["arms"]), "dialogue": list(TASKS["dialogue"]["arms"])}


def run_arm(task: str, arm: str, seed: int, args, workdir: Path, base) -> dict:
    """Train one arm (its stages chained through checkpoints) and evaluate the result."""
    stages = TASKS[task]["arms"][arm]
    model, lines_all, offset, wall, commands = args.model, [], 0.0, time.time(), []
    for k, stage_flags in enumerate(stages):
        flags = [*TASKS[task]["recipe"], *stage_flags, *args.extra, "--model", model, "--seed", str(seed),
                 "--backend", args.backend]
        if args.iterations:
            flags += ["--iterations", str(max(1, args.iterations // len(stages)))]
        else:
            flags += ["--iterations", "1000000", "--max-minutes", str(args.minutes / len(stages))]
        if task == "arithmetic":
            flags += ["--eval-every", str(args.eval_every), "--eval-at-start", "false",
                      "--eval-problems-per-level", str(args.eval_problems_per_level)]
        flags += ["--bf16", "true" if args.bf16 else "false"]
        out = workdir / f"{task}-{arm}-seed{seed}" / f"stage{k}"
        commands.append(["lsp-train", *flags, "--output-dir", str(out)])
        lines = lsp_train(flags, out, args.quiet)
        steps_before = max([line["step"] for line in lines_all] + [0])
        for line in lines:  # one timeline across stages; the last stage's final evaluation is the arm's
            line["step"] += steps_before
            if "time/trained" in line:
                line["time/trained"] += offset
        offset = max([line.get("time/trained", 0.0) for line in lines] + [offset])
        for line in lines:  # the final evaluation's line has no clock: it comes after the stage's last iteration
            line.setdefault("time/trained", offset)
        lines_all += lines
        model = str(out / (out / "latest").read_text().strip())
    run = {"task": task, "arm": arm, "seed": seed, **read_run(lines_all), "commands": commands}
    if task == "dialogue":
        from agents.policy import Policy
        from lsp_env.evaluation import dialogue_win_rate

        result = dialogue_win_rate(Policy(model, bf16=args.bf16), base, limit=args.dialogue_eval_limit)
        run.update(after=result["preference"], after_standard_error=result["standard_error_preference"],
                   win_rate=result["win_rate"], identical_answers=result["identical_answers"], eval_n=result["n"])
    else:
        run["after"] = run["after_headline"]
    run["wall_seconds"] = time.time() - wall
    if not args.keep_checkpoints:  # full fine-tuning checkpoints are ~1.6 GB each (weights + optimizer)
        for stage_dir in (workdir / f"{task}-{arm}-seed{seed}").glob("stage*"):
            for checkpoint in stage_dir.glob("checkpoint-*"):
                shutil.rmtree(checkpoint)
    return run


def summarise(runs: list[dict], before: dict) -> dict:
    import numpy as np

    out: dict = {}
    for task in dict.fromkeys(r["task"] for r in runs):
        out[task] = {}
        for arm in dict.fromkeys(r["arm"] for r in runs if r["task"] == task):
            after = [r["after"] for r in runs if r["task"] == task and r["arm"] == arm]
            iterations = [r["iterations"] for r in runs if r["task"] == task and r["arm"] == arm]
            out[task][arm] = {"seeds": len(after), "after_mean": float(np.mean(after)),
                              "after_std": float(np.std(after)), "after_min": float(min(after)),
                              "after_max": float(max(after)), "gain_mean": float(np.mean(after)) - before[task],
                              "iterations_mean": float(np.mean(iterations))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="arithmetic,dialogue")
    parser.add_argument("--arms", default="", help="comma-separated arms (default: every arm of each task)")
    parser.add_argument("--iterations", type=int, default=0,
                        help="budget in iterations per arm instead (0: use --minutes)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--eval-problems-per-level", type=int, default=40,
                        help="arithmetic: held-out problems per level")
    parser.add_argument("--dialogue-eval-limit", type=int, default=40,
                        help="dialogue: held-out instructions judged (of 120)")
    parser.add_argument("--backend", default="hf", help="generation backend of the runs (hf or vllm)")
    parser.add_argument("--keep-checkpoints", action="store_true")
    parser.add_argument("--reuse", default=None,
                        help="earlier result JSONs of this benchmark (comma-separated): keep their starting-model "
                             "figures and the runs this invocation does not run (recorded under 'reused')")
    add_shared_arguments(parser, "compare_algorithms", eval_every=4, minutes=2.0, seeds=2)  # eval: arithmetic only
    args = parser.parse_args()

    from rich.console import Console

    from agents.policy import Policy
    from lsp_env.evaluation import arithmetic_solve_rates
    from lsp_env.models import bf16_supported

    if args.bf16 is None:
        args.bf16 = bf16_supported()
    tasks = [t for t in args.tasks.split(",") if t]
    wanted = [a for a in args.arms.split(",") if a]
    for task in tasks:
        if task not in TASKS:
            raise SystemExit(f"--tasks: unknown {task!r}; choose from {sorted(TASKS)}")
    unknown = set(wanted) - {a for t in tasks for a in TASKS[t]["arms"]}
    if unknown:
        raise SystemExit(f"--arms: unknown {sorted(unknown)} for tasks {tasks}; see --help")
    # seed by seed: an interrupted benchmark still has every arm at its first seeds
    planned = [(task, arm, args.first_seed + k) for k in range(args.seeds) for task in tasks
               for arm in TASKS[task]["arms"] if not wanted or arm in wanted]
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    console = Console(width=None if sys.stdout.isatty() else 140)  # a log file gets the whole table
    base = Policy(args.model, bf16=args.bf16)  # the dialogue opponent and judge, and the arithmetic starting point
    before, runs, args.reused = {}, [], None
    if args.reuse:  # greedy evaluation of the same starting model is deterministic: no need to measure it twice
        args.reused = {"from": [], "runs": []}
        for path in args.reuse.split(","):
            old = json.loads(Path(path).read_text())
            before.update(old["before"])
            kept = [r for r in old["runs"] if (r["task"], r["arm"], r["seed"]) not in planned
                    and (r["task"], r["arm"], r["seed"]) not in {(x["task"], x["arm"], x["seed"]) for x in runs}]
            runs += kept
            args.reused["from"].append({"file": path, "date": old["date"], "git": old.get("git")})
            args.reused["runs"] += [f"{r['task']}-{r['arm']}-seed{r['seed']}" for r in kept]
    if "arithmetic" in tasks and "arithmetic" not in before:
        console.print("evaluating the starting model on the held-out arithmetic problems ...")
        before["arithmetic"] = arithmetic_solve_rates(base, args.eval_problems_per_level)["headline"]
    if "dialogue" in tasks:
        before["dialogue"] = 0.5  # the starting model against itself: the same greedy answers, a tie by construction
    started = time.time()
    for k, (task, arm, seed) in enumerate(planned):
        console.print(f"[{k + 1}/{len(planned)}] {task} {arm} seed {seed} "
                      f"({f'{args.iterations} iterations' if args.iterations else f'{args.minutes} min'}) ...")
        runs.append(run_arm(task, arm, seed, args, workdir, base))
        result = write(args, before, runs, time.time() - started)  # partial results survive an interrupted benchmark
    print_table(console, result)


def write(args, before: dict, runs: list[dict], seconds: float) -> dict:
    result = {
        "benchmark": "compare_algorithms",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "model": args.model, "bf16": args.bf16, "backend": args.backend,
        "budget": {"iterations": args.iterations} if args.iterations else {"minutes_per_arm": args.minutes},
        "metric": {"arithmetic": "held-out greedy solve rate, headline levels",
                   "dialogue": f"judge's preference over the starting model, {args.dialogue_eval_limit} held-out "
                               "instructions"},
        "before": before, "arms": summarise(runs, before), "runs": runs, "benchmark_seconds": round(seconds),
        "reused": args.reused,
        "recipes": {task: TASKS[task]["recipe"] + list(args.extra) for task in TASKS},
        "arm_flags": {task: spec["arms"] for task, spec in TASKS.items()},
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)
    plot(result, out.with_suffix(".png"))
    return result


def print_table(console, result: dict) -> None:
    from rich.table import Table

    budget = result["budget"]
    table = Table("task", "arm", "seeds", "iterations", "before", "after (mean ± std)", "min – max", "gain",
                  title=f"Same budget per arm ({budget.get('minutes_per_arm', budget.get('iterations'))} "
                        f"{'min' if 'minutes_per_arm' in budget else 'iterations'})")
    for task, arms in result["arms"].items():
        for arm, s in arms.items():
            table.add_row(task, arm, str(s["seeds"]), f"{s['iterations_mean']:.0f}", f"{result['before'][task]:.3f}",
                          f"{s['after_mean']:.3f} ± {s['after_std']:.3f}",
                          f"{s['after_min']:.3f} – {s['after_max']:.3f}", f"{s['gain_mean']:+.3f}")
    console.print(table)
    for task, metric in result["metric"].items():
        if task in result["arms"]:
            console.print(f"{task}: {metric}")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(result["arms"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.2), squeeze=False)
    colors = {arm: plt.get_cmap("tab10")(k)
              for k, arm in enumerate(dict.fromkeys(a for t in TASKS.values() for a in t["arms"]))}
    for ax, task in zip(axes[0], tasks):
        runs = [r for r in result["runs"] if r["task"] == task]
        if task == "arithmetic":  # curves: each seed a line, time on x
            labelled = set()
            for run in runs:
                xs = [0.0] + [t / 60 for t, _ in run.get("curve", [])]
                ys = [result["before"][task]] + [v for _, v in run.get("curve", [])]
                ax.plot(xs, ys, marker=".", color=colors[run["arm"]], alpha=0.8,
                        label=None if run["arm"] in labelled else run["arm"])
                labelled.add(run["arm"])
            ax.set_xlabel("training minutes")
            ax.set_ylabel("held-out solve rate (headline levels)")
            ax.set_ylim(0, 1)
            ax.legend(fontsize=8)
        else:  # one evaluation at the end: mean ± std over seeds (square), each seed a dot
            arms = list(result["arms"][task])
            for k, arm in enumerate(arms):
                s = result["arms"][task][arm]
                ax.errorbar(k, s["after_mean"], yerr=s["after_std"], fmt="s", color=colors[arm], capsize=5,
                            markersize=7)
                ax.scatter([k] * s["seeds"], [r["after"] for r in runs if r["arm"] == arm], color="black", s=10,
                           zorder=3)
            ax.axhline(result["before"][task], color="gray", linestyle="--", linewidth=1, label="starting model")
            ax.set_xticks(range(len(arms)), arms, rotation=20, fontsize=8)
            ax.set_ylabel("preference over the starting model")
            ax.set_ylim(min(0.4, *(r["after"] - 0.02 for r in runs)), max(0.6, *(r["after"] + 0.02 for r in runs)))
            ax.legend(fontsize=8)
        ax.set_title(f"{task}: {result['metric'][task]}", fontsize=9)
    budget = result["budget"]
    fig.suptitle(f"same budget per arm: {budget.get('minutes_per_arm', budget.get('iterations'))} "
                 f"{'min' if 'minutes_per_arm' in budget else 'iterations'} ({result['model']}, {result['machine']})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
