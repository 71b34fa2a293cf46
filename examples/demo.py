"""``make demo``: a few self-play rounds on the embedded model, printed with rich, then a short training run.

The rounds are played on arithmetic by default: its reward is checked exactly, so the numbers shown mean what they
say. On dialogue (``--env LSP-v0``) the reward is the embedded 135M judge's, which tells a good answer from a poor
one only weakly; a dialogue reward worth training on needs a larger judge or a reward model (``model=`` /
``reward=``).

    python examples/demo.py [--env LSP-Arith-v0] [--rounds 2] [--num-generations 2] [--train-iterations 3]
"""

from __future__ import annotations

import argparse
import time

import gymnasium
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

import lsp_env  # noqa: F401  (registers the env ids)


def play_rounds(env_id: str, rounds: int, num_generations: int, max_new_tokens: int, seed: int,
                console: Console) -> None:
    from agents.policy import Policy

    policy = Policy("embedded")
    env = gymnasium.make(env_id, model=policy.reference_pair(), num_generations=num_generations)
    for round_index in range(rounds):
        obs, info = env.reset(seed=seed + round_index)
        (query,) = policy.generate([info["messages"]], max_new_tokens=max_new_tokens)
        obs, reward, terminated, _, info = env.step(query.text)
        console.print(Panel(query.text, title=f"round {round_index + 1}: challenger wrote", border_style="magenta"))
        if terminated:
            console.print(f"[red]invalid query[/red] ({info['invalid_reason']}): challenger reward {reward:+.3f}")
            continue
        answers = policy.generate([info["messages"]] * num_generations, max_new_tokens=max_new_tokens)
        for answer in answers:
            obs, reward, terminated, _, info = env.step(answer.text)
            console.print(Panel(answer.text, title=f"solver answer, reward {reward:+.3f}", border_style="cyan"))
        table = Table("role", "reward(s)", title=f"round {round_index + 1} payoffs")
        table.add_row("challenger", f"{info['rewards']['challenger']:+.3f}")
        table.add_row("solver", ", ".join(f"{r:+.3f}" for r in info["rewards"]["solver"]))
        console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="LSP-Arith-v0")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num-generations", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--train-iterations", type=int, default=3, help="then train this many iterations (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console()
    console.rule(f"[bold]{args.env}: self-play rounds on the embedded SmolLM2-135M-Instruct")
    play_rounds(args.env, args.rounds, args.num_generations, args.max_new_tokens, args.seed, console)
    console.print("[dim]Arithmetic rewards are exact. Dialogue rewards (--env LSP-v0) come from the embedded 135M "
                  "judge, which barely tells good answers from poor ones: pass a larger judge or a reward model "
                  "(model= / reward=) for a dialogue reward that means something.[/dim]")
    if args.train_iterations:
        from agents.train import main as train_main

        output_dir = time.strftime("runs/demo-%Y%m%d-%H%M%S")
        console.rule("[bold]a short self-play training run (lsp-train, GRPO, LSP-Arith-v0)")
        train_main(["--env", "LSP-Arith-v0", "--iterations", str(args.train_iterations), "--num-queries", "4",
                    "--num-generations", "4", "--max-completion-length", "32", "--output-dir", output_dir,
                    "--seed", str(args.seed)])
        console.print(f"metrics, checkpoint and plot in {output_dir}/")


if __name__ == "__main__":
    main()
