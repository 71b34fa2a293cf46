"""A token-level view of ONE role of an LSP env: one token per step, the single-agent view stable-baselines3 trains on.

    from lsp_env.token_level import TokenLevelRoleEnv
    env = TokenLevelRoleEnv("LSP-Arith-Data-v0", tokenizer="tiny-random", reward="length")

The learner writes its role's turn a token at a time; a fixed opponent (any ``chats -> texts`` callable, e.g.
``agents.sb3.ReferenceOpponent``, the frozen reference) plays the other role. ``agents.sb3`` has the PPO policy whose
actor is the LLM (``examples/sb3_ppo.py``). Plain Gymnasium: nothing here imports stable-baselines3.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from . import models
from .prompts import Role, render_chat

Opponent = Callable[[list[list[dict]]], list[str]]


class TokenLevelRoleEnv(gym.Env):
    """One role of an LSP game, one token per step: the single-agent view stable-baselines3 trains on.

    ## Description
    The learner plays ONE role (``"solver"`` by default, or ``"challenger"``) of an ``LSP-*`` env; a fixed
    ``opponent`` plays the other: a callable ``chats -> texts`` such as :class:`agents.sb3.ReferenceOpponent`
    (the frozen reference), or, for the challenger side of a data mode env (``LSP-Arith-Data-v0``,
    ``LSP-Data-v0``), the env's own prompt list (then no opponent is needed). One episode is one turn of the
    learner's role: it writes its completion a token at a time; at EOS or after ``max_new_tokens`` tokens the
    decoded text goes to the underlying env as one action, and the env's payoff for that role is the episode's
    reward.

    How the G answers of a round map (solver role): every answer of a round is the learner's. A round with
    ``num_generations`` = G is G consecutive episodes on the same query, each paid its own answer's reward
    R(q, a_j) (+ self-quality when the env has it); a new query is drawn when the round's G answers are in (or at
    a seeded ``reset``). LSP's group baseline V(q) is not used: PPO's value head is the baseline. Challenger role:
    one episode is one query; the opponent writes the G answers and the episode's reward is the challenger's
    payoff of the round (``info["rewards"]["challenger"]``, or the invalid-query penalty). The two roles' rewards
    are never summed into one return: that would pay the challenger for the solver's success.

    ## Action Space
    ``Discrete(vocab_size)``: the next token id (``vocab_size`` defaults to ``len(tokenizer)``; it must equal the
    LLM's output size, which :class:`agents.sb3.LLMActorCriticPolicy` checks).

    ## Observation Space
    ``Box(0, vocab_size - 1, (window,), int64)``: the last ``window`` token ids of the rendered chat prompt (the
    role's system prompt + user turn, generation prompt included) followed by the tokens written so far,
    left-padded with the tokenizer's pad id. The padding is the LEADING run of pad ids (the pad id may also be a
    real token inside the prompt, e.g. ``<|im_end|>``); a prompt longer than ``window - max_new_tokens`` tokens
    loses its oldest tokens. A Box of ids, not ``MultiDiscrete``: SB3 one-hot encodes ``MultiDiscrete``
    (~50 MB per observation at this vocabulary size).

    ## Rewards
    0 for every token but the last; the last token's step pays the role's reward from the env (see above).

    ## Starting State
    The prompt of the learner's next turn: the next answer of the current round (solver), else a new round: the
    env's reset (data mode: a prompt from its list), then, for the solver role in self-play, a query from the
    opponent (an invalid one is redrawn, up to ``max_query_attempts`` times).

    ## Episode End
    1. Termination: the learner wrote an EOS token (``info["stop"] == "eos"``).
    2. Termination: it wrote ``max_new_tokens`` tokens (``info["stop"] == "max_tokens"``). The turn is over and
       scored as is, so this is a termination, not a truncation: nothing follows whose value could be bootstrapped.
    3. Truncation: never.
    The last step's ``info`` holds ``text`` (the decoded turn), ``stop``, ``query``, and ``round_rewards`` (the
    env's ``info["rewards"]`` when the round ended, for logging only).

    ## Arguments
    - ``env``: a registered id (made with ``make_kwargs``, e.g. ``reward="length"``, ``num_generations=``) or an
      env made already.
    - ``tokenizer``: the policy's tokenizer, or a model name whose tokenizer to load.
    - ``role``: ``"solver"`` or ``"challenger"``; ``opponent``: the other role's player (see above).
    - ``max_new_tokens``, ``window``, ``vocab_size``, ``max_query_attempts``, ``render_mode`` (``"ansi"``).
    The env's KL hook must be off: SB3's PPO has no reference-KL term (``lsp-train`` has).

    ## Examples
    >>> env = TokenLevelRoleEnv("LSP-Arith-Data-v0", tokenizer="tiny-random", reward="length", max_new_tokens=8)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, int(env.action_space.n)
    ((256,), 49152)
    >>> obs, reward, terminated, truncated, info = env.step(env.tokenizer.eos_token_id)
    >>> terminated, reward, info["stop"]
    (True, 0.0, 'eos')
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, env="LSP-Arith-Data-v0", tokenizer="embedded", role: str = "solver",
                 opponent: Opponent | None = None, max_new_tokens: int = 64, window: int = 256,
                 vocab_size: int | None = None, max_query_attempts: int = 16, render_mode: str | None = None,
                 **make_kwargs):
        if isinstance(env, str):
            import lsp_env  # noqa: F401  (registers the ids)

            env = gym.make(env, **make_kwargs)
        elif make_kwargs:
            raise TypeError(f"make keywords {sorted(make_kwargs)} need an env id; an env made already takes none")
        game = env.unwrapped
        if role not in [r.key for r in Role]:
            raise ValueError(f"role={role!r}: use one of {tuple(r.key for r in Role)}")
        if role == "challenger" and game.data_mode:
            raise ValueError("a data mode env has no challenger turn (its queries come from a prompt list): "
                             "use role='solver', or a self-play id such as LSP-Arith-v0 for role='challenger'")
        if opponent is None and not (role == "solver" and game.data_mode):
            other = "solver's answers" if role == "challenger" else "challenger's queries"
            raise ValueError(f"role={role!r} on a self-play env needs opponent= to write the {other}: e.g. "
                             "ReferenceOpponent('embedded'); or play the solver on a data mode id (LSP-Arith-Data-v0)")
        if game.kl.active:
            raise ValueError("the env has an active KL hook, but SB3's PPO has no reference-KL term: make the env "
                             "without kl= (or train with lsp-train, which applies it)")
        if max_new_tokens < 1 or window <= max_new_tokens:
            raise ValueError(f"max_new_tokens={max_new_tokens}, window={window}: need 1 <= max_new_tokens < window "
                             "(the window must hold some prompt besides the completion)")
        self.env = env
        self.role = role
        self.opponent = opponent
        self.tokenizer = models.load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        self.pad_id = self.tokenizer.pad_token_id
        self.stop_ids = {self.tokenizer.eos_token_id}
        self.max_new_tokens = max_new_tokens
        self.window = window
        self.max_query_attempts = max_query_attempts
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}: use one of {self.metadata['render_modes']} or None")
        self.render_mode = render_mode
        vocab_size = vocab_size or len(self.tokenizer)
        self.observation_space = spaces.Box(0, vocab_size - 1, shape=(window,), dtype=np.int64)
        self.action_space = spaces.Discrete(vocab_size)
        self._round_open = False   # the current round still waits for a turn of the learner's role
        self._prompt: list[int] | None = None
        self._generated: list[int] = []
        self._query: str | None = None

    # ---- episodes --------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None or not self._round_open:
            self._start_round(seed)
        self._prompt = render_chat(self.tokenizer, self._messages)
        self._generated = []
        return self._observation(), self._info()

    def _start_round(self, seed: int | None) -> None:
        for attempt in range(self.max_query_attempts):
            _, info = self.env.reset(seed=seed if attempt == 0 else None)
            if info["role"] == self.role:
                break
            # the learner is the solver of a self-play env: the opponent writes the query
            query = self.opponent([info["messages"]])[0]
            _, _, terminated, _, info = self.env.step(query)
            if not terminated:  # an invalid query ends the round at once: draw another
                break
        else:
            raise RuntimeError(f"the opponent wrote no valid query in {self.max_query_attempts} rounds: check its "
                               "model and length limit, or raise max_query_attempts")
        self._messages = info["messages"]
        self._query = info.get("query")
        self._round_open = True

    def step(self, action):
        if self._prompt is None:
            raise gym.error.ResetNeeded("Call reset before using step method.")
        token = int(action)
        if not self.action_space.contains(token):
            raise ValueError(f"action {action!r} is not a token id in [0, {self.action_space.n})")
        self._generated.append(token)
        if token in self.stop_ids:
            stop = "eos"
        elif len(self._generated) >= self.max_new_tokens:
            stop = "max_tokens"
        else:
            return self._observation(), 0.0, False, False, self._info()
        observation = self._observation()
        self._prompt = None  # the turn is over: the next step needs a reset
        text = self.tokenizer.decode(self._generated, skip_special_tokens=True)
        reward, round_info = self._play_turn(text)
        info = self._info(text=text, stop=stop, round_rewards=round_info.get("rewards"))
        if round_info.get("invalid_query"):
            info["invalid_query"] = True
        return observation, reward, True, False, info

    def _play_turn(self, text: str) -> tuple[float, dict]:
        """Send the learner's text to the env, let the opponent finish the round if it must; the learner's reward."""
        _, reward, terminated, _, info = self.env.step(text)
        if self.role == "solver":  # this answer's own reward R(q, a_j): other answers and payoffs are not in it
            self._round_open = not terminated
            return float(reward), info
        if not terminated:  # a valid query: the opponent writes the G answers
            answers = self.opponent([info["messages"]] * self.env.unwrapped.num_generations)
            for answer in answers:
                _, _, terminated, _, info = self.env.step(answer)
        self._round_open = False
        return float(info["rewards"]["challenger"]), info

    # ---- observations ----------------------------------------------------------------------------------------
    def _observation(self) -> np.ndarray:
        ids = (self._prompt + self._generated)[-self.window:]
        observation = np.full(self.window, self.pad_id, dtype=np.int64)
        observation[self.window - len(ids):] = ids
        return observation

    def _info(self, **extra) -> dict:
        return {"role": self.role, "query": self._query, "tokens": len(self._generated), **extra}

    def render(self):
        if self.render_mode == "ansi":
            return f"{self.role} on {self._query!r}> {self.tokenizer.decode(self._generated, skip_special_tokens=True)}"
        return None

    def close(self):
        self.env.close()
