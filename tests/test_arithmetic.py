"""Tests for lsp_env.tasks.arithmetic: extraction, the bounded parser, answer parsing, generation."""

import re
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lsp_env.tasks.arithmetic import (
    HEADLINE_LEVELS,
    LEVELS,
    MAX_ABS_VALUE,
    MAX_DEPTH,
    MAX_EXPRESSION_CHARS,
    MAX_OPERAND_DIGITS,
    MAX_OPERATORS,
    InvalidProblem,
    evaluate,
    extract_problem,
    generate_problem,
    generate_problems,
    heldout_problems,
    normalise,
    parse_final_number,
    parse_problem,
    score_answer,
    training_problems,
)

# Generous: every call here takes milliseconds; the bound only catches hangs and quadratic blow-ups.
FAST_S = 1.0
LINEAR_S = 2.0


def assert_linear(fn, text):
    start = time.perf_counter()
    fn(text)
    assert time.perf_counter() - start < LINEAR_S


# ---------------------------------------------------------------------------------------------
# normalise and extract_problem


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3 x 4", "3 * 4"),
        ("3x4", "3*4"),
        ("3X4", "3*4"),
        ("(2+1)x5", "(2+1)*5"),
        ("2 x (3)", "2 * (3)"),
        ("2x3x4", "2*3*4"),
        ("6 × 7", "6 * 7"),
        ("6·7", "6*7"),
        ("8 ÷ 2", "8 / 2"),
        ("9 \u2212 4", "9 - 4"),
        ("9 \u2013 4", "9 - 4"),
    ],
)
def test_normalise_rewrites_operators(text, expected):
    assert normalise(text) == expected


@pytest.mark.parametrize("text", ["box", "next", "6 boxes", "x = 3", "2x + 3", "max(1, 2)", "3 x y"])
def test_normalise_keeps_x_in_words(text):
    assert normalise(text) == text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Here is a problem for you: 48 - 19. Good luck!", "48 - 19"),
        ("Problem 1: (17+25)*3", "(17+25)*3"),
        ("What is 3 x 4?", "3 * 4"),
        ("Compute 12 ÷ 4 − 1, please.", "12 / 4 - 1"),
        ("Try 3 - -2 now", "3 - -2"),
        ("either 1 + 1 or 12 + 34", "12 + 34"),  # the longest run wins
        ("1+2 and 3+4", "1+2"),  # ties go to the first
        ("  7*8  ", "7*8"),
    ],
)
def test_extract_problem_from_prose(text, expected):
    assert extract_problem(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "no numbers here", "42", "-5", "(7)", "I have 6 boxes and 3 bags", "6 boxes + 2", "3 - apples 4"],
)
def test_extract_problem_needs_an_operator_between_numbers(text):
    assert extract_problem(text) is None
    with pytest.raises(InvalidProblem, match="no arithmetic problem found"):
        parse_problem(text)


def test_extract_has_no_fallback_to_a_valid_piece():
    assert extract_problem("9**9**9**9") == "9**9**9**9"
    assert extract_problem("Compute 9**9**9**9 please") == "9**9**9**9"
    with pytest.raises(InvalidProblem):
        parse_problem("Compute 9**9**9**9 please")


def test_extract_returns_overlong_runs_and_parse_rejects_them():
    expression = "1+" * 150 + "1"
    assert extract_problem(f"Sum: {expression}.") == expression
    with pytest.raises(InvalidProblem, match="characters long"):
        parse_problem(expression)


@pytest.mark.parametrize(
    "text",
    [
        "1+" * 500_000,
        "1 x " * 250_000,
        ") + " * 250_000,
        "1 " * 500_000,
        "9 -" * 300_000,
        "(-" * 500_000,
        "box 1 x next " * 80_000,
        "1" + " " * 1_000_000 + "x",
    ],
)
def test_extract_is_linear_on_a_megabyte(text):
    assert_linear(extract_problem, text)


# ---------------------------------------------------------------------------------------------
# evaluate and parse_problem

