"""Arithmetic problems: finding one in prose, evaluating it safely, scoring answers, generating them.

Grammar (integers only; no powers, no unary plus)::

    expr   := term (('+' | '-') term)*
    term   := factor (('*' | '/') factor)*
    factor := INT | '(' expr ')' | '-' factor

Rules enforced by :func:`evaluate` (any breach raises :class:`InvalidProblem`):

* the text, and its canonical form, are at most ``MAX_EXPRESSION_CHARS`` characters long;
* only ASCII digits, ``+ - * / ( )`` and whitespace may appear, and the whole text must parse;
* every operand has at most ``MAX_OPERAND_DIGITS`` digits;
* there are at most ``MAX_OPERATORS`` operators, binary and unary minus together;
* parentheses and unary minus nest at most ``MAX_DEPTH`` deep (each one counts as a level);
* every intermediate value, and the result, lies within ``±MAX_ABS_VALUE``;
* ``/`` must divide exactly (a non-integral quotient is invalid), and dividing by zero is invalid.

The canonical form of an expression has one space either side of each binary operator, none
after a unary minus or inside parentheses, and operands without leading zeros, e.g.
``"(17+25)*3"`` -> ``"(17 + 25) * 3"`` and ``"-3*-2"`` -> ``"-3 * -2"``.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Iterator, Set
from dataclasses import dataclass

import numpy as np

MAX_EXPRESSION_CHARS = 200
MAX_OPERAND_DIGITS = 6
MAX_OPERATORS = 12
MAX_DEPTH = 8
MAX_ABS_VALUE = 10**12


class InvalidProblem(ValueError):
    """The text holds no arithmetic problem, or one that breaks the rules in the module docstring."""


# ---------------------------------------------------------------------------------------------
# Normalisation and extraction

_UNICODE_OPERATORS = str.maketrans({"×": "*", "·": "*", "÷": "/", "\u2212": "-", "\u2013": "-"})
# 'x' is a times sign only between two operands, so "box", "next" and "6 boxes" keep their letter.
_TIMES_X = re.compile(r"(?<=[0-9)])( *)[xX](?= *[0-9(])")
# A '.' between digits belongs to the run, so "0.55 + 0.55" comes back whole (and fails to parse: integers
# only) instead of as its piece "55 + 0".
_EXPRESSION_RUN = re.compile(r"(?:[0-9 ()+\-*/]|(?<=[0-9])\.(?=[0-9]))+")
# An operator between two operands. More operator characters may follow the first one: a unary
# minus ("3 - -2"), or junk such as the second '*' of "9**9" that the parser then rejects.
_BINARY_OPERATION = re.compile(r"[0-9)] *[-+*/][-+*/ ]*[0-9(]")


def normalise(text: str) -> str:
    """Rewrite the operators people type into ASCII ones.

    '×' and '·' become '*', '÷' becomes '/', and the minus sign (U+2212) and the en dash become
    '-'. The letter 'x' or 'X' becomes '*' only between an operand end (a digit or ')') and an
    operand start (a digit or '('), spaces allowed either side: "3 x 4", "3x4", "(2+1)x5".
    Nothing else changes, so the result has the same length as the input.
    """
    return _TIMES_X.sub(r"\1*", text.translate(_UNICODE_OPERATORS))


def extract_problem(text: str) -> str | None:
    """Return the arithmetic expression a piece of prose poses, or None if it poses none.

    Rule: after :func:`normalise`, take the maximal runs of expression characters (digits,
    spaces, ``+ - * / ( )``), strip the spaces around each and any opening parentheses that end it, keep the runs
    that contain an operator between two operands (a digit or ')', optional spaces, one of ``+ - * /``, optional further
    operator characters or spaces, a digit or '('), and return the longest (the first on ties).

    The run is not validated: the caller parses it, and if that fails the query is invalid.
    There is deliberately no fallback to a valid piece of it, so "9**9**9**9" comes back whole
    (and then fails to parse) rather than as "9"; runs longer than ``MAX_EXPRESSION_CHARS`` come
    back too. Runs in linear time in the length of the text.
    """
    best: str | None = None
    for run in _EXPRESSION_RUN.finditer(normalise(text)):
        # an opening parenthesis that ends a run opens prose ("3 * 4 (easy)"), not the problem
        candidate = run.group().strip(" ").rstrip("( ")
        # The length test comes first so that only runs that could win are searched.
        if (best is None or len(candidate) > len(best)) and _BINARY_OPERATION.search(candidate):
            best = candidate
    return best


# ---------------------------------------------------------------------------------------------
# Parsing and evaluation

_TOKEN = re.compile(r"(?P<space>[ \t\r\n]+)|(?P<number>[0-9]+)|(?P<symbol>[-+*/()])")
_OPERATORS = ("+", "-", "*", "/")

_Token = int | str  # an operand's value, or one of the symbols + - * / ( )


def _tokenise(expression: str) -> list[_Token]:
    """Split the text into tokens, enforcing the length, character, digit and operator limits."""
    # Checked before anything else so that huge inputs cost nothing.
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise InvalidProblem(
            f"expression is {len(expression)} characters long (max {MAX_EXPRESSION_CHARS})"
        )
    tokens: list[_Token] = []
    pos = 0
    while pos < len(expression):
        match = _TOKEN.match(expression, pos)
        if match is None:
            raise InvalidProblem(f"unexpected character {expression[pos]!r} at position {pos}")
        pos = match.end()
        if match.lastgroup == "number":
            digits = match.group()
            if len(digits) > MAX_OPERAND_DIGITS:
                raise InvalidProblem(
                    f"operand {digits} has {len(digits)} digits (max {MAX_OPERAND_DIGITS})"
                )
            tokens.append(int(digits))
        elif match.lastgroup == "symbol":
            tokens.append(match.group())
    if not tokens:
        raise InvalidProblem("empty expression")
    operators = sum(token in _OPERATORS for token in tokens)
    if operators > MAX_OPERATORS:
        raise InvalidProblem(f"too many operators: {operators} (max {MAX_OPERATORS})")
    return tokens


def _bounded(value: int) -> int:
    if abs(value) > MAX_ABS_VALUE:
        raise InvalidProblem(f"intermediate value {value} exceeds {MAX_ABS_VALUE} in magnitude")
    return value


def _divide(dividend: int, divisor: int) -> int:
    if divisor == 0:
        raise InvalidProblem("division by zero")
    if dividend % divisor:
        raise InvalidProblem(f"{dividend} / {divisor} is not an integer")
    return dividend // divisor


class _Parser:
    """Recursive descent over the tokens; every rule, like parse, returns (canonical text, value)."""

    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._pos = 0

    def parse(self) -> tuple[str, int]:
        text, value = self._expr(0)
        if self._pos < len(self._tokens):
            raise InvalidProblem(f"unexpected {self._tokens[self._pos]!r} after a complete expression")
        return text, value

    def _peek(self) -> _Token | None:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else None

    def _take(self) -> _Token:
        token = self._peek()
        if token is None:
            raise InvalidProblem("expression ends where an operand was expected")
        self._pos += 1
        return token

    def _expr(self, depth: int) -> tuple[str, int]:
        text, value = self._term(depth)
        while self._peek() in ("+", "-"):
            operator = self._take()
            right_text, right = self._term(depth)
            value = _bounded(value + right if operator == "+" else value - right)
            text = f"{text} {operator} {right_text}"
        return text, value

    def _term(self, depth: int) -> tuple[str, int]:
        text, value = self._factor(depth)
        while self._peek() in ("*", "/"):
            operator = self._take()
            right_text, right = self._factor(depth)
            value = _bounded(value * right) if operator == "*" else _divide(value, right)
            text = f"{text} {operator} {right_text}"
        return text, value

    def _factor(self, depth: int) -> tuple[str, int]:
        token = self._take()
        if isinstance(token, int):
            return str(token), token
        if token not in ("(", "-"):
            raise InvalidProblem(f"unexpected {token!r} where an operand was expected")
        # Checked on the way down, so deep nesting fails long before Python's recursion limit.
        depth += 1
        if depth > MAX_DEPTH:
            raise InvalidProblem(f"parentheses and unary minus nest deeper than {MAX_DEPTH}")
        if token == "-":
            text, value = self._factor(depth)
            return f"-{text}", -value
        text, value = self._expr(depth)
        closing = self._peek()
        if closing != ")":
            raise InvalidProblem(
                "missing ')'" if closing is None else f"expected ')' but found {closing!r}"
            )
        self._pos += 1
        return f"({text})", value


def _parse(expression: str) -> tuple[str, int]:
    canonical, value = _Parser(_tokenise(expression)).parse()
    # Spacing can lengthen a dense expression; bounding the canonical form too means every
    # canonical string this module hands out parses again to itself.
    if len(canonical) > MAX_EXPRESSION_CHARS:
        raise InvalidProblem(
            f"canonical form is {len(canonical)} characters long (max {MAX_EXPRESSION_CHARS})"
        )
    return canonical, value


def evaluate(expression: str) -> int:
    """Return the value of an ASCII expression; raise InvalidProblem naming the broken rule.

    The text must be an expression and nothing else (use :func:`parse_problem` for prose). The
    rules are in the module docstring; every input is rejected or evaluated quickly.
    """
    return _parse(expression)[1]


def parse_problem(text: str) -> tuple[str, int]:
    """Extract the problem a text poses and evaluate it: return (canonical expression, value).

    Raises InvalidProblem if no problem is found or if the extracted one breaks a rule.
    """
    expression = extract_problem(text)
    if expression is None:
        raise InvalidProblem("no arithmetic problem found (expected something like '48 - 19')")
    return _parse(expression)


# ---------------------------------------------------------------------------------------------
# Answers

# An optionally negative integer, with optional thousands separators and decimal part. A '-'
# (or U+2212 minus) is a sign only when no operand (a digit or ')', then at most one space) precedes it,
# so the last number of "5-3" and of "5 - 3" is 3.
_NUMBER = re.compile(
    r"(?P<sign>(?<![0-9)])(?<![0-9)] )[-\u2212])?"
    r"(?P<integer>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)"
    r"(?:\.(?P<fraction>[0-9]+))?"
)
# No valid problem's value comes near this; the cap keeps int() cheap on hostile answers.
_MAX_ANSWER_DIGITS = 100


def parse_final_number(answer: str) -> int | None:
    """Return the last number in a solver's answer, or None if it has no usable one.

    Words and markup around it are ignored ("The answer is **42**." -> 42, "= -7" -> -7).
    Thousands separators are dropped ("1,234" -> 1234). A decimal counts only if it is integral
    ("42.0" -> 42); if the last number is not ("4.5"), or it has more than 100 digits, the
    answer has no usable number and the result is None. Runs in linear time.
    """
    last = deque(_NUMBER.finditer(answer), maxlen=1)
    if not last:
        return None
    match = last[0]
    fraction = match["fraction"]
    if fraction and fraction.strip("0"):
        return None
    digits = match["integer"].replace(",", "")
    if len(digits) > _MAX_ANSWER_DIGITS:
        return None
    return -int(digits) if match["sign"] else int(digits)


def score_answer(answer: str, value: int) -> float:
    """1.0 if the answer's final number is the value, else 0.0."""
    return 1.0 if parse_final_number(answer) == value else 0.0


