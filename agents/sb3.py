"""stable-baselines3 interop: a PPO policy whose actor is the LLM, for the token-level view of one role of an LSP env
(:class:`lsp_env.token_level.TokenLevelRoleEnv`, re-exported here), and the frozen-reference opponent.

    from stable_baselines3 import PPO
    from agents.sb3 import LLMActorCriticPolicy, TokenLevelRoleEnv

    env = TokenLevelRoleEnv("LSP-Arith-Data-v0", tokenizer="tiny-random", reward="length")
    ppo = PPO(LLMActorCriticPolicy, env, policy_kwargs={"model": "tiny-random"}, n_steps=64, batch_size=16)
    ppo.learn(512)

Needs the extra ``lsp-gym[sb3]``. SB3 sees one token per step, a full forward pass over the window (no KV cache):
use it to plug LSP into SB3 tooling, and ``lsp-train`` for speed.
"""

from __future__ import annotations

import torch
from gymnasium import spaces
from torch import nn

try:
    from stable_baselines3.common.distributions import CategoricalDistribution
    from stable_baselines3.common.policies import ActorCriticPolicy
except ImportError as err:  # pragma: no cover - the [sb3] extra is part of [dev]
    raise ImportError("agents.sb3 needs stable-baselines3: pip install 'lsp-gym[sb3]'") from err

from lsp_env import models
from lsp_env.prompts import render_chat
from lsp_env.token_level import TokenLevelRoleEnv

from .backends.hf import HFBackend


class ReferenceOpponent:
    """The fixed opponent of :class:`TokenLevelRoleEnv`: the frozen reference model writes the other role's turns.

    Calling it maps chats (the env's ``info["messages"]``) to completion texts, generated in one batch.

    Args:
        model: a model name (loaded once per process, frozen: :func:`lsp_env.models.load_reference`) or a loaded
            ``(model, tokenizer)`` pair, e.g. ``Policy.reference_pair()`` (a LoRA model then plays with its
            adapters disabled, i.e. as the base model).
        max_new_tokens: length limit of each turn.
        do_sample: sample at ``temperature`` (True) or decode greedily. Sampling draws from torch's global RNG,
            which SB3 seeds (``PPO(seed=...)``).
    """

    def __init__(self, model="embedded", max_new_tokens: int = 64, do_sample: bool = True, temperature: float = 1.0):
        self.model, self.tokenizer = models.resolve(model)
        self.backend = HFBackend(self.model, self.tokenizer)
        self.max_new_tokens, self.do_sample, self.temperature = max_new_tokens, do_sample, temperature

    def __call__(self, chats: list[list[dict]]) -> list[str]:
        prompts = [render_chat(self.tokenizer, chat) for chat in chats]
        with models.reference_mode(self.model):
            completions = self.backend.generate(prompts, self.max_new_tokens, temperature=self.temperature,
                                                do_sample=self.do_sample)
        return [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in completions]


def padding_mask(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """1 from each row's first non-pad token on: only the leading run of pad ids is padding (left padding)."""
    return ((ids != pad_id).cumsum(-1) > 0).long()


class LLMActorCriticPolicy(ActorCriticPolicy):
    """An SB3 actor-critic whose actor is a causal LM (its own ``lm_head`` gives the action logits) and whose
    critic is a ``Linear(hidden, 1)`` value head on the LM's last hidden state at the last position.

    SB3's ``mlp_extractor`` and action net are never built: one LM pass serves both heads (the value loss trains
    the shared trunk too). The observation is :class:`TokenLevelRoleEnv`'s left-padded window of token ids, its
    padding masked and positions starting at the first real token, as for the unpadded sequence.

    Args (``PPO(..., policy_kwargs={...})``):
        model: a model name for :func:`lsp_env.models.load_model` (a fresh trainable copy; a name keeps
            ``PPO.save``/``load`` light) or a loaded causal LM module (e.g. a peft model for LoRA).
        pad_token_id: the observation's pad id; default: the loaded tokenizer's, else the model's generation config.
        Other keywords go to ``ActorCriticPolicy`` (``optimizer_class``, ``optimizer_kwargs``; ``net_arch`` and
        ``ortho_init`` have nothing to act on). The optimizer covers the LM and the value head at PPO's
        ``learning_rate``: pick an LM-sized one (~1e-5), not SB3's default 3e-4.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule,
                 model="embedded", pad_token_id: int | None = None, **kwargs):
        if not isinstance(action_space, spaces.Discrete) or not isinstance(observation_space, spaces.Box):
            raise TypeError("LLMActorCriticPolicy needs TokenLevelRoleEnv's spaces: Box of token ids, Discrete(vocab)")
        # read by _build, which ActorCriticPolicy.__init__ calls; object.__setattr__ because nn.Module refuses a
        # module attribute before its __init__ (the LM is registered as self.llm in _build)
        object.__setattr__(self, "model_source", model)
        self.pad_token_id = pad_token_id
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule) -> None:
        if isinstance(self.model_source, str):
            llm, tokenizer = models.load_model(self.model_source)
            pad_id = tokenizer.pad_token_id
        else:
            llm, pad_id = self.model_source, self.model_source.generation_config.pad_token_id
        self.pad_token_id = pad_id if self.pad_token_id is None else self.pad_token_id
        if self.pad_token_id is None:
            raise ValueError("no pad id known for this model: "
                             "pass policy_kwargs={'pad_token_id': tokenizer.pad_token_id}")
        head = llm.get_output_embeddings()
        if head.out_features != self.action_space.n:
            raise ValueError(f"the LM has {head.out_features} output tokens but the action space has "
                             f"{self.action_space.n}: make the env with vocab_size={head.out_features}")
        if self.action_space.n > 2**24:  # SB3 may hand Box observations over as float32: ids stay exact below 2**24
            raise ValueError(f"vocab_size {self.action_space.n} > 2**24 cannot travel as float32 token ids")
        self.llm = llm.train()
        self.value_net = nn.Linear(head.in_features, 1)
        nn.init.zeros_(self.value_net.weight)  # V = 0 at the start: no random critic noise in the first advantages
        nn.init.zeros_(self.value_net.bias)
        assert isinstance(self.action_dist, CategoricalDistribution)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict:
        return {**super()._get_constructor_parameters(), "model": self.model_source, "pad_token_id": self.pad_token_id}

    def actor_critic(self, obs: torch.Tensor):
        """One LM pass -> (the action distribution from the LM's logits, the value head's values)."""
        ids = obs.long()
        mask = padding_mask(ids, self.pad_token_id)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.llm.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        last = hidden[:, -1]  # the LM head runs on the last position only, not on the whole window
        logits = self.llm.get_output_embeddings()(last).float()
        return self.action_dist.proba_distribution(action_logits=logits), self.value_net(last.float())

    def forward(self, obs: torch.Tensor, deterministic: bool = False):
        distribution, values = self.actor_critic(obs)
        actions = distribution.get_actions(deterministic=deterministic)
        return actions, values, distribution.log_prob(actions)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor):
        distribution, values = self.actor_critic(obs)
        return values, distribution.log_prob(actions), distribution.entropy()

    def get_distribution(self, obs: torch.Tensor):
        return self.actor_critic(obs)[0]

    def predict_values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor_critic(obs)[1]


__all__ = ["LLMActorCriticPolicy", "ReferenceOpponent", "TokenLevelRoleEnv", "padding_mask"]
