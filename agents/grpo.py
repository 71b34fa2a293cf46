"""GRPO for Language Self-Play: clipped importance ratio, ``num_iterations`` updates per batch, TRL's loss variants.

Per token t of a completion o with advantage A (solver: group-relative; challenger: against the mean payoff):
    ratio_t = π(o_t | ·) / π_old(o_t | ·)
    L_t     = −min(ratio_t · A, clip(ratio_t, 1 − ε, 1 + ε_high) · A) + β_role · KL_t(π || π_ref)     (k3 default)
aggregated per role by ``loss_type`` (grpo / bnpo / dr_grpo / dapo, TRL's meanings), then
    L = solver_weight · L_sol + α · L_ch.
With ``num_iterations = 1`` π_old is π detached (ratio 1, gradient A · ∇log π): no extra forward pass. The per-token
term is :func:`clipped_surrogate`; the KL term, the aggregation, the passes and the step are the learner's
(:meth:`agents.base.LLMAgent.update`).
π, π_old and π_ref are the distributions sampled from, softmax(logits / ``temperature``) (TRL's convention).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import AgentConfig, LLMAgent


def clipped_surrogate(logps, old_logps, advantages, eps_low: float, eps_high: float):
    """Per-token −min(ratio · A, clip(ratio, 1 − ε_low, 1 + ε_high) · A), and where the clip was active."""
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    return -torch.min(ratio * advantages, clipped * advantages), ratio != clipped


@dataclass
class GRPOConfig(AgentConfig):
    epsilon: float = field(default=0.2, metadata={"help": (
        "Lower clip range of the ratio (and upper, unless epsilon_high).")})
    epsilon_high: float | None = field(default=None, metadata={"help": (
        "Upper clip range (DAPO's clip-higher); default: epsilon.")})
    num_iterations: int = field(default=1, metadata={"help": (
        "Optimizer steps per batch (TRL's mu); >1 computes old log-probs once.")})

    def __post_init__(self):
        super().__post_init__()
        if self.num_iterations < 1 or self.epsilon < 0:
            raise ValueError("num_iterations must be >= 1 and epsilon >= 0")


class GRPOAgent(LLMAgent):
    config_class = GRPOConfig
    token_metrics = ("clip_ratio",)  # the share of tokens whose ratio the clip bounded

    def policy_loss(self, logps, old_logps, advantages):
        c = self.config
        per_token, was_clipped = clipped_surrogate(logps, old_logps, advantages, c.epsilon,
                                                   c.epsilon if c.epsilon_high is None else c.epsilon_high)
        return per_token, {"clip_ratio": was_clipped}
