"""Policy gradient (REINFORCE) for Language Self-Play: one update per batch, the paper's baselines.

Solver:     L_sol = −mean_(i,j) A_sol(q_i, a_ij) · log π(a_ij | q_i)       A_sol = R(q_i, a_ij) − V(q_i)
Challenger: L_ch  = −mean_i     A_ch(q_i) · log π(q_i | challenger prompt)   A_ch = c_i − mean_k c_k (c = −V: zero-sum)
Total:      L = solver_weight · L_sol + α · L_ch (+ β_role · KL(π || π_ref) per token, placement "loss")
The advantages are those above by default (``scale_rewards="none"``: no std scaling); log π of a completion is
averaged over its tokens (``loss_type="grpo"``) unless another aggregation is chosen: ``loss_type="sequence"`` sums
them, the paper's log π(a | q), as ``lsp-train --recipe paper`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import distributed
from .base import AgentConfig, LLMAgent
from .rollout import Batch


@dataclass
class PGConfig(AgentConfig):
    """REINFORCE has no knobs beyond the shared ones; its advantages default to the paper's, unscaled."""

    scale_rewards: str = field(default="none", metadata={"help": "Divide advantages by the std of the group, the batch, or none (default here: the paper's A = R - V)."})


class PGAgent(LLMAgent):
    config_class = PGConfig

    def update(self, batch: Batch) -> dict:
        prep = self.prepare(batch)
        totals = {"loss/challenger": 0.0, "loss/solver": 0.0}
        kl_sums = {"challenger": [0.0, 0.0], "solver": [0.0, 0.0]}
        for chunk in self.micro_batches(batch, prep.index):
            logps, mask = self.completion_logps(batch, chunk)
            per_token = -prep.advantages[chunk, None] * logps                         # REINFORCE
            self.backward_micro_batch(per_token, logps, mask, chunk, batch, prep, totals, kl_sums)  # + β · KL
        totals, kl_sums = distributed.sum_across((totals, kl_sums))  # the global batch's (no-op in one process)
        grad_norm = self.optimizer_step()
        return {**batch.metrics, **prep.metrics, **totals, **self.kl_metrics(kl_sums), "grad_norm": grad_norm}
