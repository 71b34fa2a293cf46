"""Policy gradient (REINFORCE) for Language Self-Play: one update per batch, the paper's baselines.

Solver:     L_sol = −mean_(i,j) A_sol(q_i, a_ij) · log π(a_ij | q_i)       A_sol = R(q_i, a_ij) − V(q_i)
Challenger: L_ch  = −mean_i     A_ch(q_i) · log π(q_i | challenger prompt)   A_ch = c_i − mean_k c_k (c = −V: zero-sum)
Total:      L = solver_weight · L_sol + α · L_ch (+ β_role · KL(π || π_ref) per token, placement "loss")
log π of a completion is averaged over its tokens (``loss_type="grpo"``) unless another aggregation is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import distributed
from .base import AgentConfig, LLMAgent, pad_rows
from .rollout import Batch


@dataclass
class PGConfig(AgentConfig):
    """REINFORCE has no knobs beyond the shared ones (advantages, aggregation, optimizer, sampling)."""


class PGAgent(LLMAgent):
    config_class = PGConfig

    def update(self, batch: Batch) -> dict:
        prep = self.prepare(batch)
        totals = {"loss/challenger": 0.0, "loss/solver": 0.0}
        kl_sums = {"challenger": [0.0, 0.0], "solver": [0.0, 0.0]}
        for chunk in self.micro_batches(batch, prep.index):
            logps, mask = self.policy.completion_logps([batch.prompt_ids[i] for i in chunk],
                                                       [batch.completion_ids[i] for i in chunk])
            A = prep.advantages[chunk, None]
            per_token = -A * logps                                                    # REINFORCE
            if prep.ref_logps is not None:
                kl = self.kl.estimate(logps, pad_rows(prep.ref_logps, chunk))
                per_token = per_token + prep.betas[chunk, None] * kl                  # + β · KL(π || π_ref)
                self.track_kl(kl.detach(), mask, batch.roles[chunk], kl_sums)
            per_sample = (per_token * mask).sum(-1) * prep.weights[chunk]
            per_sample.sum().backward()
            self.track_loss(per_sample.detach(), batch.roles[chunk], totals)
        totals, kl_sums = distributed.sum_across((totals, kl_sums))  # the global batch's (no-op in one process)
        grad_norm = self.optimizer_step()
        return {**batch.metrics, **prep.metrics, **totals, **self.kl_metrics(kl_sums), "grad_norm": grad_norm}
