"""Held-out evaluation belongs to the task: the same runner scores arithmetic and instruction following."""

import json
import re
from types import SimpleNamespace

from lsp_env.evaluation import arithmetic_solve_rates, heldout_rates, instruction_following_rates
from lsp_env.tasks import InstructionsTask, arithmetic


class Oracle:
    """A stand-in policy that answers each arithmetic problem right (read from the solver's user turn, as trained)."""

    def __init__(self):
        self.chats = []

    def generate(self, chats, max_new_tokens, do_sample=True):
        assert do_sample is False  # held-out evaluation is greedy
        self.chats += chats
        answers = []
        for chat in chats:
            problem = re.fullmatch(r"Compute (.+)\. Answer with the final number\.", chat[-1]["content"]).group(1)
            answers.append(SimpleNamespace(text=f"The answer is {arithmetic.evaluate(problem)}"))
        return answers


def test_arithmetic_solve_rates_score_the_solvers_answers_in_its_training_voice():
    oracle = Oracle()
    result = arithmetic_solve_rates(oracle, n_per_level=3, levels=("add_1d", "mul_1d"))
    assert result == {"per_level": {"add_1d": 1.0, "mul_1d": 1.0}, "overall": 1.0, "headline": 1.0, "n": 6}
    assert all(chat[0]["role"] == "system" for chat in oracle.chats)


def test_instruction_following_rates_are_the_tasks_scores_of_the_greedy_answers():
    class Echo:
        def generate(self, chats, max_new_tokens, do_sample=True):
            return [SimpleNamespace(text=chat[-1]["content"].lower()) for chat in chats]

    task = InstructionsTask()
    items = task.heldout("dev")[:20]
    result = instruction_following_rates(Echo(), "dev", limit=20)
    assert result == {"split": "dev", **task.score(items, [item["prompt"].lower() for item in items])}
    assert result["per_instruction"]["change_case:english_lowercase"]["strict"] == 1.0  # a lowercase echo follows it
    assert heldout_rates(Echo(), task, [], 8) == task.score([], [])


def test_lsp_train_evaluates_instruction_following_on_the_chosen_split(tmp_path, one_torch_thread):
    from agents.train import main

    main(["--env", "LSP-IF-Data-v0", "--model", "tiny-random", "--iterations", "2", "--num-queries", "2",
          "--num-generations", "2", "--max-completion-length", "8", "--eval-every", "1", "--eval-split", "dev",
          "--output-dir", str(tmp_path / "run")])
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [line for line in lines if "eval/prompt_strict" in line]
    assert [line["step"] for line in evals] == [0, 1, 2] and evals[-1].get("final")
    assert "eval/punctuation:no_comma" in evals[-1] and "eval/punctuation:no_comma" not in evals[1]
    trained = [line for line in lines if "time/iteration" in line]  # the mix of instructions the queries asked for
    assert all(line["instructions/per_query"] >= 1
               and 0 < max(v for k, v in line.items()
                           if k.startswith("instructions/") and k != "instructions/per_query") <= 1
               for line in trained)
