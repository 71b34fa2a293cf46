"""Language Self-Play as Gymnasium environments. ``import lsp_env`` registers:

| id                  | game                                                                  |
|---------------------|-----------------------------------------------------------------------|
| `LSP-v0`            | the paper's LSP: zero-sum payoff + self-quality reward (dialogue)     |
| `LSP-Zero-v0`       | LSP-Zero: the pure zero-sum game (dialogue)                           |
| `LSP-Arith-v0`      | verifiable self-play on arithmetic problems the challenger writes     |
| `LSP-Data-v0`       | data baseline (dialogue): queries from a prompt list, solver turns    |
| `LSP-Arith-Data-v0` | data baseline (arithmetic): problems from the seeded generator        |
| `LSP-IF-v0`         | instruction following: requests with IFEval's checkable instructions  |
| `LSP-IF-Data-v0`    | data baseline (instructions): requests from the training list         |
"""

from gymnasium.envs.registration import register

from .env import LSPEnv, RoundResult
from .kl import KLHook, kl_estimate
from .rewards import PAYOFFS, ArithmeticReward, InstructionReward, LengthReward, LLMJudge, RewardModel, SelfQuality
from .vector import LSPVectorEnv

ENV_IDS = {
    "LSP-v0": {"task": "dialogue", "quality": "self"},
    "LSP-Zero-v0": {"task": "dialogue"},
    "LSP-Arith-v0": {"task": "arithmetic"},
    "LSP-Data-v0": {"task": "dialogue", "prompts": True},
    "LSP-Arith-Data-v0": {"task": "arithmetic", "prompts": True},
    "LSP-IF-v0": {"task": "instructions"},
    "LSP-IF-Data-v0": {"task": "instructions", "prompts": True},
}

for _env_id, _kwargs in ENV_IDS.items():
    register(
        id=_env_id,
        entry_point="lsp_env.env:LSPEnv",
        vector_entry_point="lsp_env.vector:LSPVectorEnv",
        kwargs=_kwargs,
        disable_env_checker=True,  # the checker's passive wrapper samples nothing useful for text; tests run check_env
    )

__all__ = [
    "ENV_IDS", "LSPEnv", "LSPVectorEnv", "RoundResult", "KLHook", "kl_estimate", "PAYOFFS",
    "LLMJudge", "SelfQuality", "RewardModel", "ArithmeticReward", "InstructionReward", "LengthReward",
]
