"""Time to accuracy: our data-mode GRPO and LSP-Zero self-play against TRL's ``GRPOTrainer``, same budget, same data.

Every arm trains from the embedded model for ``--minutes`` of training time (evaluation excluded), one process at a
time, and is scored by the project's held-out arithmetic evaluation (greedy, the headline levels) as it trains:
  trl       TRL ``GRPOTrainer`` on the data env's problems (``LSP-Arith-Data-v0``'s list and solver chat), reward =
            the exact last number (``ArithmeticReward``), TRL's fastest configuration on this machine in
            ``benchmarks/throughput.py`` (fp32, HF generation, gradient checkpointing); a callback stops the clock
            every ``--eval-seconds`` of training time and evaluates the trainer's model
  data      ``lsp-train`` on ``LSP-Arith-Data-v0``, our fastest configuration (``--backend vllm`` where installed)
  lsp_zero  ``lsp-train`` self-play on ``LSP-Arith-v0``, no data
Both sides use the tuned recipe's hyperparameters (``agents/recipes.py``): 4 prompts × 8 generations per step, 32 new
tokens, learning rate 1e-5, β = 0, TRL's token-mean ``grpo`` loss, group std scaling, temperature 1.

Per seed, the minutes each of our arms needs to reach TRL's final held-out headline rate (linear interpolation
between evaluations; ``null`` if it never does) and ``ratio`` = TRL's budget / our mean minutes.

    python benchmarks/time_to_accuracy.py                         # 10 min per arm, 2 seeds: 6 runs
    python benchmarks/time_to_accuracy.py --minutes 1 --seeds 1 --model tiny-random --output /tmp/t.json  # plumbing

Writes ``benchmarks/results/time_to_accuracy.json`` (``trl_final_headline``, ``arms`` → ``data`` / ``lsp_zero`` →
``minutes_to_trl`` per seed, ``ratio``, the curves) and a PNG beside it; needs the ``[bench]`` extra (trl).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.recipes import RECIPES  # noqa: E402
from benchmarks.learning_curve import add_shared_arguments, lsp_train, read_run  # noqa: E402

TUNED = RECIPES["tuned"]
OUR_ARMS = {"data": ["--env", "LSP-Arith-Data-v0"], "lsp_zero": ["--env", "LSP-Arith-v0"]}


class GreedyModel:
    """The evaluation's view of a bare HF model: ``generate(chats, max_new_tokens, do_sample=False)`` like
    :class:`agents.policy.Policy`, through the project's own generation backend and chat rendering."""

    def __init__(self, model, tokenizer):
        from agents.backends.hf import HFBackend

        self.tokenizer, self.backend = tokenizer, HFBackend(model, tokenizer)

    def generate(self, chats, max_new_tokens: int = 32, do_sample: bool = False, **_):
        from types import SimpleNamespace

        from lsp_env.prompts import render_chat

        outputs = self.backend.generate([render_chat(self.tokenizer, chat) for chat in chats], max_new_tokens,
                                        do_sample=do_sample)
        return [SimpleNamespace(text=self.tokenizer.decode(ids, skip_special_tokens=True)) for ids in outputs]


def trl_worker(spec: dict, out: Path) -> None:
    """One TRL run (in its own process): train for ``spec["minutes"]`` of training time, evaluating as it goes."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from benchmarks.throughput import hf_model_dir
    from lsp_env import models
    from lsp_env.evaluation import arithmetic_solve_rates
    from lsp_env.rewards import ArithmeticReward
    from lsp_env.tasks import ArithmeticTask, arithmetic

    torch.manual_seed(spec["seed"])
    task = ArithmeticTask()
    dataset = Dataset.from_list([{"prompt": task.solver_messages(p), "problem": p} for p in task.default_prompts()])
    score = ArithmeticReward()

    def arithmetic_reward(prompts, completions, problem, **kwargs):
        return score(problem, [c[0]["content"] for c in completions])

    tokenizer = models.load_tokenizer(spec["model"])
    curve: list[tuple[float, float]] = []

    class Budget(TrainerCallback):
        """Training time only: the clock runs from a step's start to its end and stops for evaluation."""

        trained, started = 0.0, 0.0
        next_eval = spec["eval_seconds"]

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.trained += time.perf_counter() - self.started
            done = self.trained >= 60 * spec["minutes"]
            if done or self.trained >= self.next_eval:
                was_training = model.training
                rates = arithmetic_solve_rates(GreedyModel(model, tokenizer), spec["eval_problems_per_level"],
                                               levels=arithmetic.HEADLINE_LEVELS)
                model.train(was_training)
                curve.append((self.trained, rates["headline"]))
                self.next_eval = self.trained + spec["eval_seconds"]
            control.should_training_stop = done

    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="lsp-trl-"), use_cpu=True, bf16=False, gradient_checkpointing=True,
        beta=TUNED["beta"], loss_type=TUNED["loss_type"], learning_rate=TUNED["learning_rate"], weight_decay=0.0,
        max_grad_norm=1.0, num_generations=TUNED["num_generations"], epsilon=0.2, num_iterations=1,
        scale_rewards=TUNED["scale_rewards"],
        per_device_train_batch_size=TUNED["num_queries"] * TUNED["num_generations"], gradient_accumulation_steps=1,
        max_completion_length=TUNED["max_completion_length"], temperature=1.0, top_p=1.0, top_k=0, use_vllm=False,
        max_steps=10**6, seed=spec["seed"], save_strategy="no", report_to="none", disable_tqdm=True,
        model_init_kwargs={"dtype": torch.float32},
    )
    trainer = GRPOTrainer(model=hf_model_dir(spec["model"]), reward_funcs=arithmetic_reward, args=args,
                          train_dataset=dataset, processing_class=tokenizer, callbacks=[Budget()])
    start = arithmetic_solve_rates(GreedyModel(trainer.model, tokenizer), spec["eval_problems_per_level"],
                                   levels=arithmetic.HEADLINE_LEVELS)["headline"]
    trainer.train()
    out.write_text(json.dumps({"before": start, "curve": curve, "steps": trainer.state.global_step}))


