"""The PettingZoo AEC view: PettingZoo's own API test, and rewards equal to the wrapped env's payoffs."""

import pytest
from pettingzoo.test import api_test

from lsp_env.pettingzoo import LSPAECEnv


@pytest.mark.parametrize("env_id", ["LSP-Zero-v0", "LSP-Arith-v0", "LSP-Arith-Data-v0", "LSP-IF-v0", "LSP-IF-Data-v0"])
def test_pettingzoo_api_test_passes(env_id):
    api_test(LSPAECEnv(env_id, model="tiny-random", reward="length", num_generations=2), num_cycles=20)


def test_pettingzoo_rewards_are_the_rounds_payoffs():
    env = LSPAECEnv("LSP-Zero-v0", model="tiny-random", reward="length", num_generations=2)
    env.reset(seed=0)
    assert env.agents == ["challenger", "solver_0", "solver_1"]
    actions = {"challenger": "Name three rivers in Africa.", "solver_0": "Nile",
               "solver_1": "The Nile, the Congo and the Niger."}
    totals = {}
    for agent in env.agent_iter():
        observation, reward, termination, truncation, info = env.last()
        totals[agent] = totals.get(agent, 0.0) + reward
        if agent != "challenger":
            assert observation["role"] == 1 and observation["prompt"] == "Name three rivers in Africa."
        env.step(None if termination or truncation else actions[agent])
    solver = [totals["solver_0"], totals["solver_1"]]
    assert solver == pytest.approx([1 / 20, 7 / 20])  # the length reward: words / 20
    assert totals["challenger"] == pytest.approx(-sum(solver) / 2)  # zero-sum


def test_pettingzoo_invalid_query_ends_every_agent():
    env = LSPAECEnv("LSP-Arith-v0", model="tiny-random", num_generations=2)
    env.reset(seed=0)
    env.step("no problem here")
    assert all(env.terminations.values())
    assert env.rewards["challenger"] == -1.0
