"""The Language Self-Play game: one query's round as a Gymnasium episode."""

from __future__ import annotations

import math
import string
from collections import deque
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from . import prompts, rewards
from .kl import KLHook
from .prompts import MAX_ANSWER_CHARS, MAX_PROMPT_CHARS, MAX_QUERY_CHARS, Role
from .tasks import TASKS, InvalidQuery


class AnyText(spaces.Text):
    """A text space that holds any ``str`` of at most ``max_length`` characters (``spaces.Text`` only holds its
    charset).

    ``sample()`` draws printable ASCII, which keeps copies cheap (``batch_space`` deep-copies the space per sub-env).
    """

    def __init__(self, max_length: int, seed=None):
        super().__init__(max_length=max_length, min_length=0, charset=string.printable, seed=seed)

    def contains(self, x) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"AnyText({self.max_length})"


def _resolve_hook(hook, model):
    """A hook argument -> a callable: None -> None, a built-in name -> its class on ``model``, a callable as is."""
    if hook is None:
        return None
    if callable(hook):
        return hook
    builtins = {
        "judge": lambda: rewards.LLMJudge(model),
        "self": lambda: rewards.SelfQuality(model),
        "arithmetic": rewards.ArithmeticReward,
        "instructions": rewards.InstructionReward,
        "length": rewards.LengthReward,
    }
    if hook not in builtins:
        raise ValueError(f"unknown hook {hook!r}: pass a callable or one of {sorted(builtins)}")
    return builtins[hook]()


@dataclass
class Pending:
    """A step's action once parsed, waiting for its scores (so a vector env can score all sub-envs in one call)."""

    kind: str                 # "query", "invalid", "answer" or "ended" (a step after the round ended)
    query: str | None = None
    answer: str | None = None
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RoundResult:
    """A finished round, in the last step's ``info["round"]``: the query, its answers and what each was paid."""

    query: str | None                  # None: the challenger's text held no usable query
    answers: tuple[str, ...] = ()      # the G answers, in the order they were played
    rewards: tuple[float, ...] = ()    # each answer's reward r_j = R(q, a_j) + quality_weight · R_Q(q, a_j)
    scores: tuple[float, ...] = ()     # each answer's raw reward R(q, a_j)
    quality: tuple[float, ...] = ()    # each answer's self-quality R_Q(q, a_j) (0 without a quality hook)
    payoff: float | None = None        # the challenger's; None in data mode
    value: float | None = None         # V(q), the mean raw reward; None for an invalid query
    invalid_reason: str | None = None  # why the challenger's text was no query


class QueryArchive:
    """The last ``size`` valid queries whose G answers were not all scored alike, as the challenger's few-shot
    examples (``example_archive``; 0: off, the task's own examples only).

    A group-relative update learns nothing from a query whose answers all score the same (every advantage is 0), so
    the archive keeps the ones it learned from, and the challenger's prompt shows them in place of the task's
    examples (Absolute Zero's proposer is shown past tasks of its own the same way): what it writes follows what
    recently taught the solver, from the next iteration on rather than after many gradient steps. Its queries span
    iterations, so they are state of the run (:meth:`state_dict`, :meth:`load_state_dict`).
    """

    def __init__(self, size: int = 0):
        self.size = int(size)
        self.queries: deque[str] = deque(maxlen=max(self.size, 1))

    def add(self, query: str) -> None:
        self.queries.append(query)

    def sample(self, rng: np.random.Generator, n: int) -> list[str]:
        """Up to ``n`` distinct remembered queries, drawn uniformly with ``rng``."""
        picked = rng.choice(len(self.queries), size=min(n, len(self.queries)), replace=False)
        return [self.queries[int(i)] for i in picked]

    def state_dict(self) -> dict:
        return {"size": self.size, "queries": list(self.queries)}

    def load_state_dict(self, state: dict) -> None:
        if state["size"] != self.size:
            raise ValueError(f"an example archive of {state['size']} queries cannot resume a run with {self.size}")
        self.queries.clear()
        self.queries.extend(state["queries"])


