"""Play one iteration of the game on a vector env: N challenger queries, then N × G solver answers -> a Batch.

One generation call for the N queries (k each with `query_attempts`), one for the N × G answers. Under several
processes each rank plays its share of the rounds; the batch holds this rank's rows, its metrics the global batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from lsp_env.env import RoundResult
from lsp_env.monitor import hacking_counts, hacking_metrics
from lsp_env.prompts import Role
from lsp_env.rewards import LLMJudge
from lsp_env.tasks import InstructionsTask, instructions

from . import distributed
from .policy import Completion


@dataclass
class Batch:
    """One iteration's samples, both roles: what an agent's ``update`` consumes. ``groups[b]`` is the round (0..N−1)
    of the sample's query; ``rewards`` are the env's (KL shaping in the reward is the agent's, before advantages)."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    roles: torch.Tensor
    rewards: torch.Tensor
    groups: torch.Tensor
    texts: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompt_ids)


def play_iteration(envs, agent, seed: int | None = None, query_attempts: int = 1) -> Batch:
    """Reset every sub-env, let ``agent.act`` play both roles, and build the batch from the rounds' records
    (``info["round"]``, :class:`lsp_env.RoundResult`): the challenger's sample is paid the round's payoff, the
    solver's j-th answer its reward r_j. ``query_attempts`` k > 1: the challenger writes k queries per round in one
    call; a round whose query was invalid is reset to its challenger prompt (a sub-env given the action None sits a
    step out) and given the next, up to k in all, each a challenger sample (paid the penalty if invalid; unread ones
    are dropped): the solver answers more valid queries (DAPO's over-sampling), and the update runs a prompt once."""
    num_generations = envs.num_generations  # G: the env's setting, the one owner
    timings = {"generate": 0.0}
    start = time.perf_counter()
    obs, info = envs.reset(seed=seed)
    num_envs = envs.num_envs
    chats = list(info["messages"])  # each sub-env's next turn
    written: list[tuple[int, Completion, RoundResult | None]] = []  # (round, query, its record if invalid)
    asking = np.full(num_envs, (obs["role"] == Role.CHALLENGER).all())  # the rounds still without a valid query
    if asking.any() and query_attempts > 1 and seed is None:
        raise ValueError("query_attempts > 1 needs a seed: a round asked again is reset from it, to the same prompt")
    t = time.perf_counter()
    # k queries per round in one call, samples of its prompt; the j-th is read only if the j - 1 before were invalid
    drafts = agent.act([chat for chat in chats for _ in range(query_attempts)]) if asking.any() else []
    timings["generate"] += time.perf_counter() - t
    for attempt in range(query_attempts if asking.any() else 0):
        if attempt:  # the rounds whose query was invalid start again from the same seed: the same challenger prompt
            envs.reset(seed=seed, options={"reset_mask": asking})
        queries = {i: drafts[i * query_attempts + attempt] for i in np.flatnonzero(asking).tolist()}
        _, _, terminated, _, info = envs.step([queries[i].text if i in queries else None for i in range(num_envs)])
        for i, c in queries.items():  # an invalid query ends its round at once
            written.append((i, c, info["round"][i] if terminated[i] else None))
            chats[i] = None if terminated[i] else info["messages"][i]
        asking &= terminated
        if not asking.any():
            break
    rows = np.flatnonzero(~asking).tolist()  # the rounds with a valid query
    t = time.perf_counter()
    answers = agent.act([chats[i] for i in rows for _ in range(num_generations)]) if rows else []
    timings["generate"] += time.perf_counter() - t
    t = time.perf_counter()
    for j in range(num_generations):
        by_env = dict(zip(rows, answers[j::num_generations]))
        _, _, terminated, _, info = envs.step([by_env[i].text if i in by_env else "" for i in range(num_envs)])
    rounds: dict[int, RoundResult] = {i: info["round"][i] for i in rows}  # sub-env -> its finished round
    # instruction following: what the valid queries asked for, the challenger's mix (every rank, even with none)
    asked = ([[inst["id"] for inst in info["instructions"][i]] for i in rows]
             if isinstance(envs.task, InstructionsTask) else None)
    timings["score"] = time.perf_counter() - t
    # (completion, role, round, reward): the challenger rows first, then the solver rows, round by round
    samples = [(c, Role.CHALLENGER, i, (record or rounds[i]).payoff) for i, c, record in written]
    samples += [(answers[k * num_generations + j], Role.SOLVER, i, rounds[i].rewards[j])
                for k, i in enumerate(rows) for j in range(num_generations)]
    judges = [hook for hook in (envs.reward_fn, envs.quality_fn) if isinstance(hook, LLMJudge)]
    hacking = None
    if judges:  # the reward-hacking monitor, for runs graded by an LLM judge
        t = time.perf_counter()
        hacking = hacking_counts(judges, [rounds[i].query for i in rows for _ in range(num_generations)],
                                 [a.text for a in answers], [c.text for _, c, _ in written])
        timings["monitor"] = time.perf_counter() - t
    done = [c for c, *_ in samples]
    batch = Batch(prompt_ids=[c.prompt_ids for c in done], completion_ids=[c.completion_ids for c in done],
                  roles=torch.tensor([int(role) for _, role, *_ in samples], dtype=torch.long),
                  rewards=torch.tensor([reward for *_, reward in samples], dtype=torch.float32),
                  groups=torch.tensor([i for _, _, i, _ in samples], dtype=torch.long), texts=[c.text for c in done])
    invalid = sum(record is not None for *_, record in written)
    batch.metrics = _round_metrics(batch, invalid, len(written) or num_envs, [rounds[i].value for i in rows], timings,
                                   time.perf_counter() - start)
    if hacking is not None:
        batch.metrics.update(hacking_metrics(distributed.sum_across(hacking)))
    if asked is not None:
        batch.metrics.update(instructions.request_mix(sum(distributed.gather_objects(asked), [])))
    return batch


def _round_metrics(batch: Batch, invalid: int, num_queries: int, group_values: list[float], timings: dict,
                   seconds: float) -> dict:
    """The round's metrics over the GLOBAL batch (every rank's rows, gathered); timings are this rank's."""
    metrics = {**{f"time/{k}": v for k, v in timings.items()}, "time/rollout": seconds}
    lengths = torch.tensor([len(c) for c in batch.completion_ids], dtype=torch.long)
    (roles, rewards, lengths), _ = distributed.gather_rows(batch.roles, batch.rewards, lengths)
    invalid, num_queries = distributed.sum_across([invalid, num_queries])
    group_values = [v for values in distributed.gather_objects(group_values) for v in values]
    for role in Role:
        pick, name = roles == role, role.key
        if pick.any():
            metrics[f"reward/{name}"] = float(rewards[pick].mean())
            metrics[f"tokens/{name}"] = int(lengths[pick].sum())
    metrics["invalid_query_rate"] = invalid / num_queries  # of the queries written
    metrics["valid_queries"] = len(group_values)
    metrics["tokens/generated"] = int(lengths.sum())
    if group_values:  # V(q): the raw reward's group mean (the solve rate of the queries, for a 0/1 reward)
        metrics["group_value"] = sum(group_values) / len(group_values)
    return metrics
