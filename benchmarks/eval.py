"""Held-out evaluation, one entry point, JSON out.

    python benchmarks/eval.py --task arithmetic --model runs/arith/checkpoint-40 --json out.json
    python benchmarks/eval.py --task instructions --model runs/if/checkpoint-40 --split test --json out.json
    python benchmarks/eval.py --task dialogue --model runs/lsp/checkpoint-40 --base embedded --json out.json

arithmetic: greedy solve rate per level (held-out problems from a fixed seed, never trained on), overall and on the
headline levels. instructions: IFEval's four figures (prompt- and instruction-level accuracy, strict and loose),
greedy, and the rate per instruction id, on the held-out requests (`--split dev` while choosing a recipe, `test` for
reported figures; topics not in the training list; `test_rephrased`: their wording not either). dialogue:
AlpacaEval-style win rate against the base model on the held-out instructions (`win_rate`, `standard_error`, `n`)
and the judge's order-averaged `preference` (`standard_error_preference`), judged by the built-in LLM judge on the
base model (see `lsp_env.evaluation.dialogue_win_rate`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lsp_env.tasks import InstructionsTask  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("arithmetic", "instructions", "dialogue"), default="arithmetic")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--base", default="embedded", help="dialogue: the model to beat (and the judge's model)")
    parser.add_argument("--problems-per-level", type=int, default=40)
    parser.add_argument("--limit", type=int, default=None, help="dialogue, instructions: first N requests only")
    parser.add_argument("--split", choices=InstructionsTask.heldout_splits, default="test",
                        help="instructions: the held-out split (test_rephrased: its wording held out too)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="instructions: the answer budget")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--json", default=None, help="write the result here too")
    args = parser.parse_args()

    from agents.policy import Policy
    from lsp_env.evaluation import arithmetic_solve_rates, dialogue_win_rate, instruction_following_rates

    policy = Policy(args.model, bf16=args.bf16)
    if args.task == "arithmetic":
        result = arithmetic_solve_rates(policy, args.problems_per_level)
    elif args.task == "instructions":
        result = instruction_following_rates(policy, args.split, args.max_new_tokens, limit=args.limit)
    else:
        result = dialogue_win_rate(policy, Policy(args.base, bf16=args.bf16), limit=args.limit)
    result = {"task": args.task, "model": args.model, **result}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
