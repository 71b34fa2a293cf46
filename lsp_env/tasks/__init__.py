"""Tasks: what the game is about. A task supplies the two roles' prompts, turns the challenger's text into a
query, and names its default reward hook and its data-mode prompt list."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources

import numpy as np

from .. import prompts
from . import arithmetic, instruction_data, instructions


class InvalidQuery(ValueError):
    """The challenger's output holds no usable query (the round ends; the challenger is penalised)."""


class DialogueTask:
    """Open-ended instructions, as in the paper: the challenger writes a request, the solver answers it."""

    name = "dialogue"
    default_reward = "judge"

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
    default_reward = "arithmetic"

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

    heldout_splits = ("test",)

    def heldout(self, split: str = "test", n_per_level: int = 40, levels: tuple[str, ...] | None = None) -> list[dict]:
        """The held-out problems (a fixed seed; the data mode's generator never draws them): ``{"prompt", "level"}``."""
        if split not in self.heldout_splits:
            raise ValueError(f"split={split!r}: arithmetic has one held-out set, {self.heldout_splits}")
        problems = arithmetic.heldout_problems(n_per_level)
        return [{"prompt": p, "level": level} for level in (levels or arithmetic.LEVELS) for p in problems[level]]

    def score(self, items: list[dict], answers: list[str]) -> dict:
        """Solve rate per level, overall, and over the headline levels present (1-digit sums, 2+1-digit sums,
        1-digit products): ``{"per_level", "overall", "headline", "n"}``."""
        solved: dict[str, list[float]] = {}
        for item, answer in zip(items, answers, strict=True):
            solved.setdefault(item["level"], []).append(
                arithmetic.score_answer(answer, arithmetic.evaluate(item["prompt"])))
        headline = [x for level in arithmetic.HEADLINE_LEVELS for x in solved.get(level, [])]
        every = [x for xs in solved.values() for x in xs]
        return {"per_level": {level: sum(xs) / len(xs) for level, xs in solved.items()},
                "overall": sum(every) / max(len(every), 1), "headline": sum(headline) / max(len(headline), 1),
                "n": len(every)}


IF_CHALLENGER_SYSTEM = (
    "You write requests for an AI assistant. Each request asks for a short piece of writing and adds one to three "
    "instructions about the form of the answer that can be checked: its length, words to use or avoid, letter case, "
    "punctuation, format, how it starts or ends. Reply with the request only, like the examples."
)
IF_CHALLENGER_USER = "Write one new request."
IF_SOLVER_SYSTEM = "You are a helpful assistant. Follow every instruction in the request exactly."


