"""The env contract of every registered id, on the tiny random model.

Reward hooks here are plain callables with known outputs, so every payoff can be checked exactly; the built-in
judge is exercised once (its scores lie in [0, 1]) and in ``test_kl_and_hooks.py``.
"""

import time

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import lsp_env
from lsp_env import ENV_IDS, PAYOFFS, LSPEnv, LSPVectorEnv
from lsp_env.prompts import MAX_ANSWER_CHARS, MAX_QUERY_CHARS
from lsp_env.tasks import arithmetic

ALL_IDS = list(ENV_IDS)
SELF_PLAY_IDS = [i for i in ALL_IDS if not ENV_IDS[i].get("prompts")]
DATA_IDS = [i for i in ALL_IDS if ENV_IDS[i].get("prompts")]
ARITH_IDS = [i for i in ALL_IDS if ENV_IDS[i]["task"] == "arithmetic"]

# one valid challenger text per task, and the query the solver then sees
VALID = {"dialogue": ("Name three prime numbers.", "Name three prime numbers."),
         "arithmetic": ("What is 12 + 30?", "12 + 30"),
         "instructions": ("Query: Name three prime numbers. Use no commas.",
                          "Name three prime numbers. Use no commas.")}


def task_of(env_id):
    return ENV_IDS[env_id]["task"]


def make(env_id, **kwargs):
    """``gymnasium.make`` on the tiny model; dialogue ids get the cheap length reward unless told otherwise."""
    kwargs.setdefault("model", "tiny-random")
    if task_of(env_id) == "dialogue":
        kwargs.setdefault("reward", "length")
    return gymnasium.make(env_id, **kwargs)


def quarter_length(queries, answers):
    """A reward with known, exactly representable values: len(answer) / 4."""
    return [len(a) / 4 for a in answers]


class Counting:
    """A reward hook that records the size of every batch it is called with."""

    def __init__(self, value=lambda a: len(a) / 10):
        self.batches = []
        self.value = value

    def __call__(self, queries, answers):
        assert len(queries) == len(answers)
        self.batches.append(list(zip(queries, answers)))
        return [self.value(a) for a in answers]


@pytest.fixture(autouse=True)
def _tiny(tiny_pair):
    """Load the tiny model once, outside the timing of any one test (envs share it via the cache)."""


# ---- gymnasium's own checker ------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ALL_IDS)
def test_check_env_passes(env_id):
    env = make(env_id)
    check_env(env.unwrapped)
    assert isinstance(env.unwrapped, LSPEnv)


# ---- turn order ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", SELF_PLAY_IDS)
def test_turn_order(env_id):
    G = 3
    env = make(env_id, num_generations=G)
    text, query = VALID[task_of(env_id)]

    obs, info = env.reset(seed=0)
    assert obs["role"] == 0 and info["role"] == "challenger"
    assert env.observation_space.contains(obs)
    messages = info["messages"]
    assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"  # arithmetic adds few-shot turns between
    assert all(isinstance(m["content"], str) and m["content"] for m in messages)
    assert obs["prompt"] == messages[-1]["content"]

    obs, reward, terminated, truncated, info = env.step(text)
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert obs["role"] == 1 and info["role"] == "solver"
    assert info["query"] == query
    if task_of(env_id) == "dialogue":
        assert obs["prompt"] == query
    else:
        assert query in obs["prompt"]
    assert info["messages"][-1] == {"role": "user", "content": obs["prompt"]}
    assert "rewards" not in info

    step_rewards = []
    for j in range(G):
        obs, reward, terminated, truncated, info = env.step(f"answer number {j}")
        step_rewards.append(reward)
        assert obs["role"] == 1 and not truncated
        assert terminated == (j == G - 1)
        assert ("rewards" in info) == terminated
    assert set(info["rewards"]) == {"challenger", "solver"}
    assert isinstance(info["rewards"]["challenger"], float)
    assert info["rewards"]["solver"] == pytest.approx(step_rewards)
    assert len(info["rewards"]["solver"]) == G


