"""Policy gradient (REINFORCE) for Language Self-Play: one update per batch, the paper's baselines.

Solver:     L_sol = −mean_(i,j) A_sol(q_i, a_ij) · log π(a_ij | q_i)       A_sol = R(q_i, a_ij) − V(q_i)
Challenger: L_ch  = −mean_i     A_ch(q_i) · log π(q_i | challenger prompt)   A_ch = c_i − mean_k c_k (c = −V: zero-sum)
Total:      L = solver_weight · L_sol + α · L_ch (+ β_role · KL(π || π_ref) per token, placement "loss")
The advantages are those above by default (``scale_rewards="none"``: no std scaling); log π of a completion is
averaged over its tokens (``loss_type="grpo"``) unless another aggregation is chosen: ``loss_type="sequence"`` sums
them, the paper's log π(a | q), as ``lsp-train --recipe paper`` does. The per-token term is :func:`reinforce`; the
KL term, the aggregation and the step are the learner's (:meth:`agents.base.LLMAgent.update`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import AgentConfig, LLMAgent


def reinforce(logps: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """Per-token −A · log π(o_t | ·): its gradient is −A · ∇log π, the REINFORCE estimator."""
    return -advantages * logps


@dataclass
class PGConfig(AgentConfig):
    """REINFORCE has no knobs beyond the shared ones; its advantages default to the paper's, unscaled."""

    scale_rewards: str = field(default="none", metadata={"help": (
        "Divide advantages by the std of the group, the batch, or none (default here: the paper's A = R - V).")})


class PGAgent(LLMAgent):
    config_class = PGConfig

    def policy_loss(self, logps, old_logps, advantages):
        return reinforce(logps, advantages), {}