HOSTILE = [
    "(" * 5000 + "1" + ")" * 5000,
    "1" * 20000 + "+1",
    "9**9**9**9",
    "__import__('os')",
    "().__class__",
    "lambda: 1",
    "10/0",
    "",
    "\x00",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_inputs_are_rejected_quickly(text):
    start = time.perf_counter()
    with pytest.raises(InvalidProblem):
        evaluate(text)
    with pytest.raises(InvalidProblem):
        parse_problem(text)
    assert time.perf_counter() - start < FAST_S


def nested(depth: int) -> str:
    return "(" * depth + "1" + ")" * depth


@pytest.mark.parametrize(
    "expression, message",
    [
        ("1" * (MAX_OPERAND_DIGITS + 1) + " + 1", "digits"),
        ("1" + "+1" * (MAX_OPERATORS + 1), "too many operators"),
        (nested(MAX_DEPTH + 1), "nest deeper"),
        ("-" * (MAX_DEPTH + 1) + "1", "nest deeper"),
        ("-" + nested(MAX_DEPTH), "nest deeper"),  # unary minus counts towards depth
        ("999999 * 999999 * 2", "exceeds"),
        ("999999 * 999999 * 10 / 10", "exceeds"),  # an intermediate over the bound is enough
        ("7/2", "not an integer"),
        ("1/0", "division by zero"),
        ("1 / (2 - 2)", "division by zero"),
        ("1 " * 100 + "+", "characters long"),
        ("2 ^ 3", "unexpected character"),
        ("1.5 + 1", "unexpected character"),
        ("(1 + 2", "missing"),
        ("(1 2)", "expected ')'"),
        ("1 + 2)", "after a complete expression"),
        ("1 2", "after a complete expression"),
        ("+1", "where an operand was expected"),
        ("()", "where an operand was expected"),
        ("1 +", "expression ends"),
        ("   ", "empty"),
    ],
)
def test_bounds_and_syntax_errors(expression, message):
    with pytest.raises(InvalidProblem, match=re.escape(message)):
        evaluate(expression)


@pytest.mark.parametrize(
    "expression, value",
    [
        ("9" * MAX_OPERAND_DIGITS + " + 0", 999999),
        ("1" + "+1" * MAX_OPERATORS, MAX_OPERATORS + 1),
        (nested(MAX_DEPTH), 1),
        ("-" * MAX_DEPTH + "1", 1),
        ("-" + nested(MAX_DEPTH - 1), -1),
        ("100000 * 100000 * 100", MAX_ABS_VALUE),
        ("-100000 * 100000 * 100", -MAX_ABS_VALUE),
        ("1" + " " * (MAX_EXPRESSION_CHARS - 3) + "+1", 2),
    ],
)
def test_limits_are_inclusive(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    "expression, value",
    [
        ("2+3*4", 14),
        ("(2+3)*4", 20),
        ("-3*-2", 6),
        ("10-2-3", 5),
        ("8/2/2", 2),
        ("2*3+4*5", 26),
        ("100/10*2", 20),
        ("-(2+3)", -5),
        ("--4", 4),
        ("2 - -3", 5),
        ("-7/2*2", None),  # left to right: -7/2 is not exact
        ("0 / 5", 0),
        ("-8 / 2", -4),
        ("8 / -2", -4),
        ("007 + 1", 8),
        ("1\t+\n2", 3),
    ],
)
def test_precedence_associativity_and_unary_minus(expression, value):
    if value is None:
        with pytest.raises(InvalidProblem):
            evaluate(expression)
    else:
        assert evaluate(expression) == value


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("(17+25)*3", "(17 + 25) * 3"),
        ("Problem 1: (17+25)*3", "(17 + 25) * 3"),
        ("-3*-2", "-3 * -2"),
        ("  2  -  -  3 ", "2 - -3"),
        ("- ( 2+3 )", "-(2 + 3)"),
        ("007+1", "7 + 1"),
        ("What is 3 x 4?", "3 * 4"),
    ],
)
def test_canonical_form(text, canonical):
    result, value = parse_problem(text)
    assert result == canonical
    assert parse_problem(canonical) == (canonical, value)


def test_canonical_form_must_fit_the_length_limit_too():
    # Dense text within the limit whose spaced-out canonical form is not.
    operand = nested(MAX_DEPTH)
    dense = "+".join([operand] * 11)
    assert len(dense) <= MAX_EXPRESSION_CHARS
    with pytest.raises(InvalidProblem, match="canonical form"):
        evaluate(dense)
    assert evaluate("+".join([operand] * 7)) == 7


# ---------------------------------------------------------------------------------------------
# parse_final_number and score_answer