# ---------------------------------------------------------------------------------------------
# Generation


@dataclass(frozen=True)
class _Level:
    description: str
    template: str  # the canonical form, one '{}' per operand
    ranges: tuple[tuple[int, int], ...]  # each operand's inclusive range, in template order


_LEVELS = {
    "add_1d": _Level("a + b, a and b in 0..9", "{} + {}", ((0, 9), (0, 9))),
    "add_2d_1d": _Level("a + b, a in 10..99, b in 0..9", "{} + {}", ((10, 99), (0, 9))),
    "mul_1d": _Level("a * b, a and b in 2..9", "{} * {}", ((2, 9), (2, 9))),
    "add_2d": _Level("a + b, a and b in 10..99", "{} + {}", ((10, 99), (10, 99))),
    "sub_2d": _Level(
        "a - b, a and b in 10..99 (the result may be negative)", "{} - {}", ((10, 99), (10, 99))
    ),
    "mul_2d_1d": _Level("a * b, a in 10..99, b in 2..9", "{} * {}", ((10, 99), (2, 9))),
    "mixed": _Level(
        "(a + b) * c, a and b in 1..20, c in 2..9", "({} + {}) * {}", ((1, 20), (1, 20), (2, 9))
    ),
}

LEVELS: dict[str, str] = {name: level.description for name, level in _LEVELS.items()}
HEADLINE_LEVELS = ("add_1d", "add_2d_1d", "mul_1d")