def test_zero_sum_payoff_is_minus_mean_solver_reward():
    env = make("LSP-Zero-v0", reward=quarter_length, num_generations=3)
    env.reset(seed=0)
    env.step("Name three prime numbers.")
    step_rewards = []
    for a in ("a", "bb", "ccc"):
        _, reward, terminated, _, info = env.step(a)
        step_rewards.append(reward)
    assert terminated
    assert step_rewards == [0.25, 0.5, 0.75]
    assert info["rewards"] == {"challenger": -0.5, "solver": [0.25, 0.5, 0.75]}
    assert info["rewards"]["challenger"] == -float(np.mean(info["rewards"]["solver"]))
    assert info["group_value"] == 0.5
    assert info["round"] == lsp_env.RoundResult("Name three prime numbers.", ("a", "bb", "ccc"), (0.25, 0.5, 0.75),
                                                (0.25, 0.5, 0.75), (0.0, 0.0, 0.0), -0.5, 0.5)


def test_the_last_step_records_the_round_with_quality_and_an_invalid_query_with_its_reason():
    env = make("LSP-Zero-v0", reward=quarter_length, quality=lambda qs, ans: [0.5] * len(ans), num_generations=2)
    env.reset(seed=0)
    env.step("Name three prime numbers.")
    for a in ("a", "bb"):
        _, _, _, _, info = env.step(a)
    record = info["round"]
    assert record.scores == (0.25, 0.5) and record.quality == (0.5, 0.5) and record.rewards == (0.75, 1.0)
    assert record.payoff == info["rewards"]["challenger"] and record.value == 0.375
    env.reset(seed=0)
    _, _, terminated, _, info = env.step("")
    assert terminated and info["round"].query is None and info["round"].answers == ()
    assert info["round"].payoff == -1.0 and info["round"].invalid_reason == info["invalid_reason"]


@pytest.mark.parametrize("quality_weight", [1.0, 0.5])
def test_lsp_quality_hook_formula(quality_weight):
    def quality(queries, answers):
        return [1.0 / len(a) for a in answers]  # 1, 0.5, 0.25 for the answers below

    env = make("LSP-v0", reward=quarter_length, quality=quality, quality_weight=quality_weight, num_generations=3)
    env.reset(seed=0)
    env.step("Name three prime numbers.")
    answers = ["a", "bb", "cccc"]
    R = [0.25, 0.5, 1.0]
    Q = [1.0, 0.5, 0.25]
    step_rewards = []
    for a in answers:
        _, reward, terminated, _, info = env.step(a)
        step_rewards.append(reward)
    assert terminated
    expected_solver = [r + quality_weight * q for r, q in zip(R, Q)]
    assert step_rewards == pytest.approx(expected_solver)
    assert info["rewards"]["solver"] == pytest.approx(expected_solver)
    assert info["rewards"]["challenger"] == pytest.approx(-np.mean(R) + quality_weight * np.mean(Q))
    assert info["group_value"] == pytest.approx(np.mean(R))  # V(q) is over the raw rewards only


def test_lsp_default_self_quality_changes_rewards(tiny_pair):
    """LSP-v0 adds the tiny model's self-quality score (in [0, 1]) to the raw reward; LSP-Zero-v0 does not."""
    rewards = {}
    for env_id in ("LSP-v0", "LSP-Zero-v0"):
        env = make(env_id, reward=quarter_length, num_generations=1)
        env.reset(seed=0)
        env.step("Name three prime numbers.")
        rewards[env_id] = env.step("2, 3, 5")[1]
    assert rewards["LSP-Zero-v0"] == 7 / 4
    assert 7 / 4 <= rewards["LSP-v0"] <= 7 / 4 + 1.0
    assert rewards["LSP-v0"] != rewards["LSP-Zero-v0"]


def test_default_judge_reward_in_unit_interval():
    env = gymnasium.make("LSP-Zero-v0", model="tiny-random", num_generations=2)  # default reward: the LLM judge
    assert isinstance(env.unwrapped.reward_fn, lsp_env.LLMJudge)
    env.reset(seed=0)
    env.step("Explain why the sky is blue.")
    env.step("Rayleigh scattering of sunlight by air molecules.")
    *_, terminated, _, info = env.step("It is blue because blue.")
    assert terminated
    solver = info["rewards"]["solver"]
    assert len(solver) == 2 and all(isinstance(r, float) and 0.0 <= r <= 1.0 for r in solver)
    assert info["rewards"]["challenger"] == pytest.approx(-np.mean(solver))


# ---- invalid queries ----------------------------------------------------------------------------------------------
INVALID_TEXTS = {"empty": "", "blank": "   ", "over-long": "a" * (MAX_QUERY_CHARS + 1), "no-alnum": "?!?"}


