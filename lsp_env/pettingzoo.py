"""A PettingZoo AEC view of any LSP env: agents ``challenger`` and ``solver_0 … solver_{G-1}`` take turns.

    from lsp_env.pettingzoo import LSPAECEnv
    env = LSPAECEnv("LSP-Zero-v0", model="tiny-random", reward="length", num_generations=2)
    env.reset(seed=0)
    for agent in env.agent_iter():
        observation, reward, termination, truncation, info = env.last()
        env.step(None if termination or truncation else my_policy(agent, observation))

One episode is one round. The challenger acts first (in data mode there is no challenger: the solvers only), then
each solver answers once. A solver's reward arrives on its own step; the challenger's payoff when the round ends
(zero-sum or the env's payoff option), so the rewards are exactly those of ``info["rewards"]`` of the wrapped env.
After an invalid query every agent terminates at once. Needs the ``pettingzoo`` package (extra ``[pettingzoo]``).
"""

from __future__ import annotations

import gymnasium
from pettingzoo import AECEnv
from pettingzoo.utils import AgentSelector


class LSPAECEnv(AECEnv):
    metadata = {"render_modes": ["ansi"], "name": "lsp_aec_v0", "is_parallelizable": False}

    def __init__(self, env_id: str = "LSP-Zero-v0", render_mode: str | None = None, **kwargs):
        super().__init__()
        import lsp_env  # noqa: F401  (registers the ids)

        self.env = gymnasium.make(env_id, render_mode=render_mode, **kwargs).unwrapped
        self.render_mode = render_mode
        solvers = [f"solver_{j}" for j in range(self.env.num_generations)]
        self.possible_agents = solvers if self.env.data_mode else ["challenger", *solvers]
        # one space object per agent, returned identically on every call (the API test checks identity)
        self.observation_spaces = {a: self.env.observation_space for a in self.possible_agents}
        self.action_spaces = {a: self.env.action_space for a in self.possible_agents}

    def observation_space(self, agent):
        return self.observation_spaces[agent]

    def action_space(self, agent):
        return self.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None):
        self._observation, info = self.env.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: dict(info) if a == self.agents[0] else {} for a in self.agents}
        self._selector = AgentSelector(self.agents)
        self.agent_selection = self._selector.reset()

    def observe(self, agent):
        return dict(self._observation)

    def step(self, action):
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        self.rewards = {a: 0.0 for a in self.agents}
        self._observation, reward, terminated, truncated, info = self.env.step(action)
        self.rewards[agent] = float(reward)
        if terminated or truncated:
            rewards = info.get("rewards", {})
            if rewards.get("challenger") is not None and "challenger" in self.rewards:
                self.rewards["challenger"] = float(rewards["challenger"])
            for a in self.agents:
                self.terminations[a] = bool(terminated)
                self.truncations[a] = bool(truncated)
        self.infos = {a: (dict(info) if a == agent else {}) for a in self.agents}
        self._accumulate_rewards()
        self.agent_selection = self._selector.next()

    def render(self):
        return self.env.render() if self.render_mode else None

    def close(self):
        self.env.close()
