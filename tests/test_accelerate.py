"""Multi-process training on accelerate: two real CPU ranks (gloo) train like one process on the same global batch.

Both tests start ``accelerate launch --multi_gpu --num_processes 2`` with ``ACCELERATE_USE_CPU=true`` (the launch that
gives two ranks on CPU; without ``--multi_gpu`` it starts one process). The equality test's ranks run this very file
(``__main__`` below): each plays its half of a fixed global batch through the trainer's own code path
(``agents.distributed.setup`` + ``agent.update``), and the pytest process runs the same update on the whole batch.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents.grpo import GRPOAgent
from agents.pg import PGAgent
from agents.policy import Policy
from agents.rollout import Batch
from lsp_env.kl import KLHook
from lsp_env.prompts import Role

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).parent / "accelerate"
WORLD_SIZE = 2
ATOL = 1e-6  # fp32 parameters after the update: the runs differ only in the order gradients are summed
# Adam divides by sqrt(v) + 1e-8, so a gradient entry near 1e-8 turns summation-order noise (~1e-10) into a step
# difference of ~1e-2 x lr: a small learning rate keeps that under ATOL. Adam ignores gradient scale, which the
# comparison of gradients and grad_norm below catches instead.
LEARNING_RATE = 1e-5

# (name, agent class, config, KL hook): loss types grpo / dapo / dr_grpo, scale_rewards group / batch / none, KL in
# the loss and in the reward, GRPO's num_iterations > 1 (old log-probs)
CASES = {
    "grpo-group": (GRPOAgent, dict(loss_type="grpo", scale_rewards="group"), dict(beta=0.0)),
    "dapo-batch-kl": (GRPOAgent, dict(loss_type="dapo", scale_rewards="batch"), dict(beta=0.05)),
    "grpo-batch-klreward-mu2": (GRPOAgent, dict(loss_type="grpo", scale_rewards="batch", num_iterations=2),
                                dict(beta=0.05, placement="reward")),
    "pg-drgrpo-none": (PGAgent, dict(loss_type="dr_grpo", scale_rewards="none"), dict(beta=0.0)),
}
COMPARED = ("loss/challenger", "loss/solver", "advantage/abs_mean", "trained_samples", "grad_norm", "kl/challenger",
            "kl/solver", "kl_penalty/challenger", "kl_penalty/solver")


ENV = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
LAUNCH = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", str(WORLD_SIZE), "--mixed_precision", "no",
          "--dynamo_backend", "no"]


def launch(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([*LAUNCH, "--num_machines", "1", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def start_machines(args: list[str], port: int) -> list[subprocess.Popen]:
    """The README's multi-machine command, on one machine: two launches of one process each, ranks 0 and 1."""
    return [subprocess.Popen([*LAUNCH, "--num_machines", "2", "--machine_rank", str(k),
                              "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), *args],
                             cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for k in range(2)]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- a fixed global batch: 4 rounds x G = 3, round 3 an invalid query (challenger row only) ----------------------
def make_rounds(num_rounds: int = 4, num_generations: int = 3) -> list[dict]:
    g = torch.Generator().manual_seed(0)

    def ids(low, high):
        return torch.randint(100, 5000, (int(torch.randint(low, high, (1,), generator=g)),), generator=g).tolist()

    rounds = []
    for r in range(num_rounds):
        query = ids(2, 8)
        solvers = [] if r == num_rounds - 1 else [(ids(4, 9), ids(2, 8), float(torch.rand(1, generator=g)))
                                                  for _ in range(num_generations)]
        payoff = -1.0 if not solvers else -sum(s[2] for s in solvers) / len(solvers)  # zero-sum: -V(q)
        rounds.append({"challenger": (ids(5, 9), query, payoff), "solvers": solvers})
    return rounds


def rounds_batch(rounds: list[dict]) -> Batch:
    """The rollout's layout: the rounds' challenger rows, then their solver rows; round indices local (0, 1, ...)."""
    rows = [(*rnd["challenger"], Role.CHALLENGER, k) for k, rnd in enumerate(rounds)]
    rows += [(*solver, Role.SOLVER, k) for k, rnd in enumerate(rounds) for solver in rnd["solvers"]]
    return Batch([r[0] for r in rows], [r[1] for r in rows], torch.tensor([r[3] for r in rows]),
                 torch.tensor([r[2] for r in rows], dtype=torch.float32), torch.tensor([r[4] for r in rows]),
                 texts=[""] * len(rows))


def one_update(name: str, batch: Batch) -> dict:
    """One ``agent.update`` from the tiny model: trained parameters, the gradient the optimizer stepped on, metrics."""
    agent_class, agent_kwargs, kl_kwargs = CASES[name]
    torch.manual_seed(0)
    config = agent_class.config_class(learning_rate=LEARNING_RATE, micro_batch_size=4, **agent_kwargs)
    agent = agent_class(Policy("tiny-random"), kl=KLHook(**kl_kwargs), config=config)
    params = {n: p for n, p in agent.policy.model.named_parameters() if p.requires_grad}
    stepped: list[dict] = []
    agent.optimizer.register_step_pre_hook(
        lambda *_: stepped.append({n: p.grad.clone() for n, p in params.items() if p.grad is not None}))
    metrics = agent.update(batch)
    return {"params": {n: p.detach().clone() for n, p in params.items()}, "grads": stepped, "metrics": metrics}


def rank_worker(out_dir: str) -> None:
    """Entry point of each launched rank: its half of the rounds through the trainer's code path."""
    from agents import distributed

    distributed.setup()
    world_size, rank = distributed.world_size(), distributed.rank()
    assert world_size == WORLD_SIZE, f"launched {world_size} ranks, want {WORLD_SIZE}"
    torch.set_num_threads(1)
    rounds = make_rounds()
    share = len(rounds) // world_size
    local = rounds_batch(rounds[rank * share:(rank + 1) * share])
    for name in CASES:
        torch.save({"world_size": world_size, "rows": len(local), **one_update(name, local)},
                   Path(out_dir) / f"{name}-rank{rank}.pt")
    # a NaN gradient on rank 1 alone: every rank must refuse the step (a rank stepping alone would hang or diverge)
    agent = GRPOAgent(Policy("tiny-random"))
    for p in agent.policy.model.parameters():
        p.grad = torch.full_like(p, float("nan") if rank == 1 else 0.0)
    try:
        agent.optimizer_step()
        outcome = "stepped"
    except FloatingPointError:
        outcome = "refused"
    (Path(out_dir) / f"nan-rank{rank}.txt").write_text(outcome)


# ---- tests -------------------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("one_torch_thread")
def test_accelerate_two_ranks_update_equals_one_process(tmp_path):
    launch([str(Path(__file__).resolve()), str(tmp_path)])
    assert_ranks_equal_one_process(tmp_path)


@pytest.mark.usefixtures("one_torch_thread")
def test_accelerate_two_machines_of_one_process_update_equals_one_process(tmp_path):
    machines = start_machines([str(Path(__file__).resolve()), str(tmp_path)], free_port())
    outputs = [m.communicate(timeout=300)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    assert_ranks_equal_one_process(tmp_path)


def test_accelerate_two_machines_train_and_a_dying_rank_stops_the_other_with_a_clear_error(tmp_path):
    import signal
    import time

    common = ["-m", "agents.train", "--env", "LSP-Arith-Data-v0", "--model", "tiny-random", "--num-queries", "2",
              "--num-generations", "2", "--max-completion-length", "8", "--seed", "0"]
    machines = start_machines([*common, "--iterations", "2", "--output-dir", str(tmp_path / "ok")], free_port())
    outputs = [m.communicate(timeout=300)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    lines = [json.loads(line) for line in (tmp_path / "ok" / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], line["world_size"]) for line in lines] == [(1, 2), (2, 2)]

    run = tmp_path / "dies"
    machines = start_machines([*common, "--iterations", "100000", "--save-every", "2", "--ddp-timeout", "60",
                               "--output-dir", str(run)], free_port())
    try:
        deadline = time.monotonic() + 240
        while not (run / "latest").exists() and time.monotonic() < deadline and machines[0].poll() is None:
            time.sleep(0.5)
        assert (run / "latest").exists(), "the two-machine run never checkpointed"
        worker = subprocess.run(["pgrep", "-P", str(machines[1].pid)], capture_output=True, text=True).stdout.split()
        os.kill(int(worker[0]), signal.SIGKILL)  # rank 1 dies mid-run
        start = time.monotonic()
        output = machines[0].communicate(timeout=120)[0]  # the survivor exits, bounded: no hang
        assert time.monotonic() - start < 120 and machines[0].returncode != 0
        assert "another process of the run died or cannot be reached" in output and "--resume" in output
    finally:
        for m in machines:
            m.kill()
            m.communicate()


def assert_ranks_equal_one_process(tmp_path):
    whole = rounds_batch(make_rounds())
    for name in CASES:
        single = one_update(name, whole)
        ranks = [torch.load(tmp_path / f"{name}-rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]
        assert [r["world_size"] for r in ranks] == [WORLD_SIZE] * WORLD_SIZE
        assert sum(r["rows"] for r in ranks) == len(whole) and ranks[0]["rows"] != ranks[1]["rows"]  # uneven halves
        for rank in ranks:
            # the gradient every rank stepped on is the one-process gradient (summed over ranks, then clipped) ...
            assert len(rank["grads"]) == len(single["grads"])
            for got, want in zip(rank["grads"], single["grads"]):
                assert got.keys() == want.keys()
                for key in want:
                    torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-7, msg=f"{name} grad {key}")
            # ... so the parameters after the update are too
            for key, want in single["params"].items():
                torch.testing.assert_close(rank["params"][key], want, rtol=0, atol=ATOL, msg=f"{name} param {key}")
            # metrics describe the global batch (grad_norm: the global norm before the clip)
            for key in COMPARED:
                assert (key in rank["metrics"]) == (key in single["metrics"]), (name, key)
                if key in single["metrics"]:
                    assert rank["metrics"][key] == pytest.approx(single["metrics"][key], rel=1e-5,
                                                                 abs=1e-7), (name, key)
        assert single["metrics"]["grad_norm"] > 0 and single["metrics"]["trained_samples"] > 0
        assert all(torch.equal(ranks[0]["params"][k], ranks[1]["params"][k]) for k in single["params"])  # in sync
    assert [(tmp_path / f"nan-rank{r}.txt").read_text() for r in range(WORLD_SIZE)] == ["refused"] * WORLD_SIZE


def test_accelerate_launch_trains_with_two_ranks_rank0_writes_and_resumes(tmp_path):
    run = tmp_path / "run"
    common = ["-m", "agents.train", "--env", "LSP-Arith-Data-v0", "--agent", "grpo", "--model", "tiny-random",
              "--num-queries", "2", "--num-generations", "2", "--output-dir", str(run), "--seed", "0"]
    launch([*common, "--iterations", "2", "--report-to", "tensorboard"])
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]  # rank 0 alone wrote
    assert len(list((run / "tensorboard").glob("events.out.tfevents*"))) == 1  # and alone reported
    assert [line["world_size"] for line in lines] == [2, 2]
    assert all(line["tokens/solver"] > 0 and "reward/solver" in line for line in lines)
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (run / "latest").read_text() == "checkpoint-2" and (run / "metrics.png").exists()
    rng = torch.load(run / "checkpoint-2" / "rng-ranks.pt", weights_only=False)
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])  # a sampling stream per rank

    launch([*common, "--iterations", "3", "--resume"])  # every rank loads checkpoint-2
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert [line["world_size"] for line in lines] == [2, 2, 2]
    assert (run / "latest").read_text() == "checkpoint-3"


def test_accelerate_num_queries_must_divide_across_ranks(monkeypatch):
    from agents import distributed
    from agents.train import parse_args, validate

    cfg, agent_cfg = parse_args(["--model", "tiny-random", "--num-queries", "3"])
    monkeypatch.setattr(distributed, "world_size", lambda: 2)  # what a 2-rank launch reports
    with pytest.raises(ValueError, match=r"--num-queries 3 is not divisible by the 2 processes.*e\.g\. 4"):
        validate(cfg, agent_cfg)
    cfg.num_queries = 4
    validate(cfg, agent_cfg)


if __name__ == "__main__":  # a rank started by test_accelerate_two_ranks_update_equals_one_process
    rank_worker(sys.argv[1])
