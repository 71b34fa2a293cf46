"""Crash safety of ``lsp-train``: a run killed while it writes a checkpoint resumes exactly, and a non-finite reward
stops a run before it can touch the weights or the last good checkpoint."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from agents.train import build, parse_args, train
from agents.train import main as train_main

ROOT = Path(__file__).resolve().parent.parent
RUN = ["--model", "tiny-random", "--env", "LSP-Arith-Data-v0", "--reward", "length", "--num-queries", "2",
       "--num-generations", "2", "--max-completion-length", "8", "--save-every", "1", "--seed", "0",
       "--learning-rate", "1e-3"]
CHECKPOINT_FILES = ("model.safetensors", "agent.pt", "rng.pt", "trainer_state.json")
DETERMINISTIC = ("reward/solver", "loss/solver", "kl/solver", "advantage/abs_mean", "tokens/generated", "grad_norm")
TEMP = re.compile(r"\.tmp-checkpoint-(\d+)-")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def read_metrics(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def deterministic(line):
    return {k: line.get(k) for k in DETERMINISTIC}


def assert_complete(checkpoint: Path):
    """Every file a resume reads is there and loads, and the step inside matches the directory's name."""
    assert all((checkpoint / name).is_file() for name in CHECKPOINT_FILES), sorted(os.listdir(checkpoint))
    assert load_file(checkpoint / "model.safetensors")
    assert "optimizer" in torch.load(checkpoint / "agent.pt", weights_only=False)
    assert set(torch.load(checkpoint / "rng.pt", weights_only=False)) == {"python", "numpy", "torch"}
    step = json.loads((checkpoint / "trainer_state.json").read_text())["step"]
    assert checkpoint.name == f"checkpoint-{step}"
    return step


def kill_while_writing_a_checkpoint(out: Path, holding: str, min_step: int = 3, timeout: float = 300.0) -> int:
    """Start a long training run; SIGKILL its process group once a checkpoint temp dir (step >= ``min_step``) exists
    and holds the file ``holding`` (``""``: as soon as the dir exists). Returns that checkpoint's step.

    ``save_checkpoint`` spends ~100 ms filling the temp dir (config, model.safetensors, tokenizer, agent.pt, rng.pt,
    trainer_state.json, in that order) before the rename; polling every millisecond lands inside that window.
    """
    out.mkdir()
    log_path = out.parent / f"killed-run{holding}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agents.train", *RUN, "--iterations", "50", "--output-dir", str(out)],
            cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill reaches everything it started
        )
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                for name in os.listdir(out):
                    m = TEMP.match(name)
                    if m and int(m.group(1)) >= min_step and (not holding or os.path.exists(out / name / holding)):
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                        return int(m.group(1))
                time.sleep(0.001)
            pytest.fail(f"no temp checkpoint >= {min_step} holding {holding!r} seen (exit code {proc.poll()}):\n"
                        + log_path.read_text()[-3000:])
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


_STRAIGHT: dict = {}


def straight_run(k: int, tmp_path_factory) -> Path:
    """An uninterrupted run of ``k`` iterations with the same flags (made once per ``k`` for the module)."""
    if k not in _STRAIGHT:
        out = tmp_path_factory.mktemp(f"straight-{k}")
        train_main([*RUN, "--iterations", str(k), "--output-dir", str(out)])
        _STRAIGHT[k] = out
    return _STRAIGHT[k]