@pytest.mark.parametrize("env_id", SELF_PLAY_IDS)
@pytest.mark.parametrize("kind", list(INVALID_TEXTS))
def test_invalid_query_ends_round(env_id, kind):
    hook = Counting()
    env = make(env_id, reward=hook, num_generations=2, invalid_query_penalty=-2.5)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(INVALID_TEXTS[kind])
    assert terminated and not truncated
    assert reward == -2.5
    assert info["invalid_query"] is True
    assert isinstance(info["invalid_reason"], str) and info["invalid_reason"]
    assert info["rewards"] == {"challenger": -2.5, "solver": []}
    assert hook.batches == []
    with pytest.warns(UserWarning, match="after the round ended"):
        assert env.step("anything")[1:3] == (0.0, True)
    assert hook.batches == []  # the ignored action was never scored


def test_invalid_query_default_penalty_and_length_boundary():
    env = make("LSP-Zero-v0")
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step("a" * (MAX_QUERY_CHARS + 1))
    assert terminated and reward == -1.0 and info["invalid_query"] is True
    env.reset(seed=0)
    obs, reward, terminated, _, info = env.step("a" * MAX_QUERY_CHARS)  # exactly at the bound: valid
    assert not terminated and obs["role"] == 1 and "invalid_query" not in info


HOSTILE_PROBLEMS = {
    "tower": "9**9**9**9",
    "names": "Alice and Bob went to the market.",
    "deep-parens": "(" * 5000 + "1" + ")" * 5000,
    "div-zero": "10/0",
}


@pytest.mark.parametrize("kind", list(HOSTILE_PROBLEMS))
def test_arith_hostile_problems_are_invalid(kind):
    env = make("LSP-Arith-v0", num_generations=2)
    env.reset(seed=0)
    start = time.perf_counter()
    _, reward, terminated, _, info = env.step(HOSTILE_PROBLEMS[kind])
    assert time.perf_counter() - start < 1.0
    assert terminated and reward == -1.0 and info["invalid_query"] is True
    assert info["rewards"] == {"challenger": -1.0, "solver": []}


def test_arith_problem_in_prose_is_extracted_and_checked():
    env = make("LSP-Arith-v0", num_generations=2)
    assert isinstance(env.unwrapped.reward_fn, lsp_env.ArithmeticReward)
    env.reset(seed=0)
    obs, reward, terminated, _, info = env.step("Here is a problem for you: 48 - 19. Good luck!")
    assert not terminated and reward == 0.0
    assert obs["role"] == 1 and "48 - 19" in obs["prompt"] and info["query"] == "48 - 19"
    _, right, _, _, _ = env.step("The answer is 29")
    _, wrong, terminated, _, info = env.step("30")
    assert (right, wrong) == (1.0, 0.0)
    assert terminated and info["rewards"] == {"challenger": -0.5, "solver": [1.0, 0.0]}


# ---- data mode ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", DATA_IDS)
def test_data_mode_starts_with_solver(env_id):
    G = 2
    env = make(env_id, num_generations=G)
    assert env.unwrapped.data_mode
    obs, info = env.reset(seed=0)
    assert obs["role"] == 1 and info["role"] == "solver"
    assert obs["prompt"] and info["query"]
    for j in range(G):
        _, _, terminated, _, info = env.step("42")
        assert terminated == (j == G - 1)
    assert info["rewards"]["challenger"] is None
    assert len(info["rewards"]["solver"]) == G


def test_data_mode_prompt_list_substitutes():
    env = make("LSP-Data-v0", prompts=["Explain photosynthesis in one sentence."], num_generations=1)
    obs, info = env.reset(seed=3)
    assert obs == {"role": 1, "prompt": "Explain photosynthesis in one sentence."}
    assert env.unwrapped.prompts == ["Explain photosynthesis in one sentence."]

    env = make("LSP-Arith-Data-v0", prompts=["7*6"], num_generations=2)
    obs, info = env.reset(seed=3)
    assert obs["role"] == 1 and "7 * 6" in obs["prompt"] and info["query"] == "7 * 6"
    env.step("42")
    *_, terminated, _, info = env.step("41")
    assert terminated and info["rewards"] == {"challenger": None, "solver": [1.0, 0.0]}


def test_data_mode_rejects_empty_prompt_list():
    with pytest.raises(ValueError, match=r"prompts=\[\]: data mode needs at least one prompt"):
        make("LSP-Data-v0", prompts=[])


