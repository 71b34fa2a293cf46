"""The batched vector env: N rounds side by side, each hook called once per step for all sub-envs."""

from __future__ import annotations

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .env import LSPEnv
from .rewards import repetition_penalties


def _on_every_sub_env(name: str) -> property:
    def set_all(self, value) -> None:
        for env in self.envs:
            setattr(env, name, value)

    return property(lambda self: getattr(self.envs[0], name), set_all)


class LSPVectorEnv(VectorEnv):
    """``gymnasium.make_vec("LSP-v0", num_envs=N, **kwargs)``: N :class:`LSPEnv` rounds stepped together.

    Each ``step`` parses every sub-env's action, then calls the ``reward`` hook once and the ``quality`` hook once
    on all the (query, answer) pairs of that step, so a judge scores N answers in one batched forward instead of N.
    The sub-envs share the hook objects (one judge model in memory). The repetition penalty, which needs all of an
    iteration's queries, is computed here at the challenger step, and so is the coverage bonus (the sub-envs share
    one history; every query of a step is rated against the history before that step). ``state_dict()`` and
    ``load_state_dict()`` carry that history through a trainer's checkpoint.

    Autoreset is disabled (``metadata["autoreset_mode"] = AutoresetMode.DISABLED``) on purpose: rounds last 1 step
    (invalid query) or G + 1 steps, so sub-envs finish at different steps and an iteration is "reset all, step until
    all have terminated". Stepping a finished sub-env is allowed and does nothing: its action is ignored, its
    reward is 0, ``terminated`` stays True and its info entries are masked out. An action ``None`` leaves its
    sub-env out of the step (reward 0, its turn unchanged, info masked out): with ``reset(options={"reset_mask":
    mask})``, which resets only the masked sub-envs, the rollout re-asks only the rounds whose query was invalid.
    Observations: ``{"role": int64 array (N,), "prompt": tuple of N str}``; infos follow Gymnasium's vector
    convention (``info[key]`` arrays with a boolean ``info["_" + key]`` mask).

    ``shared_challenger_prompt=True``: the rounds reset together draw one challenger prompt (the task's few-shot
    examples), as in the paper, where the N queries of an iteration are samples from one challenger prompt: the
    challenger's advantage against the mean over the N queries is then a baseline over samples of the same prompt,
    and that prompt runs through the model once in the update instead of N times. Default False: a prompt per round.
    """

    metadata = {"autoreset_mode": AutoresetMode.DISABLED, "render_modes": []}

    def __init__(self, num_envs: int = 1, shared_challenger_prompt: bool = False, **kwargs):
        self.shared_challenger_prompt = bool(shared_challenger_prompt)
        first = LSPEnv(**kwargs)
        shared = {"reward": first.reward_fn, "quality": first.quality_fn, "kl": first.kl}
        self.envs = [first] + [LSPEnv(**{**kwargs, **shared}) for _ in range(num_envs - 1)]
        for env in self.envs[1:]:  # one coverage history and example archive, fed by every sub-env's queries
            env.coverage, env.archive = first.coverage, first.archive
        self.num_envs = num_envs
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._done = np.ones(num_envs, dtype=bool)
        self._last_obs = [None] * num_envs

    # the hooks belong to the sub-envs (each scores its own steps when stepped alone): read from the first, set on all
    reward_fn = _on_every_sub_env("reward_fn")
    quality_fn = _on_every_sub_env("quality_fn")
    kl = property(lambda self: self.envs[0].kl)

    @property
    def num_generations(self) -> int:
        """G, the solver answers per query: the sub-envs' setting (the rollout reads it here, not from a flag)."""
        return self.envs[0].num_generations

    @property
    def task(self):
        """The sub-envs' task (they share one kind): its prompts, query parsing and held-out evaluation."""
        return self.envs[0].task

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        mask = (np.ones(self.num_envs, dtype=bool) if not options or "reset_mask" not in options
                else np.asarray(options["reset_mask"]))
        seeds = (seed if isinstance(seed, (list, tuple))
                 else [None if seed is None else seed + i for i in range(self.num_envs)])
        shared = None
        if self.shared_challenger_prompt:  # a seed of its own, drawn from the reset seed (or the env's generator)
            shared = int(np.random.SeedSequence(seeds[0]).generate_state(1)[0] if seeds[0] is not None
                         else self.np_random.integers(2**32))
        infos: dict = {}
        for i, env in enumerate(self.envs):
            if mask[i]:
                self._last_obs[i], info = env.reset(seed=seeds[i], options={"challenger_seed": shared})
                self._done[i] = False
                infos = self._add_info(infos, info, i)
        return self._batch(self._last_obs), infos

    def step(self, actions):
        if len(actions) != self.num_envs:
            raise ValueError(f"step needs one action per sub-env: got {len(actions)} for {self.num_envs}")
        pending = {i: env.accept(actions[i]) for i, env in enumerate(self.envs)
                   if not self._done[i] and actions[i] is not None}
        queries = {i: p.query for i, p in pending.items() if p.kind == "query"}
        if queries and any(self.envs[i].repetition_penalty for i in queries):
            for i, share in zip(queries, repetition_penalties(list(queries.values()))):
                self.envs[i].set_repetition(share)
        if queries and self.envs[0].coverage_bonus:  # every query of the step against the history before it
            rarities = self.envs[0].coverage.rate([self.task.query_kinds(q) for q in queries.values()])
            for i, rarity in zip(queries, rarities):
                self.envs[i].set_rarity(rarity, pending[i])
        answering = [i for i, p in pending.items() if p.kind == "answer"]
        raw, quality = {}, {}
        if answering:
            pairs = ([pending[i].query for i in answering], [pending[i].answer for i in answering])
            raw = dict(zip(answering, self.reward_fn(*pairs)))
            if self.quality_fn:
                quality = dict(zip(answering, self.quality_fn(*pairs)))
        rewards = np.zeros(self.num_envs)
        terminations = self._done.copy()
        infos: dict = {}
        for i, p in pending.items():
            obs, rewards[i], terminations[i], _, info = self.envs[i].finish(p, raw.get(i, 0.0), quality.get(i, 0.0))
            self._last_obs[i] = obs
            infos = self._add_info(infos, info, i)
        self._done = terminations.copy()
        return self._batch(self._last_obs), rewards, terminations, np.zeros(self.num_envs, dtype=bool), infos

    def state_dict(self) -> dict:
        """What the env carries across iterations (the coverage history, the example archive), for a checkpoint."""
        return {"coverage": self.envs[0].coverage.state_dict(), "archive": self.envs[0].archive.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.envs[0].coverage.load_state_dict(state["coverage"])
        if "archive" in state:  # checkpoints written before the archive have none
            self.envs[0].archive.load_state_dict(state["archive"])

    def _batch(self, observations) -> dict:
        return {
            "role": np.array([o["role"] for o in observations], dtype=np.int64),
            "prompt": tuple(o["prompt"] for o in observations),
        }
