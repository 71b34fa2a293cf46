"""The learners: advantages and loss maths against hand-computed values, updates, the CLI, resume, custom agents."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents import GRPOAgent, GRPOConfig, PGAgent, PGConfig, Policy, RoleBaseline
from agents.advantages import challenger_advantages, compute_advantages, group_advantages
from agents.base import aggregation_weights
from agents.grpo import clipped_surrogate
from agents.pg import reinforce
from agents.rollout import play_iteration
from agents.train import main as train_main
from lsp_env.kl import KLHook

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--model", "tiny-random", "--num-queries", "2", "--num-generations", "2", "--max-completion-length", "8"]


# ---- advantages ---------------------------------------------------------------------------------------------
def test_group_advantages_match_trl_bessel_std_plus_1e4():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    mean0, std0 = 1 / 3, math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)  # Bessel: divide by G - 1
    expected = [(1 - mean0) / (std0 + 1e-4), -mean0 / (std0 + 1e-4), -mean0 / (std0 + 1e-4), 0.0, 0.0, 0.0]
    assert group_advantages(rewards, groups, "group").tolist() == pytest.approx(expected, abs=1e-6)
    assert group_advantages(rewards, groups, "none").tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, 0, 0, 0],
                                                                               abs=1e-6)
    batch_std = float(rewards.std())
    assert group_advantages(rewards, groups, "batch").tolist() == pytest.approx(
        [x / (batch_std + 1e-4) for x in [2 / 3, -1 / 3, -1 / 3, 0, 0, 0]], abs=1e-6)


def test_challenger_advantage_is_payoff_minus_mean_payoff():
    payoffs = torch.tensor([-1.0, -0.5, 0.0, -0.5])  # zero-sum: c = -V(q)
    assert challenger_advantages(payoffs, "none").tolist() == pytest.approx([-0.5, 0.0, 0.5, 0.0])
    std = float(payoffs.std())
    assert challenger_advantages(payoffs, "group").tolist() == pytest.approx(
        [x / (std + 1e-4) for x in [-0.5, 0, 0.5, 0]], abs=1e-6)


def test_compute_advantages_routes_roles():
    roles = torch.tensor([0, 0, 1, 1, 1, 1])
    groups = torch.tensor([0, 1, 0, 0, 1, 1])
    rewards = torch.tensor([-0.5, -1.0, 1.0, 0.0, 1.0, 1.0])
    a = compute_advantages(rewards, roles, groups, "none")
    assert a.tolist() == pytest.approx([0.25, -0.25, 0.5, -0.5, 0.0, 0.0])


def test_role_baseline_is_read_before_update():
    baseline = RoleBaseline(decay=0.95)
    roles = torch.tensor([0, 1, 1])
    first = baseline(torch.tensor([1.0, 2.0, 4.0]), roles)
    assert first.tolist() == [1.0, 2.0, 4.0]  # baselines start at 0
    assert baseline.values == {0: pytest.approx(0.05), 1: pytest.approx(0.15)}
    second = baseline(torch.tensor([1.0, 3.0, 3.0]), roles)
    assert second.tolist() == pytest.approx([0.95, 2.85, 2.85])


# ---- loss maths ---------------------------------------------------------------------------------------------
def test_aggregation_weights_follow_trl_meanings():
    roles = torch.tensor([1, 1, 0])
    lengths = torch.tensor([2.0, 4.0, 5.0])
    assert aggregation_weights(roles, lengths, "grpo", 8).tolist() == pytest.approx([1 / (2 * 2), 1 / (2 * 4), 1 / 5])
    assert aggregation_weights(roles, lengths, "bnpo", 8).tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 5])
    assert aggregation_weights(roles, lengths, "dapo", 8).tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 5])
    assert aggregation_weights(roles, lengths, "dr_grpo", 8).tolist() == pytest.approx([1 / 16, 1 / 16, 1 / 8])
    weighted = aggregation_weights(roles, lengths, "grpo", 8, challenger_weight=0.5, solver_weight=2.0)
    assert weighted.tolist() == pytest.approx([2 / 4, 2 / 8, 0.5 / 5])


def test_sequence_loss_type_is_the_papers_sequence_log_probability():
    roles = torch.tensor([1, 1, 0])
    lengths = torch.tensor([2.0, 4.0, 5.0])
    # the paper: -mean over a role's sequences of A * log pi(o), log pi(o) = sum of the tokens' log-probs
    assert aggregation_weights(roles, lengths, "sequence", 8).tolist() == pytest.approx([1 / 2, 1 / 2, 1.0])
    assert aggregation_weights(roles, lengths, "sequence", 8, challenger_weight=0.5).tolist() == pytest.approx(
        [1 / 2, 1 / 2, 0.5])


def test_reinforce_by_hand():
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -0.25]], requires_grad=True)
    loss = reinforce(logps, torch.tensor([[2.0], [-1.0]]))
    assert loss.tolist() == [[2.0, 4.0], [-0.5, -0.25]]  # −A · log π per token
    loss.sum().backward()
    assert logps.grad.tolist() == [[-2.0, -2.0], [1.0, 1.0]]  # ∇ = −A: raise log π where A > 0


def test_clipped_surrogate_by_hand():
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.5, 0.75, 0.25]]))  # ratios 1, 1.5, 0.5
    loss, clipped = clipped_surrogate(new, old, torch.tensor([[1.0]]), 0.2, 0.2)
    assert loss.tolist()[0] == pytest.approx([-1.0, -1.2, -0.5])  # A > 0: min(r, clip(r)) -> 1, 1.2, 0.5
    assert clipped.tolist()[0] == [False, True, True]
    loss, _ = clipped_surrogate(new, old, torch.tensor([[-1.0]]), 0.2, 0.28)
    assert loss.tolist()[0] == pytest.approx([1.0, 1.5, 0.8])  # A < 0: max(r, clip(r)) -> 1, 1.5, 0.8
    loss, _ = clipped_surrogate(new, old, torch.tensor([[1.0]]), 0.2, 0.28)
    assert loss.tolist()[0][1] == pytest.approx(-1.28)  # epsilon_high widens the upper clip only


class FixedLogpsPolicy:
    """A stand-in policy whose completion log-probs are a trainable tensor: the loss is then computable by hand."""

    def __init__(self, logps, ref_logps):
        self.param = torch.nn.Parameter(logps.clone())
        self.ref = ref_logps
        self.model = torch.nn.Module()
        self.model.p = self.param
        self.backend = type("B", (), {"sync_weights": lambda self: None})()

    def completion_logps(self, prompts, completions, reference=False, temperature=1.0):
        rows = [p[0] for p in prompts]  # the prompt ids here are [row index]
        width = max(len(c) for c in completions)
        source = self.ref if reference else self.param
        mask = torch.tensor([[1.0] * len(c) + [0.0] * (width - len(c)) for c in completions])
        return torch.where(mask.bool(), source[rows, :width], self.padding), mask

    padding = 0.0  # the log-prob the stand-in reports at padded positions


def test_grpo_update_loss_and_gradient_by_hand():
    # two solver answers to one query (rewards 1, 0), one token each; beta = 0.5, k3, loss_type grpo, no scaling
    logps = torch.log(torch.tensor([[0.5], [0.25]]))
    ref = torch.log(torch.tensor([[0.25], [0.25]]))
    policy = FixedLogpsPolicy(logps, ref)
    from agents.rollout import Batch

    batch = Batch([[0], [1]], [[7], [8]], torch.tensor([1, 1]), torch.tensor([1.0, 0.0]), torch.tensor([0, 0]),
                  ["a", "b"])
    agent = GRPOAgent(policy, KLHook(beta=0.5), GRPOConfig(scale_rewards="none", learning_rate=0.0, max_grad_norm=0))
    metrics = agent.update(batch)
    # A = (+0.5, -0.5); ratio = 1; k3(d) = e^d - d - 1 with d = ref - logp = (-log 2, 0)
    k3 = [math.exp(-math.log(2)) + math.log(2) - 1, 0.0]
    expected = (-0.5 + 0.5 * k3[0]) / 2 + (0.5 + 0.5 * k3[1]) / 2
    assert metrics["loss/solver"] == pytest.approx(expected, abs=1e-6)
    assert metrics["kl/solver"] == pytest.approx(sum(k3) / 2, abs=1e-6)
    # d/dlogp of the surrogate at ratio 1 is -A; of beta*k3 it is beta*(1 - e^d); each divided by 2 sequences
    expected_grad = [(-0.5 + 0.5 * (1 - 0.5)) / 2, (0.5 + 0.5 * (1 - 1.0)) / 2]
    assert policy.param.grad is None  # zeroed after the step...
    agent2 = GRPOAgent(FixedLogpsPolicy(logps, ref), KLHook(beta=0.5),
                       GRPOConfig(scale_rewards="none", learning_rate=1.0, max_grad_norm=0))
    agent2.optimizer = torch.optim.SGD([agent2.policy.param], lr=1.0)
    agent2.update(batch)
    step = (logps - agent2.policy.param.detach()).flatten().tolist()  # SGD: param -= lr * grad
    assert step == pytest.approx(expected_grad, abs=1e-6)


def test_k3_in_the_loss_stays_finite_with_nan_prone_padding():
    """Padded positions hold arbitrary log-probs (here -1000 against the reference's 0 padding: k3's exp(1000) =
    inf); they must not turn the loss or the gradient into NaN (the estimators on their own: test_kl_and_hooks)."""
    logps = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.5]]))
    ref = torch.log(torch.tensor([[0.25, 0.25], [0.25, 0.25]]))
    policy = FixedLogpsPolicy(logps, ref)
    policy.padding = -1000.0
    from agents.rollout import Batch

    batch = Batch([[0], [1]], [[7, 7], [8]], torch.tensor([1, 1]), torch.tensor([1.0, 0.0]), torch.tensor([0, 0]),
                  ["a", "b"])
    agent = PGAgent(policy, KLHook(beta=0.5), PGConfig(scale_rewards="none", max_grad_norm=0))
    grads = []
    agent.optimizer_step = lambda: grads.append(policy.param.grad.clone()) or 0.0
    metrics = agent.update(batch)
    assert math.isfinite(metrics["loss/solver"]) and math.isfinite(metrics["kl/solver"])
    assert torch.isfinite(grads[0]).all() and grads[0][1, 1] == 0  # no gradient reaches the padded position


def test_zero_advantage_samples_are_skipped_without_changing_the_update():
    logps = torch.log(torch.tensor([[0.5], [0.25], [0.5], [0.5]]))
    from agents.rollout import Batch

    batch = Batch([[0], [1], [2], [3]], [[7], [8], [9], [9]], torch.tensor([1, 1, 1, 1]),
                  torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([0, 0, 1, 1]), ["a", "b", "c", "d"])
    agent = PGAgent(FixedLogpsPolicy(logps, logps), KLHook(), PGConfig(scale_rewards="none", max_grad_norm=0))
    prep = agent.prepare(batch)
    assert prep.index == [0, 1]  # group 1 is all-equal: no advantage, no KL -> no forward/backward for it
    calls = []
    real = agent.policy.completion_logps

    def spy(prompts, completions, **kwargs):
        calls.append([p[0] for p in prompts])
        return real(prompts, completions, **kwargs)

    agent.policy.completion_logps = spy
    skipped = agent.update(batch)
    assert calls == [[0, 1]]  # the skipped rows never went through the model

    class TrainEveryRow(PGAgent):
        def prepare(self, batch):
            prep = super().prepare(batch)
            prep.index = list(range(len(batch)))
            return prep

    # the same update with every row trained: the skipped rows would have contributed nothing
    everyone = TrainEveryRow(FixedLogpsPolicy(logps, logps), KLHook(), PGConfig(scale_rewards="none", max_grad_norm=0))
    full = everyone.update(batch)
    assert torch.equal(agent.policy.param, everyone.policy.param) and agent.policy.param.ne(logps).any()
    assert (skipped["loss/solver"], skipped["grad_norm"]) == (full["loss/solver"], full["grad_norm"])


# ---- real updates on the tiny model -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_envs():
    import gymnasium

    import lsp_env  # noqa: F401

    return gymnasium.make_vec("LSP-Zero-v0", num_envs=2, model="tiny-random", reward="length", num_generations=2)


@pytest.mark.parametrize("agent_class,config", [(PGAgent, PGConfig(max_completion_length=8)),
                                                (GRPOAgent, GRPOConfig(max_completion_length=8, num_iterations=2,
                                                                       learning_rate=1e-3))])
def test_update_changes_the_policy_and_reports_metrics(tiny_envs, agent_class, config):
    torch.manual_seed(0)
    policy = Policy("tiny-random")
    agent = agent_class(policy, KLHook(beta=0.1), config)
    before = [p.detach().clone() for p in policy.model.parameters()]
    batch = play_iteration(tiny_envs, agent, seed=0)
    # 2 queries, each answered twice unless invalid: every answer belongs to a valid query's round
    valid = round(2 * (1 - batch.metrics["invalid_query_rate"]))
    assert (batch.roles == 0).sum() == 2 and (batch.roles == 1).sum() == 2 * valid
    assert all(int(g) in range(2) for g in batch.groups) and len(batch.texts) == len(batch)
    metrics = agent.update(batch)
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
    assert "kl/solver" in metrics and metrics["grad_norm"] > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, policy.model.parameters()))
    # the frozen reference did not move
    ref = policy.reference
    assert all(torch.equal(b, p) for b, p in zip(before, ref.parameters()))


def test_a_round_whose_every_query_is_invalid_asks_the_agent_for_no_answers():
    """The solver is not called with no chats (vLLM's generate cannot take an empty batch; it cut a run short)."""
    import gymnasium

    import lsp_env  # noqa: F401
    from agents.policy import Completion

    class Agent:
        calls = []

        def act(self, chats):
            assert chats, "act called with no chats"
            self.calls.append(len(chats))
            return [Completion("Tell me about cats.", [1, 2], [3, 4]) for _ in chats]  # no instruction: invalid

    envs = gymnasium.make_vec("LSP-IF-v0", num_envs=3, model="tiny-random", num_generations=2)
    batch = play_iteration(envs, agent := Agent(), seed=0)
    assert agent.calls == [3] and batch.metrics["invalid_query_rate"] == 1.0
    assert batch.roles.tolist() == [0, 0, 0] and batch.groups.tolist() == [0, 1, 2]


def test_query_attempts_re_ask_only_the_rounds_whose_query_was_invalid():
    """k queries per round in one call; a round whose query was invalid is reset to the same prompt and given the next.
    Every query read is a challenger sample (an invalid one paid the penalty); the solver answers the valid ones."""
    import gymnasium
    import numpy as np

    import lsp_env  # noqa: F401
    from agents.policy import Completion

    valid, invalid = "Describe a lighthouse. Your entire answer must be in lowercase letters.", "Tell me about cats."

    class Agent:
        def __init__(self):
            self.chats = []

        def act(self, chats):
            self.chats.append(chats)
            drafts = [valid, "unread", "unread", invalid, invalid, invalid, invalid, valid, "unread"]
            texts = drafts if len(self.chats) == 1 else ["all lowercase."] * len(chats)
            return [Completion(text, [1, 2], [3, 4]) for text in texts]

    envs = gymnasium.make_vec("LSP-IF-v0", num_envs=3, model="tiny-random", num_generations=2)
    batch = play_iteration(envs, agent := Agent(), seed=0, query_attempts=3)
    first = agent.chats[0]
    assert [len(c) for c in agent.chats] == [9, 4] and first[0:3] == [first[0]] * 3 and first[0] != first[3]
    assert agent.chats[1][0][-1]["content"] == valid and agent.chats[1][2][-1]["content"] == valid
    assert batch.roles.tolist() == [0] * 6 + [1] * 4 and batch.groups.tolist() == [0, 1, 2, 1, 2, 1, 0, 0, 2, 2]
    assert "unread" not in batch.texts
    penalty = envs.envs[0].invalid_query_penalty
    assert batch.rewards[[1, 2, 3, 5]].tolist() == [penalty] * 4 and batch.rewards[6:].tolist() == [1.0] * 4
    assert batch.metrics["invalid_query_rate"] == 4 / 6 and batch.metrics["valid_queries"] == 2
    for shared in (False, True):  # a round reset from the iteration's seed gets back the prompt its queries saw
        envs = gymnasium.make_vec("LSP-IF-v0", num_envs=3, model="tiny-random", shared_challenger_prompt=shared)
        before = envs.reset(seed=5)[1]["messages"]
        again = envs.reset(seed=5, options={"reset_mask": np.array([False, True, True])})[1]["messages"]
        assert list(again[1:]) == list(before[1:])
    with pytest.raises(ValueError, match="needs a seed"):
        play_iteration(envs, Agent(), seed=None, query_attempts=2)


def plain_logps(model, prompt, completion, temperature=1.0):
    """Log-probs of ``completion`` after ``prompt`` from one plain, unpadded forward pass at ``temperature``."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0, len(prompt) - 1:-1]
    return torch.log_softmax(logits.float() / temperature, -1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def test_completion_logps_at_a_temperature_are_those_of_the_sampler():
    policy = Policy("tiny-random")
    prompt, completion = [5, 17, 42, 9], [33, 7, 120]
    logps, _ = policy.completion_logps([prompt], [completion], temperature=0.5)
    torch.testing.assert_close(logps[0].detach(), plain_logps(policy.model, prompt, completion, 0.5),
                               atol=1e-5, rtol=1e-5)
    reference, _ = policy.completion_logps([prompt], [completion], reference=True, temperature=0.5)
    torch.testing.assert_close(reference[0], plain_logps(policy.reference, prompt, completion, 0.5),
                               atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logps[0].detach(), plain_logps(policy.model, prompt, completion, 1.0), atol=1e-3)


def test_grpo_at_a_temperature_uses_it_for_old_new_and_reference_logps_and_starts_at_ratio_one(monkeypatch):
    """num_iterations = 2 at T = 0.5: the old log-probs, the first pass's log-probs and the reference's are all at
    T, so the first pass's ratio is exactly 1 (no token clipped, even with a tiny epsilon)."""
    import agents.grpo
    from agents.rollout import Batch

    torch.manual_seed(0)
    policy = Policy("tiny-random")
    prompts, completions = [[5, 17, 42], [5, 17, 42], [9, 8]], [[33, 7, 120], [4, 4], [61]]
    batch = Batch(prompts, completions, torch.tensor([1, 1, 1]), torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0, 0, 1]),
                  ["a", "b", "c"])
    config = GRPOConfig(temperature=0.5, num_iterations=2, epsilon=1e-6, learning_rate=1e-2, scale_rewards="none")
    agent = GRPOAgent(policy, KLHook(beta=0.1), config)
    expected = {i: plain_logps(policy.model, prompts[i], completions[i], 0.5) for i in range(len(batch))}
    seen = []  # (new logps, old logps, mask) of every micro-batch
    surrogate = agents.grpo.clipped_surrogate
    monkeypatch.setattr(agents.grpo, "clipped_surrogate",
                        lambda new, old, *a: seen.append((new.detach(), old)) or surrogate(new, old, *a))
    sequence_logps = agent.sequence_logps
    recorded = {}
    monkeypatch.setattr(agent, "sequence_logps", lambda b, index, reference=False: recorded.setdefault(
        reference, sequence_logps(b, index, reference)))
    agent.update(batch)
    for reference in (False, True):  # the old policy's and the reference's (equal weights before the first step)
        for i, logps in enumerate(recorded[reference]):
            torch.testing.assert_close(logps, expected[i], atol=1e-5, rtol=1e-5)
    chunks = agent.micro_batches(batch, [0, 1, 2])
    for chunk, (new, old) in zip(chunks, seen[: len(chunks)]):  # the first pass
        for k, i in enumerate(chunk):
            n = len(completions[i])
            torch.testing.assert_close(new[k, :n], expected[i], atol=1e-5, rtol=1e-5)
            assert torch.equal(torch.exp(new[k, :n] - old[k, :n]), torch.ones(n))  # ratio exactly 1: nothing clipped


