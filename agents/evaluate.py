"""Held-out evaluation: arithmetic solve rates (greedy) and dialogue win rate against the base model.

Entry point with JSON out: ``python benchmarks/eval.py``. The problems and instructions here are never trained on:
the arithmetic held-out set comes from a fixed seed and the data mode's generator excludes it; the dialogue list
(``lsp_env/data/dialogue_eval.txt``) is disjoint from the training list.
"""

from __future__ import annotations

import math

from lsp_env.rewards import PairwiseJudge
from lsp_env.tasks import ArithmeticTask, read_lines
from lsp_env.tasks import arithmetic

from .policy import Policy


def arithmetic_solve_rates(policy: Policy, n_per_level: int = 40, max_new_tokens: int = 32,
                           levels: tuple[str, ...] = tuple(arithmetic.LEVELS), batch_size: int = 64) -> dict:
    """Greedy solve rate per level, overall, and over the headline levels (1-digit sums, 2+1-digit sums, 1-digit products)."""
    task = ArithmeticTask()
    problems = arithmetic.heldout_problems(n_per_level)
    rates, solved_all, total_all = {}, 0, 0
    for level in levels:
        chats = [task.solver_messages(p) for p in problems[level]]
        answers = []
        for start in range(0, len(chats), batch_size):
            answers += policy.generate(chats[start:start + batch_size], max_new_tokens=max_new_tokens, do_sample=False)
        solved = sum(arithmetic.score_answer(a.text, arithmetic.evaluate(p)) for a, p in zip(answers, problems[level]))
        rates[level] = solved / len(chats)
        solved_all += solved
        total_all += len(chats)
    headline = [lvl for lvl in arithmetic.HEADLINE_LEVELS if lvl in rates]
    counts = {lvl: len(problems[lvl]) for lvl in levels}
    return {
        "per_level": rates,
        "overall": solved_all / total_all,
        "headline": sum(rates[lvl] * counts[lvl] for lvl in headline) / max(sum(counts[lvl] for lvl in headline), 1),
        "n": total_all,
    }


def dialogue_win_rate(policy: Policy, base: Policy, judge=None, max_new_tokens: int = 128, limit: int | None = None) -> dict:
    """AlpacaEval-style win rate of ``policy`` against ``base`` on the held-out instructions (greedy answers).

    ``judge(queries, answers, others) -> list[float]`` scores each pair: the built-in :class:`PairwiseJudge`
    (on the base model) judges both orders, so position bias cancels, and counts a split decision as a tie (0.5).
    """
    instructions = read_lines("dialogue_eval.txt")[:limit]
    judge = judge or PairwiseJudge(base.reference_pair())
    chats = [[{"role": "user", "content": q}] for q in instructions]
    ours = [c.text for c in policy.generate(chats, max_new_tokens=max_new_tokens, do_sample=False)]
    theirs = [c.text for c in base.generate(chats, max_new_tokens=max_new_tokens, do_sample=False)]
    outcomes = judge(instructions, ours, theirs)
    n = len(outcomes)
    win_rate = sum(outcomes) / n
    variance = sum((o - win_rate) ** 2 for o in outcomes) / max(n - 1, 1)
    return {"win_rate": win_rate, "standard_error": math.sqrt(variance / n), "n": n}
