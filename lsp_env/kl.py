"""KL regularisation to the reference model: the hook object that owns β.

The env never runs the policy, so it cannot compute KL itself. It is made with a :class:`KLHook` and exposes it as
``env.unwrapped.kl``; agents read β, the estimator and the placement from it:

- placement ``"loss"`` (the paper): the agent adds β · KL to that role's loss, token by token;
- placement ``"reward"``: the rollout subtracts β · (KL summed over the completion's tokens) from that role's
  reward before advantages, and records it in the batch metrics.

Estimators of KL(π || π_ref) from samples of π, per token, with ``d = log π_ref(x) − log π(x)`` (Schulman,
"Approximating KL divergence", 2020):  k1 = −d (unbiased, can be negative), k2 = d² / 2 (biased, low variance),
k3 = exp(d) − d − 1 (unbiased, ≥ 0, low variance; TRL's and the default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ESTIMATORS = ("k1", "k2", "k3")
PLACEMENTS = ("loss", "reward")
ROLES = ("challenger", "solver")


def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str = "k3",
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token KL estimate from the policy's and the reference's log-probs of the sampled tokens.

    ``mask`` (1 = a completion token, 0 = padding) sets d = 0, hence the estimate 0, at padded positions before
    any exponential: padding holds arbitrary log-probs (a reference row padded with 0 against a policy log-prob of
    -1000 gives exp(1000) = inf), and multiplying an inf by a 0 mask afterwards would give NaN, in the loss and in
    its gradient.
    """
    d = ref_logps - logps
    if mask is not None:
        d = torch.where(mask.bool(), d, torch.zeros_like(d))
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d**2
    if estimator == "k3":
        return torch.exp(d) - d - 1
    raise ValueError(f"estimator={estimator!r}: use one of {ESTIMATORS}")


@dataclass
class KLHook:
    """Per-role KL coefficient, estimator and placement.

    Args:
        beta: coefficient for both roles (``lsp-train --beta``); 0 switches KL off and skips reference forwards.
        challenger_beta: overrides ``beta`` for the challenger (its KL keeps its queries meaningful).
        solver_beta: overrides ``beta`` for the solver.
        estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (default, as TRL).
        placement: ``"loss"`` (the paper, default) or ``"reward"``.
    """

    beta: float = 0.0
    challenger_beta: float | None = None
    solver_beta: float | None = None
    estimator: str = "k3"
    placement: str = "loss"

    def __post_init__(self):
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"kl estimator={self.estimator!r}: use one of {ESTIMATORS}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"kl placement={self.placement!r}: use one of {PLACEMENTS}")
        for name in ("beta", "challenger_beta", "solver_beta"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name}={value}: a KL coefficient must be >= 0")

    def coef(self, role: str) -> float:
        override = {"challenger": self.challenger_beta, "solver": self.solver_beta}[role]
        return self.beta if override is None else override

    @property
    def active(self) -> bool:
        """True when some role has β > 0: only then are reference log-probs needed."""
        return any(self.coef(role) > 0 for role in ROLES)

    def estimate(self, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token estimate with this hook's estimator; 0 where ``mask`` is 0 (see :func:`kl_estimate`)."""
        return kl_estimate(logps, ref_logps, self.estimator, mask)

    def shape_rewards(self, rewards: torch.Tensor, kl_per_sequence: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
        """Placement "reward": r − β_role · KL(sequence), with ``roles`` 0 = challenger, 1 = solver."""
        betas = torch.tensor([self.coef("challenger"), self.coef("solver")], dtype=rewards.dtype)[roles]
        return rewards - betas * kl_per_sequence