@pytest.mark.parametrize(
    "answer, number",
    [
        ("The answer is **42**.", 42),
        ("= -7", -7),
        ("x = 3, so 3 + 4 = 7", 7),
        ("42.0", 42),
        ("3.00 apples", 3),
        ("4.5", None),
        ("The result is 12.50", None),
        ("5-3", 3),
        ("5 - 3 = 2", 2),
        ("Total: 1,234", 1234),
        ("-1,234,567.000", -1234567),
        ("1,2,3", 3),
        ("\u22127", -7),
        ("no digits", None),
        ("", None),
        ("1" * 101, None),
    ],
)
def test_parse_final_number(answer, number):
    assert parse_final_number(answer) == number


@pytest.mark.parametrize(
    "text",
    ["1," * 500_000, "-1" * 500_000, "1" * 1_000_000, "9.9" * 300_000, "1." + "0" * 1_000_000, "a-" * 500_000],
)
def test_parse_final_number_is_linear_on_a_megabyte(text):
    assert_linear(parse_final_number, text)


def test_score_answer():
    assert score_answer("2 + 3 * 4 = 14", 14) == 1.0
    assert score_answer("I think it is 15.", 14) == 0.0
    assert score_answer("no idea", 14) == 0.0
    assert score_answer("-19", -19) == 1.0


# ---------------------------------------------------------------------------------------------
# Generation

# level: (shape, operand ranges, value): an independent description of every level.
SHAPES = {
    "add_1d": (r"(\d+) \+ (\d+)", [(0, 9), (0, 9)], lambda a, b: a + b),
    "add_2d_1d": (r"(\d+) \+ (\d+)", [(10, 99), (0, 9)], lambda a, b: a + b),
    "mul_1d": (r"(\d+) \* (\d+)", [(2, 9), (2, 9)], lambda a, b: a * b),
    "add_2d": (r"(\d+) \+ (\d+)", [(10, 99), (10, 99)], lambda a, b: a + b),
    "sub_2d": (r"(\d+) - (\d+)", [(10, 99), (10, 99)], lambda a, b: a - b),
    "mul_2d_1d": (r"(\d+) \* (\d+)", [(10, 99), (2, 9)], lambda a, b: a * b),
    "mixed": (r"\((\d+) \+ (\d+)\) \* (\d+)", [(1, 20), (1, 20), (2, 9)], lambda a, b, c: (a + b) * c),
}


def expected_value(problem: str, level: str) -> int:
    """Check that the problem has the level's shape and ranges; return its value."""
    shape, ranges, compute = SHAPES[level]
    match = re.fullmatch(shape, problem)
    assert match, f"{problem!r} is not a {level} problem"
    operands = [int(group) for group in match.groups()]
    assert all(low <= x <= high for x, (low, high) in zip(operands, ranges)), problem
    return compute(*operands)


def test_levels_are_listed_in_order():
    assert list(LEVELS) == list(SHAPES)
    assert HEADLINE_LEVELS == ("add_1d", "add_2d_1d", "mul_1d")
    assert all(isinstance(description, str) and description for description in LEVELS.values())


def test_generate_problem_rejects_unknown_levels():
    with pytest.raises(ValueError, match="add_1d.*mixed"):
        generate_problem(np.random.default_rng(0), "add_3d")
    with pytest.raises(ValueError, match="unknown level"):
        generate_problems(3, 0, levels=("add_1d", "nope"))


def test_generate_problems_is_deterministic():
    assert generate_problems(50, 7) == generate_problems(50, 7)
    assert generate_problems(50, 7) != generate_problems(50, 8)
    assert training_problems(30, seed=1) == training_problems(30, seed=1)
    assert heldout_problems() == heldout_problems()


def test_generate_problems_cycles_through_levels():
    problems = generate_problems(10 * len(LEVELS), 3)
    assert len(set(problems)) == len(problems)
    for i, problem in enumerate(problems):
        level = list(LEVELS)[i % len(LEVELS)]
        assert parse_problem(problem) == (problem, expected_value(problem, level))


def test_generate_problems_excludes_and_runs_out():
    everything = generate_problems(64, 0, levels=("mul_1d",))
    assert len(set(everything)) == 64
    with pytest.raises(ValueError, match="mul_1d"):
        generate_problems(65, 0, levels=("mul_1d",))
    kept = generate_problems(4, 0, levels=("mul_1d",), exclude=set(everything[:60]))
    assert sorted(kept) == sorted(everything[60:])
    with pytest.raises(ValueError):
        generate_problems(5, 0, levels=("mul_1d",), exclude=set(everything[:60]))