# ---- misuse ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ["LSP-Zero-v0", "LSP-Arith-Data-v0"])
def test_step_before_reset_raises_and_after_the_end_warns_once_and_changes_nothing(env_id):
    env = make(env_id, num_generations=1)
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.unwrapped.step("hello")  # the env itself, not only gymnasium's OrderEnforcing wrapper
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.step("hello")
    env.reset(seed=0)
    if not env.unwrapped.data_mode:
        env.step("Name three prime numbers.")
    assert env.step("42")[2]
    with pytest.warns(UserWarning, match="after the round ended") as warned:
        obs, reward, terminated, truncated, info = env.step("one more")
        env.step("and another")  # warned once only
    assert len(warned) == 1 and (reward, terminated, truncated) == (0.0, True, False) and "rewards" not in info
    env.reset(seed=0)  # reset makes it usable again
    env.step("Name three prime numbers." if not env.unwrapped.data_mode else "42")


@pytest.mark.parametrize("action", [None, 42, 3.5, b"bytes", ["a list"], {"text": "x"}])
def test_non_str_action_raises_type_error(action):
    env = make("LSP-Zero-v0", num_generations=1)
    env.reset(seed=0)
    with pytest.raises(TypeError, match=r"action must be a str.*tokenizer\.decode"):
        env.step(action)
    obs, *_ = env.step("Name three prime numbers.")  # the failed step changed nothing
    assert obs["role"] == 1
    with pytest.raises(TypeError, match="must be a str"):
        env.step(None)


def test_lone_surrogate_and_huge_strings_do_not_crash():
    hook = Counting(value=lambda a: float(len(a)))
    env = make("LSP-Zero-v0", reward=hook, num_generations=2)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step("\ud800")  # only a replacement character remains: no query
    assert terminated and info["invalid_query"] is True

    env.reset(seed=0)
    _, _, terminated, _, info = env.step("x" * 1_000_000)  # far over MAX_QUERY_CHARS
    assert terminated and info["invalid_query"] is True

    env.reset(seed=0)
    env.step("Why? \ud800")
    _, reward, _, _, info = env.step("\ud800 ok")
    assert info["answer_truncated"] is False
    query, answer = hook.batches[-1][0]
    assert answer.endswith(" ok") and len(answer) == 4
    answer.encode("utf-8"), query.encode("utf-8")  # no lone surrogate reaches the hook: both encode
    _, reward, terminated, _, info = env.step("y" * 1_000_000)
    assert terminated and info["answer_truncated"] is True
    assert reward == MAX_ANSWER_CHARS and len(hook.batches[-1][0][1]) == MAX_ANSWER_CHARS


def test_lone_surrogate_becomes_replacement_character():
    hook = Counting()
    env = make("LSP-Zero-v0", reward=hook, num_generations=1)
    env.reset(seed=0)
    env.step("Why is the sky blue?")
    env.step("\ud800 ok")
    assert hook.batches[-1][0][1] == "\ufffd ok"


def test_non_finite_hook_score_raises():
    env = make("LSP-Zero-v0", reward=lambda q, a: [float("nan")], num_generations=1)
    env.reset(seed=0)
    env.step("Name three prime numbers.")
    with pytest.raises(ValueError, match="non-finite"):
        env.step("answer")


@pytest.mark.parametrize("kwargs,message", [
    ({"num_generations": 0}, r"num_generations=0: the solver must answer at least once"),
    ({"payoff": "nope"}, r"payoff='nope': use one of"),
    ({"task": "chess"}, r"task='chess': use one of"),
    ({"reward": "nope"}, r"unknown hook 'nope'"),
    ({"render_mode": "rgb_array"}, r"render_mode='rgb_array': use one of"),
])
def test_bad_constructor_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LSPEnv(model="tiny-random", **{"reward": "length", **kwargs})


