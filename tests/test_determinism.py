"""Determinism on the tiny model: the same seed reproduces a run exactly (texts, rewards, metrics, trained weights);
another seed gives another run."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from agents.rollout import play_iteration
from agents.train import build, parse_args
from agents.train import main as train_main

TINY = ["--model", "tiny-random", "--num-queries", "2", "--num-generations", "2", "--max-completion-length", "8"]
DETERMINISTIC = ("reward/challenger", "reward/solver", "loss/challenger", "loss/solver", "kl/challenger", "kl/solver",
                 "advantage/abs_mean", "tokens/generated", "tokens/challenger", "tokens/solver", "invalid_query_rate",
                 "group_value", "trained_samples", "grad_norm", "clip_ratio")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def read_metrics(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def deterministic(line):
    """A metrics line without its timings."""
    return {k: line.get(k) for k in DETERMINISTIC}


def test_same_seed_trains_to_identical_metrics_and_weights(tmp_path, tiny_pair):
    argv = ["--env", "LSP-Zero-v0", *TINY, "--reward", "length", "--beta", "0.05", "--learning-rate", "1e-3",
            "--seed", "7", "--iterations", "2"]
    for run in ("a", "b"):
        train_main([*argv, "--output-dir", str(tmp_path / run)])
    a, b = read_metrics(tmp_path / "a/metrics.jsonl"), read_metrics(tmp_path / "b/metrics.jsonl")
    assert [line["step"] for line in a] == [line["step"] for line in b] == [1, 2]
    assert all(line["kl/solver"] >= 0 for line in a)  # the KL term was live, so the reference forward is covered
    assert [deterministic(line) for line in a] == [deterministic(line) for line in b]

    wa = load_file(tmp_path / "a/checkpoint-2/model.safetensors")
    wb = load_file(tmp_path / "b/checkpoint-2/model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[name], wb[name]) for name in wa)
    initial = tiny_pair[0].state_dict()
    assert any(not torch.equal(wa[name], initial[name]) for name in wa)  # the runs did train


def rollout(env_id: str, seed: int, *flags: str):
    """One iteration of play from a fresh build (policy, envs, agent), as ``lsp-train --seed`` would start it."""
    cfg, agent_cfg = parse_args(["--env", env_id, *TINY, "--num-queries", "3", "--seed", str(seed),
                                 "--output-dir", "never-written", *flags])
    _, envs, agent = build(cfg, agent_cfg)
    return play_iteration(envs, agent, seed=seed)


# LSP-Zero-v0 with its default LLM judge; LSP-Arith-v0, whose challenger prompt (few-shot examples) follows the env seed
@pytest.mark.parametrize("env_id", ["LSP-Zero-v0", "LSP-Arith-v0"])
def test_same_seed_plays_the_same_iteration_and_another_seed_does_not(env_id):
    first, again, other = rollout(env_id, 0), rollout(env_id, 0), rollout(env_id, 1)

    assert len(first.texts) == len(first) > 0
    assert first.texts == again.texts  # the challenger's queries and the solver's answers
    assert torch.equal(first.rewards, again.rewards)
    assert first.prompt_ids == again.prompt_ids and first.completion_ids == again.completion_ids
    assert torch.equal(first.roles, again.roles) and torch.equal(first.groups, again.groups)
    stable = {k: v for k, v in first.metrics.items() if not k.startswith("time/")}
    assert stable == {k: v for k, v in again.metrics.items() if not k.startswith("time/")}

    assert first.texts != other.texts
    if env_id == "LSP-Arith-v0":  # the challenger's few-shot examples follow the env seed
        assert first.prompt_ids[0] != other.prompt_ids[0]
    else:  # the judge's grades of other texts are other floats
        assert not torch.equal(first.rewards, other.rewards)


def test_shared_challenger_prompt_gives_an_iterations_challenger_rows_one_prompt_and_stays_seeded():
    def challenger_prompts(batch):
        return [tuple(p) for p, role in zip(batch.prompt_ids, batch.roles.tolist()) if role == 0]

    shared = rollout("LSP-Arith-v0", 0, "--shared-challenger-prompt")
    assert len(challenger_prompts(shared)) == 3 and len(set(challenger_prompts(shared))) == 1
    assert challenger_prompts(shared) == challenger_prompts(rollout("LSP-Arith-v0", 0, "--shared-challenger-prompt"))
    assert challenger_prompts(shared) != challenger_prompts(rollout("LSP-Arith-v0", 1, "--shared-challenger-prompt"))
    assert len(set(challenger_prompts(rollout("LSP-Arith-v0", 0)))) == 3  # default: a prompt per round
