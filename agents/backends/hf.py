"""Generation with Hugging Face ``generate``: the default backend, runs wherever torch does."""

from __future__ import annotations

import copy
from contextlib import nullcontext

import torch

from lsp_env.tokens import cut_at_stop, distinct_prompts, pad_left, sampling_processors, stop_token_ids


class HFBackend:
    """Batched sampling with ``model.generate``, from prompt token ids to completion token ids.

    It samples from the policy's own module (nothing to sync after an update), or with ``generation_dtype`` (e.g.
    bf16) from a copy in that dtype that :meth:`sync_weights` refreshes after every update; a peft (LoRA) model
    samples from itself under ``autocast_dtype``. A prompt repeated in the batch (a GRPO group) is prefilled once.
    """

    name = "hf"

    def __init__(self, model, tokenizer, autocast_dtype: torch.dtype | None = None,
                 generation_dtype: torch.dtype | None = None, batch_size: int = 64):
        self.tokenizer = tokenizer
        self.trained = model
        self.autocast_dtype = autocast_dtype
        self.batch_size = batch_size
        separate = (generation_dtype is not None and generation_dtype != model.dtype
                    and not hasattr(model, "peft_config"))
        self.model = copy.deepcopy(model).to(generation_dtype).eval().requires_grad_(False) if separate else model
        if separate:
            self.autocast_dtype = None
        self.stop_ids = stop_token_ids(model.generation_config, tokenizer)

    @torch.no_grad()
    def sync_weights(self) -> None:
        """Copy the trained weights into the generation copy (nothing to do when generating from the trained module)."""
        if self.model is not self.trained:
            for engine_param, param in zip(self.model.parameters(), self.trained.parameters(), strict=True):
                engine_param.copy_(param)

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 top_k: int = 0, do_sample: bool = True) -> list[list[int]]:
        """Completion ids per prompt, cut after the first stop token (kept: the policy learns to stop)."""
        completions: list[list[int]] = []
        sampling = (dict(do_sample=False, logits_processor=sampling_processors(temperature, top_p, top_k)) if do_sample
                    else dict(do_sample=False))  # HF's warpers, then one uniform draw per row (InverseCDFSampler)
        autocast = (torch.autocast(self.model.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                    else nullcontext())
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start:start + self.batch_size]
                ids, mask, positions = pad_left(chunk, self.tokenizer.pad_token_id)
                with autocast:
                    cache = self._shared_prefill(chunk, ids, mask, positions)
                    out = self.model.generate(input_ids=ids.to(self.model.device),
                                              attention_mask=mask.to(self.model.device), max_new_tokens=max_new_tokens,
                                              pad_token_id=self.tokenizer.pad_token_id,
                                              eos_token_id=sorted(self.stop_ids), past_key_values=cache, **sampling)
                for row in out[:, ids.shape[1]:].tolist():
                    completions.append(cut_at_stop(row, self.stop_ids))
        finally:
            self.model.train(was_training)
        return completions

    def _shared_prefill(self, prompts, ids, mask, positions):
        """When prompts repeat (a GRPO group), prefill each distinct one once and give every row its prompt's cache
        (all but the last token, which ``generate`` runs to get the first logits); ``None`` when nothing repeats."""
        first_rows, owner = distinct_prompts(prompts)
        if len(first_rows) == len(prompts) or min(len(p) for p in prompts) < 2:
            return None
        first_row = torch.as_tensor(first_rows)
        device = self.model.device
        cache = self.model(input_ids=ids[first_row, :-1].to(device), attention_mask=mask[first_row, :-1].to(device),
                           position_ids=positions[first_row, :-1].to(device), use_cache=True,
                           logits_to_keep=1).past_key_values
        cache.reorder_cache(torch.as_tensor(owner, device=device))
        return cache