def _level(name: str) -> _Level:
    try:
        return _LEVELS[name]
    except KeyError:
        raise ValueError(f"unknown level {name!r}; levels are {', '.join(LEVELS)}") from None


def _all_problems(name: str) -> list[str]:
    """Every distinct problem of a level, in a fixed order (at most 8,100 of them)."""
    level = _level(name)
    operands = itertools.product(*(range(low, high + 1) for low, high in level.ranges))
    return [level.template.format(*combo) for combo in operands]


def _shuffled(rng: np.random.Generator, pool: list[str], repeat: bool) -> Iterator[str]:
    """Yield the pool in random order; with repeat, start a fresh random pass when it runs out."""
    while pool:
        for index in rng.permutation(len(pool)):
            yield pool[index]
        if not repeat:
            return


def _draw(
    n: int, levels: tuple[str, ...], rng: np.random.Generator, exclude: Set[str], repeat: bool
) -> list[str]:
    """n problems, problem i of level levels[i % len(levels)], none of them in exclude."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if not levels:
        raise ValueError("levels must not be empty")
    # Sampling without replacement from each level's whole pool (8,100 problems at most) gives
    # distinct problems in bounded time, and runs out exactly when the pool does.
    pools = {
        name: [problem for problem in _all_problems(name) if problem not in exclude]
        for name in dict.fromkeys(levels)
    }
    streams = {name: _shuffled(rng, pool, repeat) for name, pool in pools.items()}
    problems = []
    for i in range(n):
        name = levels[i % len(levels)]
        problem = next(streams[name], None)
        if problem is None:
            raise ValueError(
                f"level {name!r} has only {len(pools[name])} distinct problems outside the"
                f" exclusions; {n} problems over levels {levels} need more"
            )
        problems.append(problem)
    return problems


def generate_problem(rng: np.random.Generator, level: str) -> str:
    """One problem of the level, in canonical form ("7 + 5", "(3 + 12) * 4").

    Operands are drawn uniformly from the level's ranges (see ``LEVELS``); an unknown level
    raises ValueError naming the levels.
    """
    spec = _level(level)
    return spec.template.format(*(int(rng.integers(low, high + 1)) for low, high in spec.ranges))


def generate_problems(
    n: int, seed: int, levels: tuple[str, ...] = tuple(LEVELS), exclude: Set[str] = frozenset()
) -> list[str]:
    """n distinct problems from ``numpy.random.default_rng(seed)``, none of them in exclude.

    Problem i has level ``levels[i % len(levels)]``. Each level's problems are drawn without
    replacement from all its problems outside exclude; if a level runs out, ValueError is raised
    (e.g. mul_1d has only 64 problems). The same arguments always give the same list.
    """
    return _draw(n, tuple(levels), np.random.default_rng(seed), exclude, repeat=False)


def heldout_problems(n_per_level: int = 40, seed: int = 20250907) -> dict[str, list[str]]:
    """The evaluation set: for each level, distinct problems that training never sees.

    A level gives ``min(n_per_level, half its distinct problems)``, so at least half of every
    level is left for training: with the defaults each level has 40, except mul_1d, which has 32
    of its 64. Each level draws from its own generator, seeded with (seed, its index in LEVELS),
    so a level's held-out set does not depend on the others.
    """
    if n_per_level < 0:
        raise ValueError(f"n_per_level must be non-negative, got {n_per_level}")
    heldout = {}
    for index, name in enumerate(LEVELS):
        pool = _all_problems(name)
        count = min(n_per_level, len(pool) // 2)
        order = np.random.default_rng([seed, index]).permutation(len(pool))[:count]
        heldout[name] = [pool[i] for i in order]
    return heldout


def training_problems(
    n: int, seed: int = 0, levels: tuple[str, ...] = HEADLINE_LEVELS
) -> list[str]:
    """n training problems, like :func:`generate_problems` but never one of ``heldout_problems()``.

    Problem i has level ``levels[i % len(levels)]``. Within a level, problems do not repeat until
    all of its non-held-out problems have been used; after that a fresh random pass begins, so
    a long list repeats the problems of small levels (mul_1d has 32, add_1d 60).
    """
    excluded = frozenset(itertools.chain.from_iterable(heldout_problems().values()))
    return _draw(n, tuple(levels), np.random.default_rng(seed), excluded, repeat=True)
