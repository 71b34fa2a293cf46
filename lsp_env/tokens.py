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
