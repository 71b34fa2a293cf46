"""The agent protocol and the learner every LLM agent shares: acting, KL, advantages, loss weights, the update.

:func:`agents.train.train` runs any object with the :class:`Agent` protocol. Subclass :class:`LLMAgent` and write only
your per-token objective (:meth:`LLMAgent.policy_loss`), or a whole ``update`` of your own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch.nn.utils.rnn import pad_sequence

from lsp_env.kl import KLHook
from lsp_env.prompts import Role

from . import distributed
from .advantages import ADVANTAGES, SCALE_REWARDS, RoleBaseline, compute_advantages
from .policy import Completion, Policy
from .rollout import Batch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "sequence")


class Agent(Protocol):
    """What :func:`agents.train.train` uses of an agent: its policy (evaluated, FLOPs counted), acting, one update per
    batch, and its state for checkpoints."""

    policy: Policy

    def act(self, chats: list[list[dict]]) -> list[Completion]: ...

    def update(self, batch: Batch) -> dict: ...

    def save_state(self, directory: str | os.PathLike) -> None: ...

    def load_state(self, directory: str | os.PathLike) -> None: ...


@dataclass
class AgentConfig:
    """Knobs every LLM agent shares (TRL's names where the meaning is the same)."""

    learning_rate: float = field(default=5e-6, metadata={"help": (
        "AdamW learning rate (TRL's default, 1e-6, is slow for a 135M model).")})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the gradient's global norm to this (0 = off)."})
    max_completion_length: int = field(default=64, metadata={"help": "Max new tokens per completion, both roles."})
    temperature: float = field(default=1.0, metadata={"help": (
        "Sampling temperature; the policy's, old and reference log-probs are those of softmax(logits / "
        "temperature), the sampled distribution (TRL's convention). Greedy evaluation ignores it.")})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling (0 = off)."})
    loss_type: str = field(default="grpo", metadata={"help": (
        "Token aggregation per role, TRL's meanings (aggregation_weights gives each): grpo, bnpo, dr_grpo, dapo, "
        "and sequence (the paper: the sequence's log-probability, mean over sequences). bnpo divides by the role's "
        "tokens on this process in the iteration, so unlike TRL's it does not change with micro_batch_size.")})
    scale_rewards: str = field(default="group", metadata={"help": (
        "Divide advantages by the std of the group, the batch, or none (Dr. GRPO).")})
    advantage: str = field(default="group", metadata={"help": (
        "group: R - V(q) for solvers, payoff - mean payoff for the challenger (the paper). rae: SPIRAL's per-role "
        "EMA baseline.")})
    rae_decay: float = field(default=0.95, metadata={"help": "EMA decay of the rae baseline."})
    challenger_weight: float = field(default=1.0, metadata={"help": (
        "alpha: total loss = solver_weight * solver loss + alpha * challenger loss.")})
    solver_weight: float = field(default=1.0, metadata={"help": "Weight of the solver's loss."})
    micro_batch_size: int = field(default=16, metadata={"help": (
        "Sequences per forward/backward pass (memory, not maths: the loss is exact across micro-batches).")})

    def __post_init__(self):
        for name, value, allowed in (("loss_type", self.loss_type, LOSS_TYPES),
                                     ("scale_rewards", self.scale_rewards, SCALE_REWARDS),
                                     ("advantage", self.advantage, ADVANTAGES)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}: use one of {allowed}")
        if self.max_completion_length < 1 or self.micro_batch_size < 1:
            raise ValueError("max_completion_length and micro_batch_size must be >= 1")


@dataclass
class Prepared:
    """A batch made ready for the loss: per-sample advantages, loss weights, KL coefficients, reference log-probs."""

    index: list[int]                       # samples that carry gradient (non-zero advantage or KL in the loss)
    advantages: torch.Tensor               # (B,)
    weights: torch.Tensor                  # (B,) per-token loss weight of each sample (role weight x aggregation)
    betas: torch.Tensor                    # (B,) KL coefficient of each sample's role, 0 unless placement "loss"
    ref_logps: list[torch.Tensor] | None   # per sample (completion length,), when KL is active
    metrics: dict


def aggregation_weights(roles: torch.Tensor, lengths: torch.Tensor, loss_type: str, max_completion_length: int,
                        challenger_weight: float = 1.0, solver_weight: float = 1.0) -> torch.Tensor:
    """Per-sample weight w_b such that a role's loss is sum_b w_b * sum_t loss_bt (TRL's aggregations, per role).

    grpo: 1 / (n_role * |o_b|) (mean over tokens, then over sequences); bnpo and dapo: 1 / (tokens of the role;
    dapo counts the global batch across processes, bnpo this process's); dr_grpo: 1 / (n_role * max_completion_length);
    sequence: 1 / n_role (the paper's −mean_b A_b · log π(o_b), log π(o_b) = sum_t log π(o_bt)).
    Linear in the samples, so micro-batching the backward pass leaves the loss exact.

    bnpo's normaliser is exact whatever ``micro_batch_size``, unlike TRL's (``AgentConfig.loss_type`` says how).
    """
    weights = torch.zeros(len(roles))
    for role, role_weight in ((0, challenger_weight), (1, solver_weight)):
        pick = roles == role
        n = int(pick.sum())
        if n == 0:
            continue
        if loss_type == "grpo":
            norm = n * lengths[pick]
        elif loss_type in ("bnpo", "dapo"):
            norm = lengths[pick].sum().expand(n)
        elif loss_type == "dr_grpo":
            norm = torch.full((n,), float(n * max_completion_length))
        elif loss_type == "sequence":
            norm = torch.full((n,), float(n))
        else:
            raise ValueError(f"loss_type={loss_type!r}: use one of {LOSS_TYPES}")
        weights[pick] = role_weight / norm
    return weights


def pad_rows(rows: list[torch.Tensor], index: list[int]) -> torch.Tensor:
    return pad_sequence([rows[i] for i in index], batch_first=True)


class LLMAgent:
    """Shared parts of an agent that trains one :class:`Policy` for both roles."""

    config_class = AgentConfig

    def __init__(self, policy: Policy, kl: KLHook | None = None, config: AgentConfig | None = None):
        self.policy, self.kl, self.config = policy, kl or KLHook(), config or self.config_class()
        params = [p for p in policy.model.parameters() if p.requires_grad]
        # fused: one kernel over all parameters instead of a loop over them (several times faster on CPU)
        self.optimizer = torch.optim.AdamW(params, lr=self.config.learning_rate, weight_decay=self.config.weight_decay,
                                           fused=True)
        self.baseline = RoleBaseline(self.config.rae_decay) if self.config.advantage == "rae" else None

    def act(self, chats: list[list[dict]]) -> list[Completion]:
        c = self.config
        return self.policy.generate(chats, max_new_tokens=c.max_completion_length, temperature=c.temperature,
                                    top_p=c.top_p, top_k=c.top_k)

    # ---- shared steps of update -----------------------------------------------------------------------------
    def completion_logps(self, batch: Batch, chunk: list[int], reference: bool = False):
        """``(logps, mask)`` of the samples ``chunk`` at the sampling temperature (:meth:`Policy.completion_logps`)."""
        return self.policy.completion_logps([batch.prompt_ids[i] for i in chunk],
                                            [batch.completion_ids[i] for i in chunk],
                                            reference=reference, temperature=self.config.temperature)

    def sequence_logps(self, batch: Batch, index: list[int], reference: bool = False) -> list[torch.Tensor]:
        """Per-sample completion log-probs, micro-batched, without autograd: constants of the loss (the old policy's,
        the reference's, the reward placement's KL), so building a graph for them would only cost memory and time."""
        out: list[torch.Tensor | None] = [None] * len(batch)
        with torch.no_grad():
            for chunk in self.micro_batches(batch, index):
                logps, _ = self.completion_logps(batch, chunk, reference=reference)
                for k, i in enumerate(chunk):
                    out[i] = logps[k, : len(batch.completion_ids[i])]
        return out

    def prepare(self, batch: Batch) -> Prepared:
        """KL bookkeeping, reward shaping ("reward" placement), advantages and per-sample loss weights.

        Multi-process: each rank holds its share of the iteration's rows. Advantages and loss weights are taken on
        the rows of ALL ranks (gathered: the challenger's mean over all N queries, ``scale_rewards="batch"``'s std,
        the token and sample counts of ``loss_type``) and each rank keeps its own, so its loss is its share of the
        global loss and the gradients summed over ranks (:meth:`optimizer_step`) are the one-process gradient.
        """
        c, kl = self.config, self.kl
        everyone = list(range(len(batch)))
        metrics, rewards, ref_logps = {}, batch.rewards, None
        kl_per_sequence = torch.zeros(len(batch))
        if kl.active:
            ref_logps = self.sequence_logps(batch, everyone, reference=True)
            if kl.placement == "reward":
                logps = self.sequence_logps(batch, everyone)
                kl_per_sequence = torch.stack([kl.estimate(lp, rl).sum() for lp, rl in zip(logps, ref_logps)])
                rewards = kl.shape_rewards(rewards, kl_per_sequence, batch.roles)
        lengths = torch.tensor([len(x) for x in batch.completion_ids], dtype=torch.float32)
        # rank order = round order, so one role's gathered rows come in the one-process order (same float sums).
        # Round indices restart at 0 on every rank: interleave them so that rounds of different ranks stay apart.
        round_ids = batch.groups * distributed.world_size() + distributed.rank()
        (rewards, roles, groups, all_lengths, kl_per_sequence), mine = distributed.gather_rows(
            rewards, batch.roles, round_ids, lengths, kl_per_sequence)
        if kl.active and kl.placement == "reward":
            for role in Role:
                if (roles == role).any():
                    metrics[f"kl_penalty/{role.key}"] = float(kl_per_sequence[roles == role].mean())
        advantages = compute_advantages(rewards, roles, groups, c.scale_rewards, self.baseline)
        betas = (torch.tensor([kl.coef(role.key) for role in Role])[roles] if kl.placement == "loss"
                 else torch.zeros(len(roles)))
        if c.loss_type == "bnpo" and distributed.world_size() > 1:  # bnpo: this process's tokens, mean over processes
            weights = aggregation_weights(batch.roles, lengths, c.loss_type, c.max_completion_length,
                                          c.challenger_weight, c.solver_weight) / distributed.world_size()
        else:
            weights = aggregation_weights(roles, all_lengths, c.loss_type, c.max_completion_length,
                                          c.challenger_weight, c.solver_weight)[mine]
        # a sample with zero advantage and no KL term has zero gradient: skip its forward/backward
        trained = (advantages != 0) | (betas > 0)
        metrics["advantage/abs_mean"] = float(advantages.abs().mean())
        metrics["trained_samples"] = int(trained.sum())
        index = trained[mine].nonzero().flatten().tolist()
        return Prepared(index, advantages[mine], weights, betas[mine], ref_logps, metrics)

    def micro_batches(self, batch: Batch, index: list[int]) -> list[list[int]]:
        """The samples cut into micro-batches of at most ``micro_batch_size`` rows, keeping the rows that share a
        prompt (a GRPO group) together, so that its prompt runs through the model once
        (:meth:`Policy.completion_logps`).

        Groups are ordered by their longest row (similar lengths share a pass: less padding) and packed greedily; a
        group that does not fit in the current micro-batch starts the next one, and only a group larger than a
        whole micro-batch is split.
        """
        size = self.config.micro_batch_size
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in index:
            groups.setdefault(tuple(batch.prompt_ids[i]), []).append(i)
        def length(i: int) -> int:
            return len(batch.prompt_ids[i]) + len(batch.completion_ids[i])

        chunks: list[list[int]] = []
        for rows in sorted(groups.values(), key=lambda rows: (max(map(length, rows)), rows[0])):
            rows = sorted(rows, key=lambda i: (length(i), i))
            if chunks and len(chunks[-1]) + len(rows) <= size:
                chunks[-1].extend(rows)
                continue
            chunks += [rows[k:k + size] for k in range(0, len(rows), size)]
        return chunks

    def optimizer_step(self) -> float:
        """Sum the gradients over ranks, clip their global norm, step; raises on a non-finite norm (every rank alike:
        each holds the summed gradient). A sum, not DDP's average (the loss weights are already global), and after
        the last backward: ranks may run different numbers of micro-batches, and the model stays unwrapped."""
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        distributed.all_reduce_gradients(params)
        limit = self.config.max_grad_norm if self.config.max_grad_norm > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, limit)
        if not torch.isfinite(norm):  # never step on NaN/inf: the weights stay as they were
            self.optimizer.zero_grad(set_to_none=True)
            raise FloatingPointError(f"non-finite gradient norm ({float(norm)}): the loss or the rewards hold NaN/inf")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.policy.backend.sync_weights()
        return float(norm)

    # ---- the learner: one loop for every policy-gradient agent ------------------------------------------------
    token_metrics: tuple[str, ...] = ()  # names of the per-token flags policy_loss returns, reported as token means

    def policy_loss(self, logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor):
        """The agent's own objective per token, before β · KL and aggregation: ``(loss (rows, T), {name: flags})``,
        ``advantages`` of shape (rows, 1), the flags named in :attr:`token_metrics`. Subclasses define it."""
        raise NotImplementedError

    def update(self, batch: Batch) -> dict:
        """env → rollout → advantages → loss → update, for the objective :meth:`policy_loss` defines:
        per token  L_t = policy_loss_t + β_role · KL_t(π || π_ref)   (KL placement "loss"),
        per sample Σ_t L_t · mask_t · w_b (w: the ``loss_type``'s aggregation weights and the role weights),
        backward per micro-batch, gradients summed over ranks, one optimizer step; ``num_iterations`` passes
        when the config has them (GRPO's μ: π_old is the policy that sampled, its log-probs computed once)."""
        prep = self.prepare(batch)
        passes = getattr(self.config, "num_iterations", 1)
        old_logps = self.sequence_logps(batch, prep.index) if passes > 1 else None
        metrics: dict = {}
        for _ in range(passes):
            losses = {f"loss/{role.key}": 0.0 for role in Role}
            kl_sums = {role.key: [0.0, 0.0] for role in Role}
            flag_sums = {name: [0.0, 0.0] for name in self.token_metrics}
            for chunk in self.micro_batches(batch, prep.index):
                logps, mask = self.completion_logps(batch, chunk)
                old = pad_rows(old_logps, chunk) if old_logps else logps.detach()
                per_token, flags = self.policy_loss(logps, old, prep.advantages[chunk, None])
                roles = batch.roles[chunk]
                if prep.ref_logps is not None:
                    kl = self.kl.estimate(logps, pad_rows(prep.ref_logps, chunk), mask)
                    per_token = per_token + prep.betas[chunk, None] * kl
                    for role in Role:
                        kl_sums[role.key][0] += float((kl.detach() * mask)[roles == role].sum())
                        kl_sums[role.key][1] += float(mask[roles == role].sum())
                per_sample = (per_token * mask).sum(-1) * prep.weights[chunk]
                per_sample.sum().backward()
                for role in Role:
                    losses[f"loss/{role.key}"] += float(per_sample.detach()[roles == role].sum())
                for name, flag in flags.items():
                    flag_sums[name][0] += float((flag.float() * mask).sum())
                    flag_sums[name][1] += float(mask.sum())
            # the global batch's sums (no-op in one process)
            losses, kl_sums, flag_sums = distributed.sum_across((losses, kl_sums, flag_sums))
            metrics = {**losses, **{f"kl/{name}": total / count for name, (total, count) in kl_sums.items() if count},
                       "grad_norm": self.optimizer_step(),
                       **{name: total / max(count, 1.0) for name, (total, count) in flag_sums.items()}}
        return {**batch.metrics, **prep.metrics, **metrics}

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def save_state(self, directory: str | os.PathLike) -> None:
        self.policy.save(directory)
        extra = {"baseline": self.baseline.state_dict() if self.baseline else None}
        torch.save({"optimizer": self.optimizer.state_dict(), **extra}, os.path.join(directory, "agent.pt"))

    def load_state(self, directory: str | os.PathLike) -> None:
        self.policy.load_weights(directory)
        state = torch.load(os.path.join(directory, "agent.pt"), weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.baseline and state.get("baseline"):
            self.baseline.load_state_dict(state["baseline"])
