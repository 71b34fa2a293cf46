"""The model cache: built once by one process, complete or rebuilt, a clear error where it cannot be written."""

import logging
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lsp_env import models


def write_tiny(directory: Path, tokenizer) -> None:
    model = models.tiny_random_model(tokenizer)
    models.write_model_dir(directory, model.config, model.generation_config, tokenizer, model.state_dict())


@pytest.fixture
def tiny_builder(tiny_tokenizer):
    return lambda directory: write_tiny(directory, tiny_tokenizer)


def test_a_written_model_dir_is_complete_and_loads(tmp_path, tiny_builder, tiny_pair):
    tiny_builder(tmp_path)
    assert models.model_dir_complete(tmp_path)
    model, _ = models.load_model(str(tmp_path))
    ids = torch.tensor([[1, 2, 3]])
    assert torch.allclose(model(ids).logits, tiny_pair[0](ids).logits)


@pytest.mark.parametrize("damage", ["weights removed", "weights truncated", "tokenizer only", "config not json"])
def test_a_broken_cache_is_rebuilt_with_one_log_line(tmp_path, tiny_builder, damage, caplog):
    target = tmp_path / "model"
    models.build_cached(target, tiny_builder)
    weights = target / "model.safetensors"
    if damage == "weights removed":
        weights.unlink()
    elif damage == "weights truncated":
        os.truncate(weights, weights.stat().st_size - 1)
    elif damage == "tokenizer only":
        for f in target.iterdir():
            if not f.name.startswith("tokenizer"):
                f.unlink()
    else:
        (target / "config.json").write_text("{")
    assert not models.model_dir_complete(target)
    with caplog.at_level(logging.WARNING, logger="lsp_env.models"):
        models.build_cached(target, tiny_builder)
    assert models.model_dir_complete(target)
    assert [r.message for r in caplog.records if "rebuilding" in r.message] == [
        f"the cached {target} is incomplete or corrupt: rebuilding it"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_a_complete_cache_is_not_rebuilt_and_a_killed_builds_leftover_is_removed(tmp_path, tiny_builder):
    target = tmp_path / "model"
    (tmp_path / ".tmp-model-abc").mkdir()  # a build that was killed half-way
    models.build_cached(target, tiny_builder)
    assert not (tmp_path / ".tmp-model-abc").exists()
    stamp = (target / "model.safetensors").stat().st_mtime_ns
    models.build_cached(target, lambda d: pytest.fail("a complete cache was rebuilt"))
    assert (target / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_build_that_fails_or_is_incomplete_replaces_nothing(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError, match="incomplete copy"):
        models.build_cached(target, lambda d: (d / "config.json").write_text("{}"))
    assert not target.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def _count_builds(target: str, counter: str) -> None:
    def build(directory: Path) -> None:
        with open(counter, "a") as f:
            f.write("built\n")
        write_tiny(directory, models.load_tokenizer("tiny-random"))

    models.build_cached(Path(target), build)
    assert models.model_dir_complete(Path(target))


def test_concurrent_processes_build_once(tmp_path, tiny_tokenizer):
    target, counter = tmp_path / "model", tmp_path / "builds.txt"
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_count_builds, args=(str(target), str(counter))) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert counter.read_text() == "built\n"


def test_an_unwritable_cache_location_names_lsp_cache_dir(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("LSP_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(OSError, match="LSP_CACHE_DIR"):
        models.embedded_dir()


LOADER = textwrap.dedent("""
    import os, sys
    rank, port = int(sys.argv[1]), sys.argv[2]
    if rank >= 0:
        import torch.distributed as dist
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        dist.init_process_group("gloo", rank=rank, world_size=2)
    from lsp_env.models import load_model
    model, tokenizer = load_model("embedded")
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
""")


def test_two_ranks_loading_the_embedded_model_from_an_empty_cache_both_get_it(tmp_path):
    """The fresh-machine failure: rank 1 of a gloo group used to write a tokenizer-only cache (``save_pretrained``
    writes weights on rank 0 only) and rename it into place first."""
    env = {**os.environ, "LSP_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    port = str(29500 + os.getpid() % 400)
    script = tmp_path / "load.py"
    script.write_text(LOADER)
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), port], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in (1, 0)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert models.model_dir_complete(tmp_path / "cache" / "smollm2-135m-instruct")
