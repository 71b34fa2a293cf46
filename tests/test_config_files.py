"""``lsp-train --config FILE``: YAML or JSON settings, the command line overrides them, a run's config.json repeats
it."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from agents.train import main, parse_args

ROOT = Path(__file__).resolve().parents[1]


def test_a_yaml_file_sets_train_and_agent_fields_and_flags_override_it(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("env: LSP-Arith-v0\nmodel: tiny-random\nnum_generations: 3\nlearning_rate: 2e-5\nepsilon: 0.1\n")
    cfg, agent_cfg = parse_args(["--config", str(path), "--num-generations", "5"])
    assert (cfg.env, cfg.model, cfg.num_generations) == ("LSP-Arith-v0", "tiny-random", 5)
    assert (agent_cfg.learning_rate, agent_cfg.epsilon) == (2e-5, 0.1)  # `2e-5` is a string to YAML 1.1


def test_the_file_sits_between_the_recipe_and_the_command_line(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"recipe": "paper", "beta": 0.1, "scale_rewards": "group"}))
    cfg, agent_cfg = parse_args(["--config", str(path)])
    assert cfg.recipe == "paper" and cfg.agent == "pg" and agent_cfg.loss_type == "sequence"  # from the recipe
    assert cfg.beta == 0.1 and agent_cfg.scale_rewards == "group"                              # the file wins over it
    cfg, _ = parse_args(["--config", str(path), "--beta", "0.2", "--recipe", "tuned"])
    assert cfg.beta == 0.2 and cfg.recipe == "tuned" and cfg.agent == "grpo"                 # the command line wins


@pytest.mark.parametrize("text,error", [
    ("iteratons: 3\n", r"run\.yaml: unknown key\(s\) \['iteratons'\]"),
    ("iterations: ten\n", r"run\.yaml: iterations: 'ten' is a str, want int"),
    ("bf16: 1\n", r"run\.yaml: bf16: 1 is a int, want bool"),
    ("beta: null\n", r"run\.yaml: beta: None is a NoneType, want float"),
    ("- a list\n", r"run\.yaml: want a mapping"),
    ("epsilon: [1\n", r"run\.yaml: cannot parse it"),
])
def test_bad_files_fail_naming_the_key_and_the_file(tmp_path, text, error):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=error):
        parse_args(["--config", str(path)])


def test_the_examples_are_valid_config_files():
    paper, _ = parse_args(["--config", str(ROOT / "examples/paper.yaml")])
    tuned, tuned_agent = parse_args(["--config", str(ROOT / "examples/arithmetic_tuned.yaml")])
    assert (paper.recipe, paper.agent, paper.beta) == ("paper", "pg", 0.04)
    assert (tuned.recipe, tuned.num_generations, tuned_agent.learning_rate) == ("tuned", 8, 1e-5)


def test_a_runs_config_json_repeats_the_run(tmp_path, one_torch_thread):
    first = tmp_path / "first"
    main(["--recipe", "paper", "--env", "LSP-Arith-v0", "--model", "tiny-random", "--iterations", "1",
          "--num-queries", "2", "--num-generations", "2", "--max-completion-length", "8", "--beta", "0.1",
          "--output-dir", str(first)])
    record = json.loads((first / "config.json").read_text())
    cfg, agent_cfg = parse_args(["--config", str(first / "config.json"), "--output-dir", str(tmp_path / "again")])
    assert {**asdict(cfg), "output_dir": str(first), "config": None} == record["train"]
    assert asdict(agent_cfg) == record["agent"] and cfg.recipe == record["recipe"] == "paper"
