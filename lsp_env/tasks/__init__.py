"""Tasks: what the game is about. A task supplies the two roles' prompts, turns the challenger's text into a
query, and names its default reward hook and its data-mode prompt list."""

from __future__ import annotations

from importlib import resources

import numpy as np

from .. import prompts
from . import arithmetic


class InvalidQuery(ValueError):
    """The challenger's output holds no usable query (the round ends; the challenger is penalised)."""


class DialogueTask:
    """Open-ended instructions, as in the paper: the challenger writes a request, the solver answers it."""

    name = "dialogue"

    def challenger_messages(self, rng: np.random.Generator) -> list[dict]:
        return prompts.messages(prompts.CHALLENGER_SYSTEM, prompts.CHALLENGER_USER)

    def parse_query(self, text: str) -> str:
        query = prompts.extract_query(text)
        if query is None:
            raise InvalidQuery(
                f"no usable query: empty, no letter or digit, or over {prompts.MAX_QUERY_CHARS} characters"
            )
        return query

    def solver_messages(self, query: str) -> list[dict]:
        return prompts.messages(prompts.SOLVER_SYSTEM, query)

    def default_prompts(self) -> list[str]:
        return read_lines("dialogue_train.txt")


ARITH_CHALLENGER_SYSTEM = (
    "You write arithmetic problems for a student. Use whole numbers and + - * / and parentheses. "
    "Reply with one expression only, like the examples."
)
ARITH_CHALLENGER_USER = "Write one new arithmetic problem."
ARITH_SOLVER_SYSTEM = "You are a careful calculator. Answer with the final number."


class ArithmeticTask:
    """Verifiable self-play: the challenger writes an arithmetic problem, the solver's final number is checked.

    The challenger's free text is reduced to one expression by :func:`arithmetic.extract_problem` (longest run of
    expression characters with an operator between two numbers; no fallback) and evaluated by the safe parser;
    the solver sees the canonical expression as "Compute <expr>. Answer with the final number.". The challenger's
    chat holds three earlier turns in which it answered with an example problem, drawn from the env's
    ``np_random`` (levels mixed): the format is shown, not described, and the examples vary from round to round
    instead of inviting it to copy three fixed ones. ``example_levels`` bounds the difficulty the examples show
    (default: every level of :data:`arithmetic.LEVELS`); the grammar the env accepts stays the same.
    """

    name = "arithmetic"

    def __init__(self, example_levels: tuple[str, ...] | str | None = None):
        if isinstance(example_levels, str):
            example_levels = tuple(level.strip() for level in example_levels.split(",") if level.strip())
        self.example_levels = tuple(example_levels or arithmetic.LEVELS)
        unknown = [level for level in self.example_levels if level not in arithmetic.LEVELS]
        if unknown:
            raise ValueError(f"example_levels: unknown {unknown}; levels are {', '.join(arithmetic.LEVELS)}")

    def challenger_messages(self, rng: np.random.Generator) -> list[dict]:
        levels = self.example_levels
        examples = [arithmetic.generate_problem(rng, levels[int(rng.integers(len(levels)))]) for _ in range(3)]
        chat = [{"role": "system", "content": ARITH_CHALLENGER_SYSTEM}]
        for example in examples:  # few-shot as earlier turns: 17/24 valid problems at T=1, against 10/24 inline
            chat += [{"role": "user", "content": ARITH_CHALLENGER_USER}, {"role": "assistant", "content": example}]
        return chat + [{"role": "user", "content": ARITH_CHALLENGER_USER}]

    def parse_query(self, text: str) -> str:
        try:
            expression, _ = arithmetic.parse_problem(prompts.clean_text(text))
        except arithmetic.InvalidProblem as err:
            raise InvalidQuery(str(err)) from None
        return expression

    def solver_messages(self, query: str) -> list[dict]:
        return prompts.messages(ARITH_SOLVER_SYSTEM, f"Compute {query}. Answer with the final number.")

    def default_prompts(self) -> list[str]:
        return arithmetic.training_problems(2000)


TASKS = {"dialogue": DialogueTask, "arithmetic": ArithmeticTask}


def read_lines(name: str) -> list[str]:
    text = resources.files("lsp_env").joinpath("data", name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]
