"""Advantages for both roles, shared by every agent.

- Solver: A(q_i, a_ij) = R(q_i, a_ij) − V(q_i), V(q_i) the mean of its query's G rewards (group-relative, GRPO's);
  ``scale_rewards`` divides by the std (TRL's meaning and numbers: Bessel-corrected, ``+ 1e-4``) of the group
  (``"group"``), of all the role's rewards in the batch (``"batch"``), or not at all (``"none"``).
- Challenger: A(q_i) = c_i − mean_k c_k, its payoff against the mean payoff over the iteration's queries (with the
  zero-sum payoff c = −V this is the paper's mean_k V(q_k) − V(q_i)); ``scale_rewards`` other than ``"none"``
  divides by the std over the iteration's queries.
- ``advantage="rae"``: SPIRAL's role-conditioned advantage estimation instead: A = r − b_role with b_role an EMA
  of the role's mean reward (decay 0.95), read before it is updated with this batch.
"""

from __future__ import annotations

import torch

SCALE_REWARDS = ("group", "batch", "none")
ADVANTAGES = ("group", "rae")
EPS = 1e-4  # TRL's


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, scale_rewards: str = "group") -> torch.Tensor:
    """R − mean of its group, optionally divided by the group's / batch's std (+1e-4)."""
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards={scale_rewards!r}: use one of {SCALE_REWARDS}")
    _, index = torch.unique(groups, return_inverse=True)
    count = torch.zeros(int(index.max()) + 1).index_add_(0, index, torch.ones_like(rewards))
    mean = torch.zeros_like(count).index_add_(0, index, rewards) / count
    centred = rewards - mean[index]
    if scale_rewards == "none":
        return centred
    if scale_rewards == "batch":
        return centred / (rewards.std() + EPS)
    if (count < 2).any():
        raise ValueError("scale_rewards='group' needs at least 2 samples per group (num_generations >= 2)")
    var = torch.zeros_like(count).index_add_(0, index, centred**2) / (count - 1)
    return centred / (var.sqrt()[index] + EPS)


def challenger_advantages(payoffs: torch.Tensor, scale_rewards: str = "group") -> torch.Tensor:
    """c − mean over the iteration's queries, optionally divided by their std (+1e-4)."""
    centred = payoffs - payoffs.mean()
    if scale_rewards == "none" or len(payoffs) < 2:
        return centred
    return centred / (payoffs.std() + EPS)


class RoleBaseline:
    """SPIRAL's role-conditioned baseline: an EMA of each role's mean reward, read before it is updated."""

    def __init__(self, decay: float = 0.95):
        self.decay = decay
        self.values: dict[int, float] = {}

    def __call__(self, rewards: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
        advantages = torch.zeros_like(rewards)
        for role in roles.unique().tolist():
            pick = roles == role
            baseline = self.values.get(role, 0.0)
            advantages[pick] = rewards[pick] - baseline
            self.values[role] = self.decay * baseline + (1 - self.decay) * float(rewards[pick].mean())
        return advantages

    def state_dict(self) -> dict:
        return {"decay": self.decay, "values": dict(self.values)}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.values = {int(k): v for k, v in state["values"].items()}


def compute_advantages(rewards, roles, groups, scale_rewards: str = "group", baseline: RoleBaseline | None = None):
    """Per-sample advantages for a batch holding both roles (0 = challenger, 1 = solver)."""
    if baseline is not None:
        return baseline(rewards, roles)
    advantages = torch.zeros_like(rewards)
    solver, challenger = roles == 1, roles == 0
    if solver.any():
        advantages[solver] = group_advantages(rewards[solver], groups[solver], scale_rewards)
    if challenger.any():
        advantages[challenger] = challenger_advantages(rewards[challenger], scale_rewards)
    return advantages