# kill points inside save_checkpoint: the temp dir just made, then holding the weights, the optimizer, the RNG
@pytest.mark.parametrize("holding", ["", "model.safetensors", "agent.pt", "rng.pt"])
def test_sigkill_during_a_checkpoint_write_keeps_latest_complete_and_resume_exact(tmp_path, tmp_path_factory, holding):
    out = tmp_path / "killed"
    writing = kill_while_writing_a_checkpoint(out, holding)

    # the pointer names a complete checkpoint: the one before, or (killed after the rename) the one written
    latest = (out / "latest").read_text()
    assert TEMP.match(latest) is None and not latest.startswith(".")
    k = assert_complete(out / latest)
    assert k in (writing - 1, writing)
    # no checkpoint directory is half-written: each one came from the rename of a finished temp dir
    checkpoints = [p for p in out.iterdir() if p.name.startswith("checkpoint-")]
    assert sorted(assert_complete(p) for p in checkpoints) == list(range(1, len(checkpoints) + 1))
    assert len(checkpoints) in (k, k + 1)
    # the killed run logged iteration `writing` before saving it: the metrics run ahead of `latest`
    assert [line["step"] for line in read_metrics(out / "metrics.jsonl")] == list(range(1, writing + 1))

    train_main([*RUN, "--iterations", str(k + 1), "--output-dir", str(out), "--resume"])

    straight = straight_run(k + 1, tmp_path_factory)
    resumed = read_metrics(out / "metrics.jsonl")
    assert [line["step"] for line in resumed] == list(range(1, k + 2))  # the lines after `latest` were dropped
    assert [deterministic(a) for a in resumed] == [deterministic(b) for b in read_metrics(straight / "metrics.jsonl")]
    assert (out / "latest").read_text() == f"checkpoint-{k + 1}"
    assert_complete(out / f"checkpoint-{k + 1}")
    a = load_file(out / f"checkpoint-{k + 1}/model.safetensors")
    b = load_file(straight / f"checkpoint-{k + 1}/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def digest(directory: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def swap_reward(envs, hook):
    """Replace the reward hook of the vector env (and so of every sub-env)."""
    envs.reward_fn = hook


def count_optimizer_steps(agent) -> list:
    steps, step = [], agent.optimizer.step
    agent.optimizer.step = lambda *a, **kw: (steps.append(1), step(*a, **kw))[1]
    return steps


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_reward_stops_the_run_before_any_update_and_keeps_the_last_checkpoint(tmp_path, bad):
    args = [*RUN, "--output-dir", str(tmp_path)]
    train_main([*args, "--iterations", "1"])
    assert (tmp_path / "latest").read_text() == "checkpoint-1"
    saved = digest(tmp_path / "checkpoint-1")

    cfg, agent_cfg = parse_args([*args, "--iterations", "3", "--resume"])
    _, envs, agent = build(cfg, agent_cfg)
    swap_reward(envs, lambda queries, answers: [bad] * len(answers))
    optimizer_steps = count_optimizer_steps(agent)
    with pytest.raises(ValueError, match="non-finite"):
        train(agent, envs, cfg)

    assert optimizer_steps == []
    on_disk = load_file(tmp_path / "checkpoint-1/model.safetensors")
    trained = agent.policy.model.state_dict()
    assert all(torch.equal(trained[name], on_disk[name]) for name in on_disk)  # resumed weights, untouched
    assert (tmp_path / "latest").read_text() == "checkpoint-1"
    assert digest(tmp_path / "checkpoint-1") == saved
    assert sorted(p.name for p in tmp_path.iterdir() if "checkpoint-" in p.name) == ["checkpoint-1"]
    assert [line["step"] for line in read_metrics(tmp_path / "metrics.jsonl")] == [1]


def test_non_finite_reward_on_a_fresh_run_leaves_nothing_behind(tmp_path):
    args = [*RUN, "--output-dir", str(tmp_path), "--iterations", "1"]
    cfg, agent_cfg = parse_args(args)
    _, envs, agent = build(cfg, agent_cfg)
    swap_reward(envs, lambda queries, answers: [float("nan")] * len(answers))
    optimizer_steps = count_optimizer_steps(agent)
    with pytest.raises(ValueError, match="non-finite"):
        train(agent, envs, cfg)
    assert optimizer_steps == []
    assert not (tmp_path / "latest").exists() and not list(tmp_path.glob("*checkpoint-*"))
    assert not (tmp_path / "metrics.jsonl").exists() or not (tmp_path / "metrics.jsonl").read_text()
    train_main(args)  # the same dir takes a fresh run (no "pass --resume" refusal)
    assert (tmp_path / "latest").read_text() == "checkpoint-1"
