"""stable-baselines3 interop: the token-level single-role view and the LLM actor-critic policy (tiny model)."""

import subprocess
import sys
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env

from agents.sb3 import LLMActorCriticPolicy, ReferenceOpponent, TokenLevelRoleEnv
from lsp_env import KLHook
from lsp_env.prompts import render_chat
from lsp_env.tasks import ArithmeticTask

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WINDOW, MAX_NEW = 64, 16


def data_view(**kwargs):
    kwargs = {"tokenizer": "tiny-random", "reward": "length", "max_new_tokens": MAX_NEW, "window": WINDOW, **kwargs}
    return TokenLevelRoleEnv("LSP-Arith-Data-v0", **kwargs)


class Scripted:
    """An opponent that writes fixed texts (in turn) and counts its calls."""

    def __init__(self, *texts):
        self.texts, self.calls = texts, 0

    def __call__(self, chats):
        self.calls += 1
        return [self.texts[min(self.calls, len(self.texts)) - 1]] * len(chats)


def write(env, text):
    """Step the tokens of ``text`` then EOS; return every step's (reward, terminated) and the last info."""
    tokens = env.tokenizer.encode(text, add_special_tokens=False) + [env.tokenizer.eos_token_id]
    steps = []
    for token in tokens:
        _, reward, terminated, truncated, info = env.step(token)
        assert truncated is False
        steps.append((reward, terminated))
    return steps, info


def test_sb3_check_env_passes_with_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(data_view())
    gymnasium_check_env(data_view(), skip_render_check=True)


def test_sb3_spaces_and_left_padded_observation(tiny_tokenizer):
    env = data_view()
    assert env.observation_space == gymnasium.spaces.Box(0, len(tiny_tokenizer) - 1, (WINDOW,), np.int64)
    assert env.action_space == gymnasium.spaces.Discrete(len(tiny_tokenizer))
    obs, info = env.reset(seed=0)
    prompt = render_chat(tiny_tokenizer, ArithmeticTask().solver_messages(info["query"]))
    pad = tiny_tokenizer.pad_token_id
    assert obs.dtype == np.int64 and obs.shape == (WINDOW,)
    assert obs[WINDOW - len(prompt):].tolist() == prompt
    assert (obs[:WINDOW - len(prompt)] == pad).all()
    obs, reward, terminated, _, _ = env.step(42)
    assert obs[-len(prompt) - 1:].tolist() == prompt + [42] and (reward, terminated) == (0.0, False)


def test_sb3_episode_ends_at_eos_with_the_env_reward():
    env = data_view()
    env.reset(seed=1)
    steps, info = write(env, " one two three")
    assert [t for _, t in steps] == [False] * (len(steps) - 1) + [True]
    assert [r for r, _ in steps[:-1]] == [0.0] * (len(steps) - 1)
    assert steps[-1][0] == pytest.approx(3 / 20)  # LengthReward: 3 words of a 20-word target
    assert info["stop"] == "eos" and info["text"] == " one two three"


def test_sb3_episode_ends_at_max_tokens():
    env = data_view(max_new_tokens=4)
    env.reset(seed=0)
    steps = [env.step(42) for _ in range(4)]  # 42 is no EOS
    assert [terminated for _, _, terminated, _, _ in steps] == [False, False, False, True]
    assert [truncated for _, _, _, truncated, _ in steps] == [False] * 4
    info = steps[-1][-1]
    assert info["stop"] == "max_tokens" and info["tokens"] == 4
    assert info["text"] == env.tokenizer.decode([42] * 4)
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.step(42)


def test_sb3_solver_return_excludes_the_challenger_payoff():
    opponent = Scripted("hello", "2+3")  # the first query is invalid and must be redrawn
    env = TokenLevelRoleEnv("LSP-Arith-v0", tokenizer="tiny-random", opponent=opponent, num_generations=2,
                            max_new_tokens=MAX_NEW, window=WINDOW)
    _, info = env.reset(seed=0)
    assert opponent.calls == 2 and info["query"] == "2 + 3"
    steps, info = write(env, "5")
    assert steps[-1][0] == 1.0 and info["round_rewards"] is None  # the round waits for its second answer
    _, info = env.reset()  # the round's second answer, same query, no new opponent call
    assert opponent.calls == 2 and info["query"] == "2 + 3"
    steps, info = write(env, "5")
    assert info["round_rewards"] == {"challenger": -1.0, "solver": [1.0, 1.0]}
    assert steps[-1][0] == 1.0  # R(q, a), not R + the challenger's -V(q)
    env.reset()
    assert opponent.calls == 3  # the round is over: a new query