def test_old_and_reference_logps_are_computed_without_autograd(monkeypatch):
    from agents.rollout import Batch

    policy = Policy("tiny-random")
    agent = GRPOAgent(policy, KLHook(beta=0.1), GRPOConfig(num_iterations=2))
    batch = Batch([[5, 17], [5, 17]], [[33, 7], [4]], torch.tensor([1, 1]), torch.tensor([1.0, 0.0]),
                  torch.tensor([0, 0]), ["a", "b"])
    built_graphs = []  # whether each forward pass recorded an autograd graph
    completion_logps = policy.completion_logps

    def recording(*args, **kwargs):
        logps, mask = completion_logps(*args, **kwargs)
        built_graphs.append(logps.requires_grad)
        return logps, mask

    monkeypatch.setattr(policy, "completion_logps", recording)
    for reference in (False, True):
        logps = agent.sequence_logps(batch, [0, 1], reference=reference)
        assert all(lp.grad_fn is None and not lp.requires_grad for lp in logps)
    assert built_graphs == [False, False]


def test_a_bf16_run_stores_the_references_linears_in_bf16_with_the_same_logps_and_a_judge_still_runs():
    """bf16 autocast casts the frozen reference's fp32 Linear weights to bf16 at every use: storing them so halves
    their memory and leaves the reference log-probs bit-identical; the tied head and the embedding stay fp32."""
    from lsp_env.rewards import SelfQuality

    torch.manual_seed(0)
    fp32, bf16 = Policy("tiny-random"), Policy("tiny-random", bf16=True)
    linears = [m for m in bf16.reference.modules() if type(m) is torch.nn.Linear and m is not bf16.reference.lm_head]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert bf16.reference.get_input_embeddings().weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # the trained weights: fp32 masters
    prompts, completions = [[5, 17, 42, 9], [5, 17, 42, 9], [3, 8]], [[33, 7, 120], [33, 8], [1, 2, 3, 4]]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the fp32 run's frozen copy, under the bf16 run's autocast
        expected, _ = fp32.completion_logps(prompts, completions, reference=True)
    got, _ = bf16.completion_logps(prompts, completions, reference=True)
    assert torch.equal(got, expected)
    # outside autocast (a judge on the reference pair) the stored layers compute in fp32 from bf16-rounded weights
    queries, answers = ["Name a colour.", "What is 2 + 2?"], ["Blue.", "4"]
    grades = SelfQuality(bf16.reference_pair())(queries, answers)
    assert all(0.0 <= g <= 1.0 for g in grades)
    assert max(abs(a - b) for a, b in zip(grades, SelfQuality(fp32.reference_pair())(queries, answers))) < 0.05


