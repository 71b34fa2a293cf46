"""The shared LLM policy: one model that plays both roles, its frozen reference, generation and log-probs."""

from __future__ import annotations

import copy
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from lsp_env import models
from lsp_env.prompts import render_chat
from lsp_env.tokens import distinct_prompts, pad_left

from .backends import make_backend
from .perf import FlopCounter

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Completion:
    """One generated completion: the text the env receives, and the tokens the update trains on."""

    text: str
    prompt_ids: list[int]
    completion_ids: list[int]


class Policy:
    """One causal LM for both roles.

    Args:
        model: a name (``"embedded"``, ``"tiny-random"``, a hub id, a local directory or an ``lsp-train`` checkpoint).
        lora: train LoRA adapters (peft) instead of all weights. The reference is then the same model with the
            adapters disabled, so the base weights are held once; full fine-tuning keeps a frozen copy instead.
        lora_r, lora_alpha, lora_target_modules: the LoRA shape (peft's names).
        bf16: bf16 autocast for log-probs and the update (fp32 master weights), a bf16 copy of the weights for
            generation (synced after each update), the frozen reference's Linears stored in bf16
            (:func:`lsp_env.models.store_linears_in`); use where the hardware has fast bf16 (``bf16_supported``).
        backend: generation backend name (``"hf"`` or ``"vllm"``); ``backend_kwargs`` go to it (vLLM's KV-cache
            budget: :class:`agents.backends.vllm.VLLMBackend`).
        device: where the model lives; default the current CUDA device (under ``accelerate launch``, each rank's
            own), else the CPU. Log-probs come back on the CPU, where the loss's per-token arithmetic runs.
    """

    def __init__(self, model: str = "embedded", lora: bool = False, lora_r: int = 16, lora_alpha: int = 32,
                 lora_target_modules: tuple[str, ...] = LORA_TARGETS, bf16: bool = False, backend: str = "hf",
                 device: str | torch.device | None = None, **backend_kwargs):
        if device is None:
            device = (torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available()
                      else torch.device("cpu"))
        self.model, self.tokenizer = models.load_model(model)
        self.model.to(device)
        self.lora, self.autocast_dtype = lora, torch.bfloat16 if bf16 else None
        if lora:
            from peft import LoraConfig, get_peft_model

            present = {name.rsplit(".", 1)[-1] for name, _ in self.model.named_modules()}
            targets = [t for t in lora_target_modules if t in present]
            if not targets:
                raise ValueError(f"--lora: the model has none of the target modules {list(lora_target_modules)}; "
                                 f"pass --lora-target-modules with names from its layers, or train without --lora")
            config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, target_modules=targets, lora_dropout=0.0,
                                task_type="CAUSAL_LM")
            self.model = get_peft_model(self.model, config)
        # full fine-tuning: freeze a copy now, before any update can touch the weights it must keep
        self._frozen_reference = None if lora else copy.deepcopy(self.model).eval().requires_grad_(False)
        if self._frozen_reference is not None and bf16:  # half the memory, the same log-probs under autocast
            models.store_linears_in(self._frozen_reference, torch.bfloat16)
        models.lean_training(self.model)  # fewer activations saved for the update (after peft: LoRA layers keep theirs)
        self.model.train()
        self.backend = make_backend(backend, self.model, self.tokenizer, autocast_dtype=self.autocast_dtype,
                                    generation_dtype=self.autocast_dtype, **backend_kwargs)
        self.flops = FlopCounter.for_model(self.model)  # the useful work done, for perf/mfu

    # ---- the reference --------------------------------------------------------------------------------------
    @property
    def reference(self):
        """The frozen reference module: the LoRA model itself (used under :meth:`reference_mode`) or a frozen copy."""
        return self.model if self.lora else self._frozen_reference

    def reference_pair(self):
        """``(reference, tokenizer)`` for the env's hooks (judge, self-quality): the run holds the base weights once."""
        return self.reference, self.tokenizer

    # ---- generation -----------------------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return render_chat(self.tokenizer, messages)

    def generate(self, chats: list[list[dict]], max_new_tokens: int = 64, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, do_sample: bool = True) -> list[Completion]:
        prompts = [self.prompt_ids(chat) for chat in chats]
        models.release_freed_memory()  # the last update's activations and gradients: not resident while generating
        outputs = self.backend.generate(prompts, max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                                        do_sample=do_sample)
        self.flops.sequences("generate", prompts, outputs)
        return [Completion(self.tokenizer.decode(out, skip_special_tokens=True), prompt, out)
                for prompt, out in zip(prompts, outputs)]

    # ---- log-probs ------------------------------------------------------------------------------------------
    def autocast(self):
        return (torch.autocast(self.model.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                else nullcontext())

    def completion_logps(self, prompts: list[list[int]], completions: list[list[int]], reference: bool = False,
                         temperature: float = 1.0):
        """Per-token log-probs of the completions under ``softmax(logits / temperature)``: ``(logps, mask)``, both
        ``(B, max completion length)``. Pass the sampling temperature, so that the policy's, old policy's and
        reference's (``reference=True``, under ``inference_mode``) log-probs are those of the distribution the
        completions were drawn from (TRL's convention; top-p / top-k truncation left out, as in TRL).

        Rows that share a prompt (a GRPO group) run it through the model once; its keys and values are gathered to
        every row (differentiably: the group's gradients sum into the one prompt pass), so log-probs and gradients
        equal separate passes up to float summation order. Only completion positions reach the LM head.
        """
        rows, width = len(prompts), max(len(c) for c in completions)
        targets = torch.full((rows, width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((rows, width))
        for r, c in enumerate(completions):
            targets[r, :len(c)] = torch.as_tensor(c, dtype=torch.long)
            mask[r, :len(c)] = 1
        first_rows, owner = distinct_prompts(prompts)
        models.release_freed_memory()  # what generation or the last pass freed: the forward starts from less
        self.flops.sequences("train" if torch.is_grad_enabled() and not reference else "logps", prompts, completions)
        module = self.reference if reference else self.model
        grad = torch.inference_mode() if reference else nullcontext()
        reference_mode = models.reference_mode(module) if reference else nullcontext()
        with grad, reference_mode, self.autocast():
            decoder, head = models.decoder_and_head(module)  # the LM head runs inside token_logps, in chunks
            features = self._completion_features(decoder, head is None, [prompts[r] for r in first_rows],
                                                  torch.as_tensor(owner), targets[:, :-1], mask[:, :-1])
            logps = models.token_logps(features, head, targets.to(features.device), temperature)
        models.release_freed_memory()  # the forward's temporaries: not resident under the backward's gradients
        return logps.cpu(), mask

    def _completion_features(self, module, logits, prompts, owner, inputs, input_mask):
        """The decoder's last hidden states (or the model's ``logits``) before each completion token: the prompts'
        last positions (one pass per distinct prompt), then the completion tokens on top of their prompt's cache."""
        device = module.device
        ids, prompt_mask, positions = pad_left(prompts, self.tokenizer.pad_token_id)
        out = module(input_ids=ids.to(device), attention_mask=prompt_mask.to(device), position_ids=positions.to(device),
                     use_cache=True, **({"logits_to_keep": 1} if logits else {}))
        first = out[0][owner.to(device), -1:]                         # (B, 1, H or V): predicts completion token 0
        if inputs.shape[1] == 0:
            return first
        cache = out.past_key_values
        cache.reorder_cache(owner.to(device))     # row r gets its prompt's keys and values (index_select: grads sum)
        attention = torch.cat([prompt_mask[owner], input_mask.long()], dim=1)
        positions = prompt_mask.sum(-1)[owner, None] + torch.arange(inputs.shape[1])
        rest = module(input_ids=inputs.to(device), attention_mask=attention.to(device),  # (B, width - 1, H or V)
                      position_ids=positions.to(device), past_key_values=cache, use_cache=True)[0]
        return torch.cat([first, rest], dim=1)

    # ---- save / load ----------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        """An HF model directory (or peft adapters with LoRA) that ``--model`` and ``from_pretrained`` accept."""
        if self.lora:
            self.model.save_pretrained(directory)
            self.tokenizer.save_pretrained(directory)
        else:
            models.save_plain(self.model, self.tokenizer, directory)

    def load_weights(self, directory: str | os.PathLike) -> None:
        """Load trained weights saved by :meth:`save` into this policy (the reference stays the base model)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        if self.lora:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, load_file(directory / "adapter_model.safetensors"))
        else:
            state = load_file(directory / "model.safetensors")
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            if unexpected or any(not k.endswith("lm_head.weight") for k in missing):
                raise ValueError(f"checkpoint {directory} does not match the model: missing {missing}, "
                                 f"unexpected {unexpected}")
        self.backend.sync_weights()