# ---- seeding --------------------------------------------------------------------------------------------------------
def test_arith_challenger_prompt_follows_the_seed():
    a, b = make("LSP-Arith-v0"), make("LSP-Arith-v0")
    messages = lambda env, seed: env.reset(seed=seed)[1]["messages"]  # noqa: E731
    assert messages(a, 123) == messages(b, 123)
    assert messages(a, 0) != messages(a, 1)
    # three earlier turns in which the challenger answered with an example problem drawn from np_random
    examples = [m["content"] for m in messages(a, 0) if m["role"] == "assistant"]
    # each one a canonical problem of the grammar (evaluate raises on anything else), and not all the same
    assert len(examples) == 3 and all(arithmetic.parse_problem(e)[0] == e for e in examples) and len(set(examples)) > 1
    for e in examples:
        arithmetic.evaluate(e)
    # unseeded resets continue the seeded stream identically
    a.reset(seed=7), b.reset(seed=7)
    assert a.reset()[1]["messages"] == b.reset()[1]["messages"]


def test_data_mode_prompt_draw_follows_the_seed():
    a, b = make("LSP-Arith-Data-v0"), make("LSP-Arith-Data-v0")
    assert [a.reset(seed=s)[0] for s in range(5)] == [b.reset(seed=s)[0] for s in range(5)]
    assert len({a.reset(seed=s)[0]["prompt"] for s in range(10)}) > 1


# ---- payoff options --------------------------------------------------------------------------------------------------
PAYOFF_TABLE = {  # p = 0, 0.25, 0.5, 1, from the formulas in lsp_env.rewards' docstring
    "zero_sum": [0.0, -0.25, -0.5, -1.0],          # -p
    "rzero": [0.0, 0.5, 1.0, 0.0],                 # 1 - 2|p - 1/2|
    "learnability": [0.0, 0.75, 0.5, 0.0],         # 1 - p, and 0 at p in {0, 1}
    "variance": [0.0, 0.75, 1.0, 0.0],             # 4p(1 - p)
}


def test_payoff_table_covers_every_payoff():
    assert set(PAYOFFS) == set(PAYOFF_TABLE)


@pytest.mark.parametrize("name", list(PAYOFF_TABLE))
def test_payoff_values(name):
    got = [PAYOFFS[name](p) for p in (0.0, 0.25, 0.5, 1.0)]
    assert got == pytest.approx(PAYOFF_TABLE[name], abs=1e-12)


@pytest.mark.parametrize("name", ["rzero", "learnability", "variance"])
def test_bounded_payoffs_clip_p(name):
    assert PAYOFFS[name](-0.5) == pytest.approx(PAYOFFS[name](0.0))
    assert PAYOFFS[name](1.5) == pytest.approx(PAYOFFS[name](1.0))


@pytest.mark.parametrize("payoff, expected", [("rzero", 0.5), ("zero_sum", -0.25), ("variance", 0.75)])
def test_make_uses_the_payoff(payoff, expected):
    env = make("LSP-Zero-v0", reward=lambda q, a: [0.25] * len(a), payoff=payoff, num_generations=2)
    env.reset(seed=0)
    env.step("Name three prime numbers.")
    env.step("one")
    *_, terminated, _, info = env.step("two")
    assert terminated and info["rewards"]["challenger"] == pytest.approx(expected)
    assert info["rewards"]["solver"] == [0.25, 0.25]


# ---- the vector env --------------------------------------------------------------------------------------------------
def make_vec(env_id="LSP-Zero-v0", num_envs=4, **kwargs):
    return gymnasium.make_vec(env_id, num_envs=num_envs, model="tiny-random", **kwargs)


QUERIES = ["Name a prime.", "Define entropy.", "Who wrote Hamlet?", "Explain tides."]


def test_make_vec_returns_lsp_vector_env():
    envs = make_vec(reward="length")
    assert isinstance(envs, LSPVectorEnv)
    assert envs.num_envs == 4 and len(envs.envs) == 4
    assert envs.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    # the sub-envs share one hook object (one judge in memory)
    assert all(env.reward_fn is envs.envs[0].reward_fn for env in envs.envs)


@pytest.mark.parametrize("env_id", ["LSP-IF-v0", "LSP-Arith-v0"])
def test_a_shared_challenger_prompt_is_one_per_reset_and_seeded(env_id):
    """shared_challenger_prompt: the rounds reset together see one challenger chat (its few-shot examples); another
    seed draws another; the same seed the same; by default each round draws its own."""
    def chats(envs, seed):
        _, infos = envs.reset(seed=seed)
        return [str(m) for m in infos["messages"]]

    shared, per_round = make_vec(env_id, shared_challenger_prompt=True), make_vec(env_id)
    assert len(set(chats(shared, 0))) == 1 and chats(shared, 0) == chats(shared, 0)
    assert chats(shared, 0) != chats(shared, 1)
    assert len(set(chats(per_round, 0))) == 4