def test_lora_reference_is_the_same_model_with_adapters_disabled():
    policy = Policy("tiny-random", lora=True, lora_r=4)
    assert policy.reference is policy.model
    prompt, completion = [[1, 2, 3]], [[4, 5]]
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    trained, _ = policy.completion_logps(prompt, completion)
    reference, _ = policy.completion_logps(prompt, completion, reference=True)
    assert not torch.allclose(trained, reference)
    with policy.model.disable_adapter():
        base, _ = policy.completion_logps(prompt, completion)
    assert torch.allclose(base, reference)


@pytest.mark.parametrize("lora", [False, True])
def test_shared_prompt_logps_and_gradients_equal_separate_unpadded_passes(lora):
    """Rows sharing a prompt run it once (its keys/values gathered to the group): the maths must not change."""
    policy = Policy("tiny-random", lora=lora, lora_r=4)
    if lora:  # adapters that act, so the LoRA gradients are not trivially those of B = 0
        with torch.no_grad():
            for name, p in policy.model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1)
    g = torch.Generator().manual_seed(1)
    unique = [torch.randint(5, 200, (n,), generator=g).tolist() for n in (7, 12, 3)]
    prompts = [unique[0]] * 3 + [unique[1]] * 2 + [unique[2], unique[0]]  # groups, a singleton, a non-adjacent repeat
    completions = [torch.randint(5, 200, (n,), generator=g).tolist() for n in (5, 9, 1, 4, 9, 2, 6)]
    logps, mask = policy.completion_logps(prompts, completions)
    assert mask.sum(1).tolist() == [len(c) for c in completions]
    (logps * mask).sum().backward()
    shared = {n: p.grad.clone() for n, p in policy.model.named_parameters() if p.grad is not None}
    policy.model.zero_grad()
    total = 0.0
    for r, (p, c) in enumerate(zip(prompts, completions)):
        logits = policy.model(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1:-1]
        separate = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(c)[:, None]).squeeze(-1)
        torch.testing.assert_close(logps[r, :len(c)].detach(), separate.detach(), atol=1e-5, rtol=1e-5)
        total = total + separate.sum()
    total.backward()
    assert shared.keys() == {n for n, p in policy.model.named_parameters() if p.grad is not None}
    for name, p in policy.model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(shared[name], p.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("lora", [False, True])
def test_hf_generation_prefills_a_repeated_prompt_once_with_the_same_result(lora, monkeypatch):
    """A GRPO group's G rows share one prefill; greedy output must equal generating each prompt alone."""
    policy = Policy("tiny-random", lora=lora, lora_r=4)
    backend = policy.backend
    g = torch.Generator().manual_seed(2)
    a, b = (torch.randint(5, 200, (n,), generator=g).tolist() for n in (9, 4))
    prompts = [a, a, b, a, b]
    prefilled = []  # the cache length each call prefilled (None: no shared prefill)
    shared_prefill = backend._shared_prefill

    def recording(*args):
        cache = shared_prefill(*args)
        prefilled.append(None if cache is None else cache.get_seq_length())
        return cache

    monkeypatch.setattr(backend, "_shared_prefill", recording)
    together = backend.generate(prompts, 12, do_sample=False)
    alone = [backend.generate([p], 12, do_sample=False)[0] for p in prompts]
    assert prefilled == [len(a) - 1] + [None] * len(prompts)  # the batch shared its prefill, single prompts did not
    assert together == alone
    assert together[0] == together[1] == together[3] and together[2] == together[4]


def test_lora_without_target_modules_fails_with_the_fix():
    with pytest.raises(ValueError, match="none of the target modules"):
        Policy("tiny-random", lora=True, lora_target_modules=("no_such_proj",))


# ---- the CLI ------------------------------------------------------------------------------------------------
def read_metrics(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


DETERMINISTIC = ("reward/challenger", "reward/solver", "loss/challenger", "loss/solver", "kl/challenger", "kl/solver",
                 "advantage/abs_mean", "tokens/generated", "tokens/challenger", "tokens/solver", "grad_norm")


@pytest.mark.parametrize("agent", ["pg", "grpo"])
def test_lsp_train_writes_metrics_checkpoint_and_plot(tmp_path, agent):
    out = tmp_path / agent
    train_main(["--env", "LSP-Zero-v0", "--agent", agent, "--iterations", "2", *TINY, "--reward", "length",
                "--output-dir", str(out), "--beta", "0.05"])
    lines = read_metrics(out / "metrics.jsonl")
    assert [line["step"] for line in lines] == [1, 2] and all(line["world_size"] == 1 for line in lines)
    assert (out / "metrics.png").stat().st_size > 0
    assert (out / "latest").read_text() == "checkpoint-2"
    assert (out / "checkpoint-2" / "model.safetensors").exists() and (out / "checkpoint-2" / "agent.pt").exists()


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    common = ["--env", "LSP-Arith-Data-v0", "--agent", "grpo", *TINY, "--reward", "length", "--seed", "3",
              "--beta", "0.05", "--learning-rate", "1e-3"]
    train_main([*common, "--iterations", "3", "--output-dir", str(tmp_path / "straight")])
    train_main([*common, "--iterations", "2", "--output-dir", str(tmp_path / "split")])
    train_main([*common, "--iterations", "3", "--output-dir", str(tmp_path / "split"), "--resume"])
    straight, split = read_metrics(tmp_path / "straight/metrics.jsonl"), read_metrics(tmp_path / "split/metrics.jsonl")
    assert len(split) == 3
    for a, b in zip(straight, split):
        assert {k: a.get(k) for k in DETERMINISTIC} == {k: b.get(k) for k in DETERMINISTIC}
    from safetensors.torch import load_file

    wa, wb = (load_file(tmp_path / "straight/checkpoint-3/model.safetensors"),
              load_file(tmp_path / "split/checkpoint-3/model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_the_env_state_goes_through_the_checkpoint(tmp_path):
    """The coverage history and the example archive span iterations: a resumed run goes on from the saved ones."""
    common = ["--env", "LSP-IF-v0", *TINY, "--coverage-bonus", "0.5", "--example-archive", "8",
              "--output-dir", str(tmp_path)]
    train_main([*common, "--iterations", "1"])
    saved = json.loads((tmp_path / "checkpoint-1" / "env.json").read_text())
    assert saved == [{"coverage": {"window": 64, "queries": saved[0]["coverage"]["queries"]},  # one per rank
                      "archive": {"size": 8, "queries": saved[0]["archive"]["queries"]}}]
    history = [["punctuation:no_comma"], ["change_case:english_lowercase", "punctuation:no_comma"]]
    archive = ["Describe owls. Use no commas."]
    (tmp_path / "checkpoint-1" / "env.json").write_text(json.dumps(
        [{"coverage": {"window": 64, "queries": history}, "archive": {"size": 8, "queries": archive}}]))
    train_main([*common, "--iterations", "2", "--resume"])
    resumed = json.loads((tmp_path / "checkpoint-2" / "env.json").read_text())[0]
    assert resumed["coverage"]["queries"][:2] == history  # then the valid requests of iteration 2, if any
    assert resumed["archive"]["queries"][:1] == archive


def test_resume_without_a_checkpoint_and_rerun_into_a_used_dir_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_main(["--env", "LSP-Arith-Data-v0", *TINY, "--iterations", "1", "--output-dir", str(tmp_path),
                    "--resume"])
    train_main(["--env", "LSP-Arith-Data-v0", *TINY, "--iterations", "1", "--output-dir", str(tmp_path)])
    with pytest.raises(FileExistsError, match="--resume"):
        train_main(["--env", "LSP-Arith-Data-v0", *TINY, "--iterations", "1", "--output-dir", str(tmp_path)])


@pytest.mark.parametrize("argv,error", [
    (["--num-generations", "1"], "G >= 2"),
    (["--env", "LSP-Nope-v0"], "not registered"),
    (["--agent", "ppo"], "use one of"),
    (["--model", "/no/such/dir"], "neither .embedded., .tiny-random., an existing directory nor a hub id"),
    (["--model", "no-slash-name"], "neither .embedded., .tiny-random., an existing directory nor a hub id"),
    (["--loss-type", "mean"], "loss_type"),
    (["--recipe", "fast"], "use one of"),
    (["--query-attempts", "0"], "query-attempts must be >= 1"),
])
def test_invalid_settings_fail_before_any_work(argv, error):
    with pytest.raises((ValueError, FileNotFoundError), match=error):
        train_main(["--model", "tiny-random", "--output-dir", "/nonexistent/never-created", *argv])
    assert not Path("/nonexistent/never-created").exists()


# ---- recipes -------------------------------------------------------------------------------------------------
def test_recipe_paper_resolves_to_the_documented_values():
    from agents.recipes import RECIPES
    from agents.train import parse_args

    cfg, agent_cfg = parse_args(["--recipe", "paper"])
    assert isinstance(agent_cfg, PGConfig) and cfg.recipe == "paper"
    resolved = {**vars(cfg), **vars(agent_cfg)}
    assert {k: resolved[k] for k in RECIPES["paper"]} == RECIPES["paper"]
    assert agent_cfg.scale_rewards == "none" and agent_cfg.loss_type == "sequence" and cfg.beta > 0
    assert cfg.kl_placement == "loss" and cfg.payoff == "zero_sum" and agent_cfg.challenger_weight == 1.0
    assert cfg.challenger_beta is None and cfg.solver_beta is None  # beta for both roles


def test_recipe_is_overridden_by_explicit_flags():
    from agents.train import parse_args

    cfg, agent_cfg = parse_args(["--scale-rewards", "group", "--recipe", "paper", "--beta", "0.1", "--agent", "grpo"])
    assert isinstance(agent_cfg, GRPOConfig)
    assert (agent_cfg.scale_rewards, cfg.beta) == ("group", 0.1)
    assert agent_cfg.loss_type == "sequence" and cfg.payoff == "zero_sum"  # the rest of the recipe still holds


@pytest.mark.parametrize("bf16", ["true", "false"])
def test_recipe_tuned_is_exactly_the_flags_the_arithmetic_head_to_head_spelt_out(bf16):
    from agents.train import parse_args

    spelt_out = ["--agent", "grpo", "--num-queries", "4", "--num-generations", "8", "--max-completion-length", "32",
                 "--learning-rate", "1e-5", "--beta", "0", "--scale-rewards", "group", "--loss-type", "grpo",
                 "--payoff", "rzero", "--example-levels", "add_1d,add_2d_1d,mul_1d", "--bf16", bf16]
    cfg, agent_cfg = parse_args(spelt_out)
    tuned_cfg, tuned_agent_cfg = parse_args(["--recipe", "tuned", "--bf16", bf16])
    assert {**vars(tuned_cfg), "recipe": None} == vars(cfg) and tuned_agent_cfg == agent_cfg
    from lsp_env.models import bf16_supported

    assert parse_args(["--recipe", "tuned"])[0].bf16 == bf16_supported()


def test_recipe_help_lists_what_each_recipe_sets(capsys):
    from agents.recipes import RECIPES
    from agents.train import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines (also at hyphens)
    for name, values in RECIPES.items():
        assert f"{name}:" in text
        assert all(f"{k}={v}".replace(" ", "") in text for k, v in values.items())


def test_recipe_and_resolved_values_are_recorded_in_config_json(tmp_path, capsys):
    common = ["--env", "LSP-Arith-v0", "--model", "tiny-random", "--num-queries", "2", "--num-generations", "2",
              "--max-completion-length", "8", "--seed", "0", "--recipe", "paper"]
    train_main([*common, "--iterations", "1", "--output-dir", str(tmp_path / "paper")])
    config = json.loads((tmp_path / "paper/config.json").read_text())
    assert config["recipe"] == "paper" and config["train"]["agent"] == "pg"
    assert config["agent"]["scale_rewards"] == "none" and config["agent"]["loss_type"] == "sequence"
    assert isinstance(config["train"]["beta"], float) and config["train"]["beta"] > 0
    train_main([*common, "--scale-rewards", "group", "--iterations", "1", "--output-dir", str(tmp_path / "group")])
    assert json.loads((tmp_path / "group/config.json").read_text())["agent"]["scale_rewards"] == "group"
    # --resume: the same settings leave config.json as it is; other settings go beside it, the first run's are kept
    train_main([*common, "--iterations", "1", "--output-dir", str(tmp_path / "paper"), "--resume"])
    assert sorted(p.name for p in (tmp_path / "paper").glob("config*.json")) == ["config.json"]
    train_main([*common, "--iterations", "2", "--output-dir", str(tmp_path / "paper"), "--resume"])
    assert json.loads((tmp_path / "paper/config.json").read_text()) == config
    assert json.loads((tmp_path / "paper/config-resume-1.json").read_text())["train"]["iterations"] == 2
    assert "settings differ" in capsys.readouterr().err


def test_follow_up_stage_starts_from_a_checkpoint(tmp_path):
    train_main(["--env", "LSP-Arith-Data-v0", *TINY, "--reward", "length", "--iterations", "1",
                "--learning-rate", "1e-2", "--output-dir", str(tmp_path / "a")])
    stage2 = ["--env", "LSP-Arith-v0", "--num-queries", "2", "--num-generations", "2", "--max-completion-length", "8"]
    train_main([*stage2, "--model", str(tmp_path / "a/checkpoint-1"), "--iterations", "1",
                "--output-dir", str(tmp_path / "b")])
    from safetensors.torch import load_file

    first, second = (load_file(tmp_path / "a/checkpoint-1/model.safetensors"),
                     load_file(tmp_path / "b/checkpoint-1/model.safetensors"))
    tiny = Policy("tiny-random").model.state_dict()
    key = "model.embed_tokens.weight"
    assert not torch.equal(first[key], tiny[key])  # stage 1 trained ...
    assert torch.allclose(first[key], second[key], atol=1e-2)  # ... and stage 2 started from it, not from scratch


def test_custom_agent_example_runs(tmp_path):
    out = tmp_path / "custom"
    subprocess.run([sys.executable, str(ROOT / "examples/custom_agent.py"), *TINY, "--iterations", "2",
                    "--output-dir", str(out)], check=True, cwd=ROOT, capture_output=True)
    lines = read_metrics(out / "metrics.jsonl")
    assert [line["step"] for line in lines] == [1, 2] and all(line["loss/value"] >= 0 for line in lines)
    assert lines[1]["loss/value"] != lines[0]["loss/value"]  # the value baseline is being fit
    refused = subprocess.run([sys.executable, str(ROOT / "examples/custom_agent.py"), *TINY, "--beta", "0.1",
                              "--output-dir", str(tmp_path / "kl")], cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode != 0 and "has no KL term" in refused.stderr and not (tmp_path / "kl").exists()


def test_micro_batches_keep_a_group_together_so_its_prompt_runs_once():
    from agents.rollout import Batch

    # 3 groups of 3 answers whose lengths interleave: sorting rows by length alone would mix the groups
    prompts = [[1, 2]] * 3 + [[3, 4, 5]] * 3 + [[6]] * 3
    completions = [[9] * n for n in (1, 6, 3, 2, 5, 4, 7, 1, 1)]
    batch = Batch(prompts, completions, torch.ones(9, dtype=torch.long), torch.zeros(9),
                  torch.tensor([0] * 3 + [1] * 3 + [2] * 3))
    agent = PGAgent(Policy("tiny-random"), config=PGConfig(micro_batch_size=4))
    chunks = agent.micro_batches(batch, list(range(9)))
    assert sorted(i for c in chunks for i in c) == list(range(9)) and all(len(c) <= 4 for c in chunks)
    assert [sorted({tuple(prompts[i]) for i in c}) for c in chunks] == [[(1, 2)], [(3, 4, 5)], [(6,)]]
    big = PGAgent(agent.policy, config=PGConfig(micro_batch_size=2)).micro_batches(batch, list(range(9)))
    assert all(len({tuple(prompts[i]) for i in c}) == 1 for c in big)  # a group larger than a micro-batch: split alone


@pytest.mark.parametrize("micro_batch_size, prompt_tokens", [(4, 2 + 3 + 2), (2, 2 * (2 + 3 + 2))])
def test_prompt_tokens_through_the_model_are_one_pass_per_distinct_prompt(micro_batch_size, prompt_tokens):
    """Counted on the model's own forward calls (``benchmarks/throughput.py --profile``): groups that fit in a
    micro-batch run their prompt once per pass; a group larger than one (3 rows, micro-batches of 2) runs it twice."""
    from agents.rollout import Batch
    from benchmarks.throughput import PromptTokens

    prompts = [[1, 2]] * 3 + [[3, 4, 5]] * 3 + [[6, 7]] * 3
    batch = Batch(prompts, [[9] * n for n in (1, 6, 3, 2, 5, 4, 7, 1, 1)], torch.ones(9, dtype=torch.long),
                  torch.zeros(9), torch.tensor([0] * 3 + [1] * 3 + [2] * 3))
    policy = Policy("tiny-random")
    agent = PGAgent(policy, config=PGConfig(micro_batch_size=micro_batch_size))
    passes = PromptTokens(policy, agent)
    agent.sequence_logps(batch, list(range(9)))
    assert passes.counts == {"through_model": prompt_tokens, "one_pass_per_distinct_prompt": 7,
                             "one_pass_per_row": 21}
