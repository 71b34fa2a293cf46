"""Held-out evaluation: arithmetic solve rates and IFEval's figures (greedy), dialogue win rate against the base model.

Any model with ``generate(chats, max_new_tokens=, do_sample=) -> [.text]`` (``agents.Policy``, or your own) is scored
by the tasks' own held-out sets and checkers (``task.heldout``, ``task.score``). Entry point with JSON out:
``python benchmarks/eval.py``. The problems and instructions here are never trained on:
the arithmetic held-out set comes from a fixed seed and the data mode's generator excludes it; the dialogue list
(``lsp_env/data/dialogue_eval.txt``) is disjoint from the training list.
"""

from __future__ import annotations

import itertools
import math

from .rewards import PairwiseJudge
from .tasks import ArithmeticTask, DialogueTask, InstructionsTask, arithmetic, instructions, read_lines


def heldout_rates(policy, task, items: list[dict], max_new_tokens: int, batch_size: int = 64) -> dict:
    """A task's held-out score of ``policy``: greedy answers to the items (in the solver messages of training),
    scored by ``task.score``. Items of one ``level`` share batches (the arithmetic figures were measured so)."""
    answers: list[str] = []
    for _, group in itertools.groupby(items, key=lambda item: item.get("level")):
        chats = [task.solver_messages(item["prompt"]) for item in group]
        for start in range(0, len(chats), batch_size):
            answers += [c.text for c in policy.generate(chats[start:start + batch_size], max_new_tokens=max_new_tokens,
                                                        do_sample=False)]
    return task.score(items, answers)


def arithmetic_solve_rates(policy, n_per_level: int = 40, max_new_tokens: int = 32,
                           levels: tuple[str, ...] = tuple(arithmetic.LEVELS), batch_size: int = 64) -> dict:
    """Greedy solve rate per level, overall, and over the headline levels (1-digit sums, 2+1-digit sums, 1-digit
    products)."""
    task = ArithmeticTask()
    return heldout_rates(policy, task, task.heldout(n_per_level=n_per_level, levels=levels), max_new_tokens, batch_size)


def instruction_following_rates(policy, split: str = "test", max_new_tokens: int = 64, limit: int | None = None,
                                batch_size: int = 64) -> dict:
    """IFEval's four figures (``prompt_strict``, ``prompt_loose``, ``instruction_strict``, ``instruction_loose``),
    greedy, and the rate per instruction id, on a split (``dev`` for choosing recipes, ``test`` for reporting) of the
    held-out requests, whose topics are not in the training list."""
    task = InstructionsTask(max_answer_tokens=max_new_tokens)
    return {"split": split, **heldout_rates(policy, task, task.heldout(split)[:limit], max_new_tokens, batch_size)}


def heldout_metrics(policy, task, n_per_level: int = 40, headline: bool = True, split: str = "test",
                    per_instruction: bool = False) -> dict:
    """A task's held-out evaluation (greedy) as ``eval/*`` metrics, as ``lsp-train --eval-every`` logs them:
    arithmetic solve rates (the headline levels, or every level), or IFEval's four figures on ``split`` (and, with
    ``per_instruction``, the strict rate per instruction id)."""
    if isinstance(task, InstructionsTask):
        result = instruction_following_rates(policy, split, max_new_tokens=task.max_answer_tokens)
        out = {f"eval/{k}": result[k] for k in instructions.FIGURES}
        if per_instruction:
            out.update({f"eval/{k}": v["strict"] for k, v in result["per_instruction"].items()})
        return out
    levels = arithmetic.HEADLINE_LEVELS if headline else tuple(arithmetic.LEVELS)
    result = arithmetic_solve_rates(policy, n_per_level, levels=levels)
    out = {f"eval/{level}": rate for level, rate in result["per_level"].items()}
    out["eval/headline"], out["eval/overall"] = result["headline"], result["overall"]
    return out


def dialogue_win_rate(policy, base, judge=None, max_new_tokens: int = 128,
                      limit: int | None = None) -> dict:
    """AlpacaEval-style win rate of ``policy`` against ``base`` on the held-out instructions (greedy answers).

    The built-in :class:`PairwiseJudge` (on the base model) judges both answer orders, so position bias cancels:
    ``win_rate`` counts a win in both orders as 1 and a split decision as a tie (0.5); ``preference`` averages the
    judge's probability of preferring ours over both orders (AlpacaEval 2's weighted win rate), which still
    measures something when a position-biased judge splits every decision. Each comes with its standard error.
    A custom ``judge(queries, answers, others) -> list[float]`` gives the win rate alone.

    Both models answer in the voice the policy was trained in: the dialogue task's solver messages (its system
    prompt, then the instruction as the user turn), exactly what the env gives the solver.
    """
    instructions = read_lines("dialogue_eval.txt")[:limit]
    chats = [DialogueTask().solver_messages(q) for q in instructions]
    ours = [c.text for c in policy.generate(chats, max_new_tokens=max_new_tokens, do_sample=False)]
    theirs = [c.text for c in base.generate(chats, max_new_tokens=max_new_tokens, do_sample=False)]
    result = {"n": len(instructions), "identical_answers": sum(a == b for a, b in zip(ours, theirs))}
    if judge is not None:
        return {**result, **_mean_and_error("win_rate", judge(instructions, ours, theirs))}
    outcomes, preferences = PairwiseJudge(base.reference_pair()).judge_both_orders(instructions, ours, theirs)
    return {**result, **_mean_and_error("win_rate", outcomes), **_mean_and_error("preference", preferences)}


def _mean_and_error(name: str, values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / max(n - 1, 1)
    suffix = "" if name == "win_rate" else f"_{name}"
    return {name: mean, f"standard_error{suffix}": math.sqrt(variance / n)}