def test_sb3_challenger_return_is_its_payoff_only():
    opponent = Scripted("5")  # the solver answers every problem with 5
    env = TokenLevelRoleEnv("LSP-Arith-v0", tokenizer="tiny-random", role="challenger", opponent=opponent,
                            num_generations=3, max_new_tokens=MAX_NEW, window=WINDOW)
    env.reset(seed=0)
    steps, info = write(env, "2+3")
    assert info["round_rewards"] == {"challenger": -1.0, "solver": [1.0, 1.0, 1.0]}
    assert steps[-1][0] == -1.0  # -V(q) only: the sum with the solver's rewards would be +2
    env.reset()
    steps, info = write(env, "hello")
    assert steps[-1][0] == -1.0 and info["invalid_query"] and opponent.calls == 1  # no answers to an invalid query


def test_sb3_reference_opponent_answers_for_the_challenger(tiny_pair):
    opponent = ReferenceOpponent(tiny_pair, max_new_tokens=4, do_sample=False)
    env = TokenLevelRoleEnv("LSP-Arith-v0", tokenizer=tiny_pair[1], role="challenger", opponent=opponent,
                            num_generations=2, max_new_tokens=MAX_NEW, window=WINDOW)
    env.reset(seed=0)
    steps, info = write(env, "7*8")
    assert len(info["round_rewards"]["solver"]) == 2
    assert steps[-1][0] == info["round_rewards"]["challenger"]
    texts = opponent([[{"role": "user", "content": "Compute 7*8."}]] * 2)
    assert len(texts) == 2 and texts[0] == texts[1] and all(isinstance(t, str) for t in texts)  # greedy: equal


def test_sb3_view_rejects_setups_it_cannot_play_honestly():
    with pytest.raises(ValueError, match="no challenger turn"):
        data_view(role="challenger", opponent=Scripted("5"))
    with pytest.raises(ValueError, match="needs opponent="):
        TokenLevelRoleEnv("LSP-Arith-v0", tokenizer="tiny-random")
    with pytest.raises(ValueError, match="KL"):
        data_view(kl=KLHook(beta=0.1))
    with pytest.raises(ValueError, match="max_new_tokens"):
        data_view(max_new_tokens=WINDOW)


def make_policy(env):
    return LLMActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-5, model="tiny-random")


def test_sb3_policy_value_head_is_the_only_new_head():
    policy = make_policy(data_view())
    vocab = policy.action_space.n
    linears = [(name, m) for name, m in policy.named_modules() if isinstance(m, torch.nn.Linear)]
    to_vocab = [name for name, m in linears if m.out_features == vocab]
    assert to_vocab == ["llm.lm_head"]
    assert isinstance(policy.value_net, torch.nn.Linear) and policy.value_net.out_features == 1
    assert policy.value_net.in_features == policy.llm.config.hidden_size
    assert not hasattr(policy, "action_net") and not hasattr(policy, "mlp_extractor")
    head_params = {id(p) for p in policy.llm.parameters()} | {id(p) for p in policy.value_net.parameters()}
    assert {id(p) for p in policy.parameters()} == head_params
    assert {id(p) for g in policy.optimizer.param_groups for p in g["params"]} == head_params


def test_sb3_policy_masks_left_padding():
    env = data_view()
    policy = make_policy(env).eval()
    obs, _ = env.reset(seed=0)
    real = obs[np.argmax(obs != env.pad_id):]
    wider = np.concatenate([np.full(20, env.pad_id), obs])  # the same tokens under more padding
    with torch.no_grad():
        logits = policy.get_distribution(torch.as_tensor(obs)[None]).distribution.logits
        wider_logits = policy.get_distribution(torch.as_tensor(wider)[None]).distribution.logits
        unpadded = policy.llm(input_ids=torch.as_tensor(real)[None]).logits[:, -1].log_softmax(-1)
        values = policy.predict_values(torch.as_tensor(np.stack([obs, wider[20:]])).float())  # SB3 may send floats
    torch.testing.assert_close(logits, unpadded, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(wider_logits, unpadded, atol=1e-5, rtol=1e-5)
    assert values.shape == (2, 1)


def test_sb3_ppo_learns_on_data_mode_and_changes_the_llm():
    env = data_view()
    ppo = PPO(LLMActorCriticPolicy, env, policy_kwargs={"model": "tiny-random"}, n_steps=64, batch_size=32,
              n_epochs=1, learning_rate=1e-4, seed=0)
    before = {name: p.detach().clone() for name, p in ppo.policy.named_parameters()}
    ppo.learn(total_timesteps=256)
    assert ppo.num_timesteps == 256
    returns = [episode["r"] for episode in ppo.ep_info_buffer]
    assert len(returns) >= 4 and len(set(returns)) > 1  # the length reward varies for a random model
    changed = {name for name, p in ppo.policy.named_parameters() if not torch.equal(p, before[name])}
    assert "llm.lm_head.weight" in changed or "llm.model.embed_tokens.weight" in changed  # tied in the tiny model
    assert {"llm.model.layers.0.self_attn.q_proj.weight", "value_net.weight"} <= changed


def test_sb3_is_not_imported_by_agents():
    code = "import sys, agents; assert 'stable_baselines3' not in sys.modules, 'agents imported SB3'"
    subprocess.run([sys.executable, "-c", code], check=True)