def test_vector_calls_reward_hook_once_per_solver_step():
    G = 3
    hook = Counting()
    envs = make_vec(reward=hook, num_generations=G)
    obs, _ = envs.reset(seed=0)
    assert obs["role"].tolist() == [0, 0, 0, 0]
    obs, rewards, terminations, truncations, _ = envs.step(QUERIES)
    assert obs["role"].tolist() == [1, 1, 1, 1] and obs["prompt"] == tuple(QUERIES)
    assert rewards.tolist() == [0.0] * 4 and not terminations.any() and not truncations.any()
    assert hook.batches == []
    for j in range(G):
        answers = ["a" * (i + 1) for i in range(4)]
        _, rewards, terminations, _, infos = envs.step(answers)
        assert terminations.all() == (j == G - 1) and terminations.any() == (j == G - 1)
        assert rewards == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert len(hook.batches) == G
    assert all(batch == list(zip(QUERIES, answers)) for batch in hook.batches)
    assert infos["_rewards"].all()
    assert infos["rewards"]["challenger"] == pytest.approx([-0.1, -0.2, -0.3, -0.4])
    assert [r.answers for r in infos["round"]] == [(a,) * G for a in answers]


def test_vector_env_hooks_have_one_owner_the_sub_envs():
    envs = make_vec(reward=Counting(), num_generations=2)
    assert envs.num_generations == 2 and all(env.reward_fn is envs.reward_fn for env in envs.envs)
    replacement = Counting()
    envs.reward_fn = replacement  # one assignment reaches every sub-env, which scores its own steps alone
    assert all(env.reward_fn is replacement for env in envs.envs) and envs.kl is envs.envs[0].kl


def test_vector_invalid_query_terminates_only_that_sub_env():
    hook = Counting()
    envs = make_vec(reward=hook, num_generations=2)
    envs.reset(seed=0)
    _, rewards, terminations, _, infos = envs.step([QUERIES[0], "?!?", QUERIES[2], QUERIES[3]])
    assert terminations.tolist() == [False, True, False, False]
    assert rewards.tolist() == [0.0, -1.0, 0.0, 0.0]
    assert infos["invalid_query"][1] and infos["_invalid_query"].tolist() == [False, True, False, False]
    for _ in range(2):
        obs, rewards, terminations, _, infos = envs.step(["aaaa", "this action is ignored", "aaaa", "aaaa"])
        assert rewards[1] == 0.0 and terminations[1]
        assert not infos["_role"][1]  # a finished sub-env's info entries are masked out
        assert obs["role"][1] == 0
    assert terminations.all()
    assert [len(batch) for batch in hook.batches] == [3, 3]
    assert all("this action is ignored" not in a for batch in hook.batches for _, a in batch)
    # a finished iteration keeps returning zeros and terminated until reset
    _, rewards, terminations, _, _ = envs.step(["x"] * 4)
    assert rewards.tolist() == [0.0] * 4 and terminations.all() and len(hook.batches) == 2


def test_vector_reset_mask_resets_only_masked():
    envs = make_vec(reward="length", num_generations=1)
    envs.reset(seed=0)
    envs.step(QUERIES)
    envs.step(["a"] * 4)
    obs, _ = envs.reset(options={"reset_mask": np.array([True, False, True, False])})
    assert obs["role"].tolist() == [0, 1, 0, 1]
    _, _, terminations, _, _ = envs.step(QUERIES)
    assert terminations.tolist() == [False, True, False, True]


def test_vector_repetition_penalty():
    queries = ["Name a prime number.", "Name a prime number.", "Who wrote Hamlet?", "Explain ocean tides."]
    challenger = {}
    for weight in (0.0, 1.0):
        envs = make_vec(reward=lambda q, a: [0.5] * len(a), num_generations=1, repetition_penalty=weight)
        envs.reset(seed=0)
        envs.step(queries)
        *_, infos = envs.step(["x"] * 4)
        challenger[weight] = np.asarray(infos["rewards"]["challenger"], dtype=float)
    assert challenger[0.0] == pytest.approx([-0.5] * 4)
    # each duplicate has 1 near-duplicate among the 3 OTHER queries: share 1/3, times the weight 1.0
    assert challenger[0.0] - challenger[1.0] == pytest.approx([1 / 3, 1 / 3, 0.0, 0.0])