def test_heldout_problems():
    heldout = heldout_problems()
    assert list(heldout) == list(LEVELS)
    sizes = {level: len(problems) for level, problems in heldout.items()}
    assert sizes == {level: 32 if level == "mul_1d" else 40 for level in LEVELS}
    for level, problems in heldout.items():
        assert len(set(problems)) == len(problems)
        for problem in problems:
            expected_value(problem, level)
    assert heldout_problems(seed=1) != heldout
    assert {level: len(p) for level, p in heldout_problems(5).items()} == {level: 5 for level in LEVELS}


def test_training_problems_never_include_heldout_ones():
    heldout = set().union(*heldout_problems().values())
    problems = training_problems(3000)
    assert not heldout & set(problems)
    mul = problems[2::3]
    assert all(re.fullmatch(SHAPES["mul_1d"][0], problem) for problem in mul)
    # The 32 mul_1d problems left for training come first without repeats, then again.
    assert len(set(mul[:32])) == 32
    assert set(mul) == set(mul[:32])
    wide = training_problems(500, levels=("mixed", "sub_2d"))
    assert len(set(wide)) == 500
    assert not heldout & set(wide)


# ---------------------------------------------------------------------------------------------
# Properties

EXPRESSION_TEXT = st.text(alphabet="0123456789+-*/() ", max_size=MAX_EXPRESSION_CHARS + 20)


@given(st.one_of(st.text(max_size=3000), EXPRESSION_TEXT))
def test_evaluate_only_ever_raises_invalid_problem(text):
    try:
        value = evaluate(text)
    except InvalidProblem:
        return
    assert isinstance(value, int)
    assert abs(value) <= MAX_ABS_VALUE


@given(st.one_of(st.text(max_size=3000), EXPRESSION_TEXT))
def test_parse_problem_canonical_form_is_a_fixed_point(text):
    try:
        canonical, value = parse_problem(text)
    except InvalidProblem:
        return
    assert parse_problem(canonical) == (canonical, value)
    assert evaluate(canonical) == value


@given(st.integers(0, 2**32 - 1), st.sampled_from(list(LEVELS)))
def test_generated_problems_evaluate_to_their_value(seed, level):
    problem = generate_problem(np.random.default_rng(seed), level)
    assert parse_problem(problem) == (problem, expected_value(problem, level))


@given(st.integers(-(10**40), 10**40))
def test_parse_final_number_reads_integers_back(n):
    assert parse_final_number(str(n)) == n
    assert parse_final_number(f"{n:,}") == n
    assert parse_final_number(f"So the answer is {n}.") == n


def test_minus_after_an_operand_is_subtraction_not_a_sign():
    assert parse_final_number("so 5 - 3") == 3
    assert parse_final_number("(2 + 3) -4") == 4
    assert parse_final_number("the answer is -4") == -4


def test_opening_parenthesis_after_a_problem_is_prose():
    assert parse_problem("Compute (17 + 25) * 3 (show your work)") == ("(17 + 25) * 3", 126)


def test_decimals_are_not_cut_into_an_integer_piece():
    assert extract_problem("0.55 + 0.55") == "0.55 + 0.55"
    with pytest.raises(InvalidProblem):
        parse_problem("A new example can be 49.6 + 37.4 today")


def test_example_levels_bound_the_challengers_few_shot_examples():
    import gymnasium
    import pytest

    from lsp_env.tasks import ArithmeticTask
    from lsp_env.tasks import arithmetic as arith

    env = gymnasium.make("LSP-Arith-v0", model="tiny-random", task_options={"example_levels": "mul_1d"})
    shown = set()
    for seed in range(5):
        _, info = env.reset(seed=seed)
        shown |= {m["content"] for m in info["messages"] if m["role"] == "assistant"}
    assert shown and all(" * " in e and all(2 <= int(x) <= 9 for x in e.split(" * ")) for e in shown), shown
    default = ArithmeticTask()
    assert default.example_levels == tuple(arith.LEVELS)
    with pytest.raises(ValueError, match="unknown"):
        ArithmeticTask(example_levels=("add_9d",))