class InstructionsTask:
    """Instruction following (IFEval's verifiable instructions): the challenger writes a request with checkable
    instructions, the solver's answer is checked against each of them.

    The challenger's text is reduced to a request by :func:`prompts.extract_query` (labels, ``<query>`` tags and one
    pair of enclosing quotes dropped) and kept as written: it is the solver's user turn. Its instructions are found
    by :func:`instructions.recognise` (ids, phrasings and rules in :mod:`lsp_env.tasks.instructions`). The request
    is invalid when no instruction is recognised, when one's arguments are unusable, when two contradict, or when
    no answer of at most ``max_answer_tokens × WORDS_PER_TOKEN`` words can follow them all (default 64 tokens, 48
    words: set it to the generation budget of the solver). The challenger's chat holds ``challenger_examples``
    earlier turns (default 6) in which it answered with an example request written by the templates, drawn from the
    env's ``np_random``: with 6 rather than 3 the embedded model's requests are valid 20 % of the time instead of
    14 % at temperature 1, 45 % instead of 31 % at 0.7 (64 requests each). ``challenger_kinds=True`` names in each user
    turn the kinds of instruction the request is to hold (``instructions.KIND_NAMES``): an example's own kinds, and
    for the new request 1-3 kinds drawn uniformly from the env's instruction ids. Before training it raised the
    embedded model's valid share at 0.7 from 46 % to 64 % (96 requests), but in 10-minute self-play runs the invalid
    share stayed where it was without it (29-32 % against 24-29 %), so it is off by default. The challenger still
    picks the topic, the arguments and the wording, and the env still recognises what it wrote, not what it was
    asked for (the named kinds appeared in about a quarter of the valid requests).
    ``answer_info`` reports, for the env's ``info``, each instruction's id, arguments and whether the answer passed;
    ``query_kinds`` a request's instruction ids, which the env's ``coverage_bonus`` counts.
    The held-out evaluation is :meth:`heldout` (IFEval-style items: ``dev`` and ``test`` hold out the topics,
    ``test_rephrased`` the topics and the wording, see :mod:`lsp_env.tasks.instruction_data`) scored by
    :meth:`score` (IFEval's four accuracies and the rate per instruction id).
    """

    name = "instructions"
    default_reward = "instructions"
    heldout_splits = ("dev", "test", "test_rephrased")

    def __init__(self, max_answer_tokens: int = instructions.DEFAULT_MAX_ANSWER_TOKENS, challenger_examples: int = 6,
                 challenger_kinds: bool = False):
        if int(max_answer_tokens) < 1:
            raise ValueError(f"max_answer_tokens={max_answer_tokens}: the solver needs at least one token")
        if int(challenger_examples) < 0:
            raise ValueError(f"challenger_examples={challenger_examples}: want 0 or more example requests")
        self.max_answer_tokens = int(max_answer_tokens)
        self.challenger_examples = int(challenger_examples)
        self.challenger_kinds = bool(challenger_kinds)
        self.max_answer_words = int(self.max_answer_tokens * instructions.WORDS_PER_TOKEN)

    def challenger_messages(self, rng: np.random.Generator, examples: Sequence[str] = ()) -> list[dict]:
        """The challenger's chat: ``challenger_examples`` earlier turns, the last ``len(examples)`` of them the given
        requests (the env's example archive), the others written by the templates, then the turn to answer."""
        chat = [{"role": "system", "content": IF_CHALLENGER_SYSTEM}]
        written = [instruction_data.generate_request(rng, max_words=self.max_answer_words)
                   for _ in range(self.challenger_examples - len(examples))]
        for example in written + [{"prompt": q, "instruction_id_list": self.query_kinds(q)} for q in examples]:
            chat += [{"role": "user", "content": self._ask(example)},
                     {"role": "assistant", "content": example["prompt"]}]
        # with challenger_kinds the kinds asked for are those of one more request the templates would write (its
        # text unused): uniform over the instruction ids, 1-3 of them, never two that contradict
        target = self.challenger_kinds and instruction_data.generate_request(rng, max_words=self.max_answer_words)
        return chat + [{"role": "user", "content": self._ask(target)}]

    def _ask(self, request: dict) -> str:
        if not self.challenger_kinds:
            return IF_CHALLENGER_USER
        kinds = "; ".join(instructions.KIND_NAMES[i] for i in request["instruction_id_list"])
        return f"{IF_CHALLENGER_USER[:-1]} with these instructions: {kinds}."

    def recognise(self, query: str) -> list[instructions.Instruction]:
        """The instructions of a valid request (:meth:`parse_query`'s output)."""
        return instructions.recognise(query).instructions

    def query_kinds(self, query: str) -> list[str]:
        """The instruction ids of a valid request: the kinds the env's coverage bonus counts."""
        return sorted({inst.id for inst in self.recognise(query)})

    def parse_query(self, text: str) -> str:
        query = prompts.extract_query(text)
        if query is None:
            raise InvalidQuery("no usable request: empty, no letter or digit, or over "
                               f"{prompts.MAX_QUERY_CHARS} characters")
        found = instructions.recognise(query)
        if found.problems:
            raise InvalidQuery("; ".join(found.problems))
        if not found.instructions:
            raise InvalidQuery("no verifiable instruction recognised (e.g. 'Answer in at most 50 words.', "
                               "'Do not use any commas.', 'Include the keywords river and light.')")
        reasons = instructions.problems(found.instructions, self.max_answer_words)
        if reasons:
            raise InvalidQuery("; ".join(reasons))
        return query

    def solver_messages(self, query: str) -> list[dict]:
        return prompts.messages(IF_SOLVER_SYSTEM, query)

    def default_prompts(self) -> list[str]:
        return [p for p in read_lines("instructions_train.txt") if self._fits(p)]

    def _fits(self, request: str) -> bool:
        return not instructions.problems(self.recognise(request), self.max_answer_words)

    def answer_info(self, query: str, answer: str) -> dict:
        """``{"instructions": [{"id", "kwargs", "passed"}, ...]}``: the strict check of each instruction."""
        return {"instructions": [{**inst.to_dict(), "passed": instructions.check(inst, answer)}
                                 for inst in self.recognise(query)]}

    def heldout(self, split: str = "test") -> list[dict]:
        """The held-out items of a split: ``{"key", "prompt", "instruction_id_list", "kwargs", "topic"}``."""
        if split not in self.heldout_splits:
            raise ValueError(f"split={split!r}: use one of {self.heldout_splits}")
        text = resources.files("lsp_env").joinpath("data", "instructions_eval.json").read_text(encoding="utf-8")
        return json.loads(text)[split]

    def score(self, items: list[dict], answers: list[str]) -> dict:
        """IFEval's ``prompt_strict``, ``prompt_loose``, ``instruction_strict``, ``instruction_loose`` and
        ``per_instruction`` rates (:func:`instructions.score`)."""
        return instructions.score(items, answers)


TASKS = {"dialogue": DialogueTask, "arithmetic": ArithmeticTask, "instructions": InstructionsTask}


def read_lines(name: str) -> list[str]:
    text = resources.files("lsp_env").joinpath("data", name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]
