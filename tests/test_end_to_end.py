"""End-to-end on the embedded SmolLM2-135M (minutes, marked slow; `make test` runs them after the fast suite)."""

import json
import math

import gymnasium
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import lsp_env  # noqa: F401
from agents.train import main as train_main

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("env_id", ["LSP-v0", "LSP-Zero-v0", "LSP-Arith-v0"])
def test_env_contract_on_the_embedded_model(env_id):
    env = gymnasium.make(env_id, num_generations=2)
    check_env(env.unwrapped)
    obs, info = env.reset(seed=0)
    query = "What is 12 + 30?" if env_id == "LSP-Arith-v0" else "Why did the Roman Republic fall?"
    obs, _, terminated, _, info = env.step(query)
    assert obs["role"] == 1 and not terminated
    env.step("42")
    _, _, terminated, _, info = env.step("The answer is 42.")
    rewards = info["rewards"]
    assert terminated and len(rewards["solver"]) == 2 and all(math.isfinite(r) for r in rewards["solver"])
    if env_id == "LSP-Arith-v0":
        assert rewards["solver"] == [1.0, 1.0] and rewards["challenger"] == -1.0
    if env_id == "LSP-Zero-v0":
        assert rewards["challenger"] == pytest.approx(-sum(rewards["solver"]) / 2)
        assert all(0.0 <= r <= 1.0 for r in rewards["solver"])


def test_lsp_train_on_the_embedded_model(tmp_path):
    train_main(["--env", "LSP-Zero-v0", "--agent", "grpo", "--iterations", "1", "--num-queries", "2",
                "--num-generations", "2", "--max-completion-length", "24", "--beta", "0.04",
                "--output-dir", str(tmp_path)])
    (line,) = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(line["loss/solver"]) and line["tokens/generated"] > 0 and line["trained_samples"] > 0
    assert line["kl/solver"] >= 0 and line["grad_norm"] > 0  # k3 >= 0; beta > 0 puts every sample in the loss
    assert 0 <= line["hacking/number_ending"] <= 1 and "hacking/suffix_sensitivity" in line  # a judge-rewarded run
    # the checkpoint holds the updated weights: they load, and they moved away from the embedded model's
    from safetensors.torch import load_file

    from lsp_env.models import embedded_dir

    trained, base = (load_file(tmp_path / "checkpoint-1" / "model.safetensors"),
                     load_file(embedded_dir() / "model.safetensors"))
    assert trained.keys() == base.keys() and any(not torch.equal(trained[k], base[k]) for k in base)
