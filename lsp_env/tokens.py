"""Token-id helpers shared by the policy, the generation backends and the judge."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int):
    """Left-pad token id lists -> (input_ids, attention_mask, position_ids) for one batched forward."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def distinct_prompts(prompts: list[list[int]]) -> tuple[list[int], list[int]]:
    """``(first_rows, owner)``: the first row of each distinct prompt, and each row's distinct-prompt index."""
    index: dict[tuple[int, ...], int] = {}
    first_rows, owner = [], []
    for row, prompt in enumerate(prompts):
        k = index.setdefault(tuple(prompt), len(index))
        if k == len(first_rows):
            first_rows.append(row)
        owner.append(k)
    return first_rows, owner


def stop_token_ids(generation_config, tokenizer) -> set[int]:
    """The ids that end a completion: the generation config's eos id(s) and the tokenizer's (every backend's)."""
    eos = generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    ids.discard(None)
    return ids


def cut_at_stop(ids: list[int], stop_ids: set[int]) -> list[int]:
    """``ids`` up to and including the first stop id (all of them when there is none)."""
    for k, token in enumerate(ids):
        if token in stop_ids:
            return ids[:k + 1]
    return ids


class InverseCDFSampler:
    """A logits processor that samples the next token from ``softmax(scores)`` by inverse transform: one uniform
    number per row against the cumulative probabilities, where ``torch.multinomial`` draws an exponential for every
    vocabulary entry (most of a small model's decode step on a CPU). It leaves only the drawn token finite, so a
    greedy ``generate`` takes it: the same distribution, from torch's global RNG (seeded runs repeat)."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        cdf = scores.float().softmax(-1).cumsum(-1)
        u = torch.rand(scores.shape[0], 1, device=scores.device) * cdf[:, -1:]
        # the first entry whose cumulative probability exceeds u: never a zero-probability (masked) one
        token = torch.searchsorted(cdf, u, right=True).clamp_(max=scores.shape[-1] - 1)
        return torch.full_like(scores, -torch.inf).scatter_(1, token, 0.0)


def sampling_processors(temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0):
    """HF ``generate``'s sampling (temperature, then top-k, then top-p, as its own warpers run) as logits processors
    ending in :class:`InverseCDFSampler`, for a ``generate(do_sample=False, logits_processor=...)`` call."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers = ([TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []) + (
        [TopKLogitsWarper(top_k)] if top_k > 0 else []) + ([TopPLogitsWarper(top_p)] if top_p < 1.0 else [])
    return LogitsProcessorList([*warpers, InverseCDFSampler()])