class LSPEnv(gym.Env):
    """Language Self-Play: one model plays a challenger that writes a query and a solver that answers it G times.

    ## Description
    The game of "Language Self-Play For Data-Free Training" (Kuba et al., 2025, arXiv 2509.07414). One episode is
    one query's round: the challenger turn, then ``num_generations`` (G) solver turns on the query it wrote. The
    same policy plays both roles; the env switches it between them with each role's prompt (``info["messages"]``).
    The env never runs the policy: actions are the policy's completions, as text.

    ## Action Space
    ``AnyText``: a ``str``, the model's completion for the acting role. Longer strings than the space's bound are
    still accepted with a documented outcome: a challenger text over ``MAX_QUERY_CHARS`` (1000) is an invalid
    query; a solver answer over ``MAX_ANSWER_CHARS`` (4000) is cut to that length before scoring
    (``info["answer_truncated"]``). A non-``str`` action raises ``TypeError``. Lone surrogates become U+FFFD.

    ## Observation Space
    | key      | space                 | meaning                                                        |
    |----------|-----------------------|----------------------------------------------------------------|
    | "role"   | Discrete(2)           | 0 = challenger, 1 = solver: who acts now                       |
    | "prompt" | AnyText(8192)         | the user turn the acting role answers (the query, for solvers) |
    ``info["messages"]`` holds the role's chat (system prompt + user turn) for ``tokenizer.apply_chat_template``,
    ``info["role"]`` its name.

    ## Rewards
    A step's reward belongs to the role that acted. Solver step j: ``R(q, a_j)`` from the ``reward`` hook, plus
    ``quality_weight · R_Q(q, a_j)`` when a ``quality`` hook is set (``LSP-v0``). The challenger's step earns 0 and
    it is paid when the round ends: ``c = payoff(V(q))`` with ``V(q)`` = mean of the G raw rewards ``R`` (payoff
    ``"zero_sum"``, the paper's: ``c = −V(q)``), plus ``quality_weight · mean_j R_Q(q, a_j)`` with a quality hook,
    minus ``repetition_penalty`` × the share of near-duplicate queries in the iteration (vector env only), plus
    ``coverage_bonus`` × the query's rarity among the last ``coverage_window`` valid queries
    (:class:`lsp_env.rewards.KindHistory`: 1 when none of them asked for its kinds, 0 for the most asked; tasks with
    ``query_kinds``, i.e. instructions; ``info["rarity"]`` at the solver's first turn). The
    built-in judge and self-quality scores lie in [0, 1], so R and R_Q have the same scale. At the last step
    ``info["rewards"] == {"challenger": c, "solver": [r_1, ..., r_G]}`` (``"challenger": None`` in data mode),
    with ``info["group_value"] = V(q)``, and ``info["round"]`` holds the whole round as one :class:`RoundResult`
    (query, answers, each answer's reward, raw score and quality, payoff, V(q)), which agents build their
    batches from. An invalid query pays the challenger ``invalid_query_penalty`` (−1).
    On the instruction-following task (``LSP-IF-v0``) R is the share of the request's instructions the answer
    follows, and every solver step's ``info["instructions"]`` lists each one's ``id``, ``kwargs`` and ``passed``.
    KL to the reference is not part of these payoffs: the ``kl`` hook (``env.unwrapped.kl``) tells agents how to
    apply it (see :mod:`lsp_env.kl`).

    ## Starting State
    ``reset()`` returns the challenger's observation (in data mode: the solver's, on a prompt drawn from the list
    with ``np_random``). The challenger's prompt (the task's few-shot examples) is drawn with ``np_random``, or with
    ``reset(options={"challenger_seed": s})`` from a generator seeded by ``s``: rounds reset with the same ``s``
    get the same challenger prompt (the vector env's ``shared_challenger_prompt``). With ``example_archive`` its
    examples come from the archive once it holds any.

    ## Episode End
    1. Termination: after the G-th solver answer.
    2. Termination: at once, after a challenger text that holds no usable query (``info["invalid_query"] = True``):
       empty, over-long, or (dialogue) no letter or digit, (arithmetic) no well-formed problem, (instructions) no
       recognised instruction, contradicting ones, or one no answer within the budget can follow.
    3. Truncation: never.
    ``step`` before ``reset`` raises ``gymnasium.error.ResetNeeded``; after the end it warns once (Gymnasium's
    convention) and changes nothing: reward 0, ``terminated`` True, the action ignored.

    ## Arguments
    - ``task``: ``"dialogue"`` (``LSP-v0``, ``LSP-Zero-v0``), ``"arithmetic"`` (``LSP-Arith-v0``) or
      ``"instructions"`` (``LSP-IF-v0``: IFEval's verifiable instructions, :mod:`lsp_env.tasks.instructions`).
    - ``model``: the reference model for built-in hooks: a name (``"embedded"``, ``"tiny-random"``, a hub id or
      path) or a loaded ``(model, tokenizer)`` pair (a trainer passes its frozen reference).
    - ``reward``: a batched callable ``(queries, answers) -> list[float]`` or a built-in name (``"judge"``,
      ``"arithmetic"``, ``"instructions"``, ``"length"``); default: the task's (the judge for dialogue, exact checking
      for arithmetic, the share of followed instructions for instructions).
    - ``quality``: the self-quality hook (``"self"``: graded by the reference model; a callable; ``None``: off).
    - ``kl``: a :class:`lsp_env.kl.KLHook` (default: β = 0).
    - ``num_generations``: G, the solver answers per query (≥ 1; group advantages need ≥ 2).
    - ``payoff``: ``"zero_sum"``, ``"rzero"``, ``"learnability"`` or ``"variance"`` (:data:`lsp_env.rewards.PAYOFFS`).
    - ``prompts``: data mode (the paper's "GRPO with data"): queries come from this list, not the challenger;
      ``True`` uses the task's own list. Solver turns only.
    - ``task_options``: keyword arguments of the task (arithmetic: ``example_levels``, the levels the challenger's
      few-shot examples come from, i.e. the difficulty its prompt shows; default all of
      :data:`lsp_env.tasks.arithmetic.LEVELS`; instructions: ``max_answer_tokens``, the solver's generation budget,
      which bounds what a request may ask for, default 64).
    - ``invalid_query_penalty``, ``quality_weight``, ``repetition_penalty``, ``coverage_bonus`` (default 0: off),
      ``coverage_window`` (64 valid queries; the vector env's sub-envs share one history), ``render_mode``
      (``"ansi"``, ``"human"``).
    - ``example_archive``: 0 (default) or k: the challenger's few-shot examples are drawn from the last k valid
      queries whose answers were not all scored alike (:class:`QueryArchive`; shared by the vector env's sub-envs),
      the task's own examples filling the slots the archive cannot yet (tasks with ``challenger_examples``).

    ## Examples
    >>> import gymnasium, lsp_env
    >>> env = gymnasium.make("LSP-Zero-v0", model="tiny-random", reward="length", num_generations=2)
    >>> obs, info = env.reset(seed=0)
    >>> obs["role"], info["role"]
    (0, 'challenger')
    >>> obs, r, terminated, truncated, info = env.step("Name three prime numbers.")
    >>> obs["role"], obs["prompt"]
    (1, 'Name three prime numbers.')
    >>> _ = env.step("2, 3 and 5.")
    >>> obs, r, terminated, truncated, info = env.step("Two, three, five")
    >>> terminated, info["rewards"]["challenger"] == -sum(info["rewards"]["solver"]) / 2
    (True, True)
    >>> envs = gymnasium.make_vec("LSP-Zero-v0", num_envs=4, model="tiny-random", reward="length")
    >>> envs.num_envs
    4
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 1}

    def __init__(self, task: str = "dialogue", model="embedded", reward=None, quality=None, kl: KLHook | None = None,
                 num_generations: int = 4, payoff: str = "zero_sum", prompts=None,
                 invalid_query_penalty: float = -1.0, quality_weight: float = 1.0, repetition_penalty: float = 0.0,
                 coverage_bonus: float = 0.0, coverage_window: int = 64, example_archive: int = 0,
                 render_mode: str | None = None, task_options: dict | None = None):
        if task not in TASKS:
            raise ValueError(f"task={task!r}: use one of {sorted(TASKS)}")
        if int(num_generations) < 1:
            raise ValueError(f"num_generations={num_generations}: the solver must answer at least once")
        if payoff not in rewards.PAYOFFS:
            raise ValueError(f"payoff={payoff!r}: use one of {sorted(rewards.PAYOFFS)}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}: use one of {self.metadata['render_modes']} or None")
        self.task = TASKS[task](**(task_options or {}))
        self.reward_fn = _resolve_hook(self.task.default_reward if reward is None else reward, model)
        self.quality_fn = _resolve_hook(quality, model)
        self.kl = kl if kl is not None else KLHook()
        self.num_generations = int(num_generations)
        self.payoff = payoff
        if prompts is True:
            prompts = self.task.default_prompts()
        if prompts is not None:
            prompts = [self.task.parse_query(p) for p in prompts]
            if not prompts:
                raise ValueError("prompts=[]: data mode needs at least one prompt")
        self.prompts = prompts
        self.invalid_query_penalty = float(invalid_query_penalty)
        self.quality_weight = float(quality_weight)
        self.repetition_penalty = float(repetition_penalty)
        self.coverage_bonus = float(coverage_bonus)
        if self.coverage_bonus and not hasattr(self.task, "query_kinds"):
            raise ValueError(f"coverage_bonus={coverage_bonus}: the {task} task has no kinds of query to count "
                             "(instructions has: its instruction ids)")
        self.coverage = rewards.KindHistory(coverage_window)
        if int(example_archive) < 0 or (example_archive and not hasattr(self.task, "challenger_examples")):
            raise ValueError(f"example_archive={example_archive}: want 0 (off) or a number of queries, on a task whose "
                             "challenger prompt holds example queries (instructions)")
        self.archive = QueryArchive(example_archive)
        self.render_mode = render_mode

        self.observation_space = spaces.Dict({"role": spaces.Discrete(2), "prompt": AnyText(MAX_PROMPT_CHARS)})
        self.action_space = AnyText(MAX_PROMPT_CHARS)
        self._phase = "needs_reset"
        self._messages: list[dict] = []
        self._query: str | None = None
        self._answers: list[str] = []
        self._solver_rewards: list[float] = []

    @property
    def data_mode(self) -> bool:
        return self.prompts is not None

    # ---- the turn machine ------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._warned_done = False
        self._query = None
        self._raw: list[float] = []
        self._quality: list[float] = []
        self._solver_rewards: list[float] = []
        self._answers: list[str] = []
        self._repetition = 0.0
        self._rarity = 0.0
        if self.data_mode:
            return self._start_solver(self.prompts[int(self.np_random.integers(len(self.prompts)))])
        self._phase = "challenger"
        seed = (options or {}).get("challenger_seed")
        rng = self.np_random if seed is None else np.random.default_rng(seed)
        if self.archive.queries:
            examples = self.archive.sample(rng, self.task.challenger_examples)
            self._messages = self.task.challenger_messages(rng, examples)
        else:
            self._messages = self.task.challenger_messages(rng)
        return self._observation(), self._info()

    def step(self, action):
        pending = self.accept(action)
        if pending.kind == "query" and self.coverage_bonus:
            self.set_rarity(self.coverage.rate([self.task.query_kinds(pending.query)])[0], pending)
        if pending.kind != "answer":
            return self.finish(pending)
        raw = self.reward_fn([pending.query], [pending.answer])
        quality = self.quality_fn([pending.query], [pending.answer]) if self.quality_fn else [0.0]
        return self.finish(pending, raw[0], quality[0])

    def accept(self, action) -> Pending:
        """First half of ``step``: check and parse the action, advance the turn; scoring is left to the caller."""
        if self._phase == "needs_reset":
            raise gym.error.ResetNeeded("Call reset before using step method.")
        if self._phase == "done":  # Gymnasium's convention (CartPole): warn once, then a step that changes nothing
            if not self._warned_done:
                gym.logger.warn("step() called after the round ended (terminated=True): the action is ignored, the "
                                "reward is 0; call reset() to start a new round.")
                self._warned_done = True
            return Pending("ended")
        if not isinstance(action, str):
            raise TypeError(
                f"action must be a str (the model's completion text), got {type(action).__name__}: "
                "decode token ids with tokenizer.decode(ids, skip_special_tokens=True) first"
            )
        text = prompts.clean_text(action)
        if self._phase == "challenger":
            try:
                if len(text) > MAX_QUERY_CHARS:
                    raise InvalidQuery(f"query over {MAX_QUERY_CHARS} characters ({len(text)})")
                return Pending("query", query=self.task.parse_query(text))
            except InvalidQuery as err:
                return Pending("invalid", info={"invalid_query": True, "invalid_reason": str(err)})
        info = {"answer_truncated": len(text) > MAX_ANSWER_CHARS}
        return Pending("answer", query=self._query, answer=text[:MAX_ANSWER_CHARS], info=info)

    def finish(self, pending: Pending, raw: float = 0.0, quality: float = 0.0):
        """Second half of ``step``: apply the scores of an answer (if any) and return the step's 5-tuple."""
        if pending.kind == "ended":
            return self._observation(), 0.0, True, False, self._info()
        if pending.kind == "query":
            obs, info = self._start_solver(pending.query, pending.info)
            return obs, 0.0, False, False, info
        if pending.kind == "invalid":
            self._phase = "done"
            info = self._info(pending.info)
            info["rewards"] = {"challenger": self.invalid_query_penalty, "solver": []}
            info["round"] = RoundResult(None, payoff=self.invalid_query_penalty,
                                        invalid_reason=pending.info.get("invalid_reason"))
            return self._observation(), self.invalid_query_penalty, True, False, info
        raw, quality = float(raw), float(quality)
        if not (math.isfinite(raw) and math.isfinite(quality)):
            raise ValueError(f"a reward hook returned a non-finite score (reward={raw}, quality={quality})")
        reward = raw + (self.quality_weight * quality if self.quality_fn else 0.0)
        self._answers.append(pending.answer)
        self._raw.append(raw)
        self._quality.append(quality)
        self._solver_rewards.append(reward)
        info = self._info(pending.info)
        if hasattr(self.task, "answer_info"):  # what the task can say about the answer, e.g. each instruction's check
            info.update(self.task.answer_info(pending.query, pending.answer))
        terminated = len(self._raw) == self.num_generations
        if terminated:
            self._phase = "done"
            info["rewards"] = {"challenger": self._challenger_payoff(), "solver": list(self._solver_rewards)}
            info["group_value"] = float(np.mean(self._raw))
            if self.archive.size and np.std(self._raw) > 0:  # a query whose answers the update can tell apart
                self.archive.add(self._query)
            info["round"] = RoundResult(self._query, tuple(self._answers), tuple(self._solver_rewards),
                                        tuple(self._raw), tuple(self._quality), info["rewards"]["challenger"],
                                        info["group_value"])
        if self.render_mode == "human":
            self.render()
        return self._observation(), reward, terminated, False, info

    def _challenger_payoff(self) -> float | None:
        if self.data_mode:
            return None
        payoff = rewards.PAYOFFS[self.payoff](float(np.mean(self._raw)))
        if self.quality_fn:
            payoff += self.quality_weight * float(np.mean(self._quality))
        return payoff - self.repetition_penalty * self._repetition + self.coverage_bonus * self._rarity

    def _start_solver(self, query: str, extra: dict | None = None):
        self._phase, self._query = "solver", query
        self._messages = self.task.solver_messages(query)
        return self._observation(), self._info(extra)

    def set_repetition(self, share: float) -> None:
        """Share of the iteration's other queries that near-duplicate this one (set by the vector env)."""
        self._repetition = float(share)

    def set_rarity(self, rarity: float, pending: Pending) -> None:
        """How rarely the recent valid queries asked for this query's kinds (set at the challenger step)."""
        self._rarity = float(rarity)
        pending.info["rarity"] = self._rarity

    def _observation(self) -> dict:
        role = Role.SOLVER if self._phase == "solver" or (self._phase == "done" and self._query) else Role.CHALLENGER
        return {"role": int(role), "prompt": self._messages[-1]["content"] if self._messages else ""}

    def _info(self, extra: dict | None = None) -> dict:
        role = Role(self._observation()["role"])
        info = {"role": role.key, "messages": [dict(m) for m in self._messages]}
        if self._query is not None:
            info["query"] = self._query
        info.update(extra or {})
        return info

    def render(self):
        lines = []
        if self._query is not None:
            lines.append(f"challenger> {self._query}")
        for answer, reward in zip(self._answers, self._solver_rewards):
            lines.append(f"solver ({reward:+.3f})> {answer}")
        text = "\n".join(lines)
        if self.render_mode == "human":
            print(text)
            return None
        return text