def minutes_to(curve: list[tuple[float, float]], before: float, target: float) -> float | None:
    """The training minutes at which a held-out curve first reaches ``target`` (linear between evaluations)."""
    if before >= target:
        return 0.0
    points = [(0.0, before), *curve]
    for (t0, r0), (t1, r1) in zip(points, points[1:]):
        if r1 >= target:
            return (t0 + (t1 - t0) * ((target - r0) / (r1 - r0) if r1 > r0 else 1.0)) / 60
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-seconds", type=float, default=60.0, help="TRL: evaluate every this much training time")
    parser.add_argument("--eval-problems-per-level", type=int, default=40)
    parser.add_argument("--backend", default=None, help="our arms' generation backend (default: vllm if installed)")
    parser.add_argument("--trl-worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    add_shared_arguments(parser, "time_to_accuracy", eval_every=8, seeds=2)
    args = parser.parse_args()
    if args.trl_worker:
        return trl_worker(json.loads(args.trl_worker[0]), Path(args.trl_worker[1]))

    import numpy as np

    from lsp_env.models import bf16_supported

    if args.backend is None:
        from agents.backends import check_backend

        try:
            check_backend("vllm")
            args.backend = "vllm"
        except Exception:  # no vLLM here: HF generation is then our fastest
            args.backend = "hf"
    if args.bf16 is None:
        args.bf16 = bf16_supported()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in range(args.seeds):
        spec = {"seed": seed, "model": args.model, "minutes": args.minutes, "eval_seconds": args.eval_seconds,
                "eval_problems_per_level": args.eval_problems_per_level}
        out = workdir / f"trl-seed{seed}.json"
        print(f"TRL seed {seed} for {args.minutes} min ...", flush=True)
        subprocess.run([sys.executable, __file__, "--trl-worker", json.dumps(spec), str(out)], check=True, cwd=ROOT)
        trl = json.loads(out.read_text())
        runs.append({"arm": "trl", "seed": seed, "before": trl["before"], "curve": trl["curve"],
                     "iterations": trl["steps"], "final": trl["curve"][-1][1] if trl["curve"] else trl["before"]})
        for arm, env in OUR_ARMS.items():
            print(f"{arm} seed {seed} for {args.minutes} min ...", flush=True)
            flags = [*env, "--recipe", "tuned", *args.extra, "--model", args.model, "--seed", str(seed),
                     "--backend", args.backend, "--bf16", "true" if args.bf16 else "false", "--iterations", "100000",
                     "--max-minutes", str(args.minutes), "--eval-every", str(args.eval_every), "--eval-at-start",
                     "false", "--eval-problems-per-level", str(args.eval_problems_per_level)]
            run = read_run(lsp_train(flags, workdir / f"{arm}-seed{seed}", args.quiet))
            runs.append({"arm": arm, "seed": seed, "before": trl["before"], "curve": run.get("curve", []),
                         "iterations": run["iterations"], "final": run.get("after_headline")})
    trl_final = float(np.mean([r["final"] for r in runs if r["arm"] == "trl"]))
    arms = {}
    for arm in OUR_ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        minutes = [minutes_to(r["curve"], r["before"], trl_final) for r in mine]
        reached = [m for m in minutes if m is not None]
        # a seed that never reaches TRL's rate counts as the whole budget: the ratio is then an upper bound
        mean = float(np.mean([m if m is not None else args.minutes for m in minutes]))
        arms[arm] = {"minutes_to_trl": minutes, "seeds_reaching": len(reached), "ratio": args.minutes / mean,
                     "final_headline": [r["final"] for r in mine], "runs": mine}
    result = {"trl_final_headline": trl_final, "trl_runs": [r for r in runs if r["arm"] == "trl"], "arms": arms,
              "budget_minutes": args.minutes, "backend": args.backend, "bf16": args.bf16, "model": args.model,
              "eval_seconds_trl": args.eval_seconds, "eval_every_ours": args.eval_every,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": datetime.date.today().isoformat()}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1))
    plot(result, Path(args.output).with_suffix(".png"))
    for arm, a in arms.items():
        print(f"{arm}: minutes to TRL's final headline {trl_final:.3f}: {a['minutes_to_trl']}; ratio {a['ratio']:.2f}")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for k, arm in enumerate(["trl", *result["arms"]]):
        runs = result["trl_runs"] if arm == "trl" else result["arms"][arm]["runs"]
        for n, run in enumerate(runs):
            xs = [0.0] + [t / 60 for t, _ in run["curve"]]
            ys = [run["before"]] + [v for _, v in run["curve"]]
            ax.plot(xs, ys, marker="o", color=f"C{k}", alpha=0.8, label=None if n else arm)
    ax.axhline(result["trl_final_headline"], color="grey", linestyle=":", label="TRL's final rate")
    ax.set(xlabel="training minutes (evaluation excluded)", ylabel="held-out headline solve rate")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
