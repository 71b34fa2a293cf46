"""The comparison benchmark's plumbing on the tiny random model: arms, chained stages, JSON, table and plot (slow)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lsp_env.tasks import instructions as ifx

pytestmark = pytest.mark.slow  # 12 lsp-train subprocesses, ~2.5 min on 2 cores

ROOT = Path(__file__).resolve().parent.parent


def test_compare_algorithms_chains_stages_and_writes_its_results(tmp_path):
    out = tmp_path / "cmp.json"
    subprocess.run(
        [sys.executable, "benchmarks/compare_algorithms.py", "--model", "tiny-random", "--iterations", "4",
         "--eval-every", "2", "--seeds", "2", "--tasks", "arithmetic,dialogue", "--arms", "data,data_then_lsp",
         "--dialogue-eval-limit", "2", "--eval-problems-per-level", "2", "--output", str(out),
         "--workdir", str(tmp_path / "runs"), "--quiet"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    result = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    runs = {(r["task"], r["arm"], r["seed"]): r for r in result["runs"]}
    assert set(runs) == {(t, a, s) for t in ("arithmetic", "dialogue") for a in ("data", "data_then_lsp")
                         for s in (0, 1)}
    # seed-major order: every arm has its first seed before any arm gets its second
    assert [r["seed"] for r in result["runs"]] == [0] * 4 + [1] * 4
    for (task, arm, seed), run in runs.items():
        assert run["iterations"] == 4, (task, arm)             # two stages of 2 iterations count as one run of 4
        assert 0.0 <= run["after"] <= 1.0
    chained = runs[("arithmetic", "data_then_lsp", 0)]
    times = [t for t, _ in chained["curve"]]
    assert times == sorted(times) and len(times) == 2          # stage 1's final evaluation, then stage 2's
    # the second stage starts from the first stage's checkpoint, not from the base model
    first, second = chained["commands"]
    assert first[first.index("--model") + 1] == "tiny-random"
    assert second[second.index("--model") + 1] == str(
        tmp_path / "runs/arithmetic-data_then_lsp-seed0/stage0/checkpoint-2")
    arms = result["arms"]
    assert set(arms) == {"arithmetic", "dialogue"} and arms["arithmetic"]["data"]["seeds"] == 2
    assert result["before"]["dialogue"] == 0.5 and result["budget"] == {"iterations": 4}
    assert not list((tmp_path / "runs").rglob("checkpoint-*"))  # checkpoints removed once evaluated


def test_the_instruction_following_head_to_head_writes_its_results(tmp_path):
    out = tmp_path / "if.json"
    command = [sys.executable, "benchmarks/learning_curve_instructions.py", "--model", "tiny-random", "--iterations",
               "2", "--minutes", "0", "--eval-every", "1", "--seeds", "1", "--lsp-seeds", "1", "--split", "dev",
               "--also-splits", "test_rephrased", "--output", str(out), "--workdir", str(tmp_path / "runs"), "--quiet",
               "--arms", "data,lsp_kl",
               "--", "--num-queries", "2", "--num-generations", "2", "--max-completion-length", "8"]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    result = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    figures = {"prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose"}
    assert set(result["before"]) == figures and result["split"] == "dev"
    assert set(result["arms"]) == {"data", "lsp_kl"}
    for arm in result["arms"].values():
        assert arm["seeds"] == 1 and set(arm["after"]) == set(arm["after_std"]) == figures
        (run,) = arm["runs"]
        assert run["iterations"] == 2 and len(run["curve"]) == 2 and run["after_per_type"]
        times = [t for t, _ in run["curve"]]  # the final evaluation sits at the end of training, not at 0
        assert times == sorted(times) and times[-1] == run["trained_seconds"] > 0
    also = result["also"]["test_rephrased"]  # each run's final checkpoint, scored on the rephrased split too
    assert set(also["before"]) == figures and set(also["arms"]) == {"data", "lsp_kl"}
    for name, arm in also["arms"].items():
        (run,) = result["arms"][name]["runs"]
        assert arm["after"] == {k: run["also_after"]["test_rephrased"][k] for k in figures}
        assert set(run["also_after"]["test_rephrased"]["per_type"]) <= set(ifx.INSTRUCTION_IDS)
    data_run = result["arms"]["data"]["runs"][0]
    assert all(mix for _, mix in data_run["asked_curve"])  # the data's requests: every iteration asks for something
    assert data_run["valid_queries"] == 4  # 2 iterations x 2 requests, all valid
    config = json.loads((tmp_path / "runs" / "lsp_kl-seed0" / "config.json").read_text())
    assert config["recipe"] == "paper" and config["train"]["quality"] and config["agent"]["max_completion_length"] == 8
    # --resume trains only what the output lacks: the earlier runs and starting figures are kept as they were
    again = command[:-9] + ["--resume", "--arms", "data,lsp_zero,lsp_kl"] + command[-7:]
    printed = subprocess.run(again, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    assert "evaluating the starting model" not in printed and printed.count("training ") == 1, printed
    resumed = json.loads(out.read_text())
    assert list(resumed["arms"]) == ["data", "lsp_kl", "lsp_zero"] and resumed["before"] == result["before"]
    assert resumed["also"]["test_rephrased"]["before"] == also["before"]
    assert all(resumed["arms"][arm]["runs"] == result["arms"][arm]["runs"] for arm in ("data", "lsp_kl"))
    changed = subprocess.run(again[:-7] + ["--split", "test"] + again[-7:], cwd=ROOT, capture_output=True, text=True)
    assert changed.returncode != 0 and "split='dev'" in changed.stderr


def test_minutes_to_a_rate_interpolates_between_evaluations():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from time_to_accuracy import minutes_to

    curve = [(60.0, 0.2), (120.0, 0.6), (180.0, 0.5)]
    assert minutes_to(curve, 0.1, 0.4) == pytest.approx(1.5)  # halfway between 0.2 at 1 min and 0.6 at 2 min
    assert minutes_to(curve, 0.1, 0.2) == pytest.approx(1.0)
    assert minutes_to(curve, 0.1, 0.05) == 0.0 and minutes_to(curve, 0.1, 0.7) is None
