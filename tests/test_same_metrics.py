"""agents/ was restructured without changing what it computes: lsp-train's metrics equal those recorded before.

``tests/data/metrics_before_redesign.json`` holds the metrics of short ``lsp-train`` runs on the tiny random model,
recorded by this file's own ``record`` mode. The first record came from 986b4dd, the last commit before the
restructuring (one learner loop for every agent, the round as a record from the env, one Role enum, one tokens
module), and the restructured code matched it exactly. It was re-recorded after the memory-lean training forms
(``lsp_env.models.lean_training``, ``token_logps``; again when their chunk size changed, and when the LM head went
to vocabulary slices), which sum the same products in another order; and again when the HF backend's sampler became
an inverse-CDF draw (:class:`lsp_env.tokens.InverseCDFSampler`: the same distribution, other samples). The last
re-record only added the rollout's new ``valid_queries`` metric; every other field equalled the record before
it. The lean forms' first case compared here differed from the record in the 7th significant digit (a loss, a KL
and the gradient norm at its second step); ``tests/test_lean.py`` checks their log-probs and gradients against the
plain model's. The commit is in the file. The runs cover PG with KL in the loss and the paper's sequence loss, and
GRPO with KL in the reward and two passes per batch (num_iterations = 2, old log-probs), each in one process and in
two accelerate ranks. Every field but the timings must be equal: a change of behaviour shows here first.

Float results can differ between CPUs (kernels, vector widths), and one different sampled token changes everything
after it, so the comparison runs where the record was made (same torch version, CPU model and thread count) and
is skipped elsewhere; re-record after a deliberate change of behaviour:

    python tests/test_same_metrics.py record    # from the commit to compare against, then commit the file
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "tests/data/metrics_before_redesign.json"
COMMON = ["--env", "LSP-Zero-v0", "--reward", "length", "--model", "tiny-random", "--iterations", "2",
          "--num-queries", "2", "--num-generations", "3", "--max-completion-length", "12", "--learning-rate", "1e-3",
          "--seed", "3"]
CASES = {
    "pg-kl-loss-sequence": ["--agent", "pg", "--beta", "0.05", "--kl-placement", "loss", "--loss-type", "sequence"],
    "grpo-kl-reward-mu2": ["--agent", "grpo", "--beta", "0.05", "--kl-placement", "reward", "--num-iterations", "2",
                           "--scale-rewards", "batch"],
}
PROCESSES = (1, 2)
VOLATILE = ("time/", "perf/", "memory/", "tokens_per_second")  # timings and what depends on them


def deterministic(line: dict) -> dict:
    return {k: v for k, v in line.items() if not k.startswith(VOLATILE)}


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"torch": torch.__version__, "cpu": cpu, "threads": 1}


def run(case: str, processes: int, out: Path) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "ACCELERATE_USE_CPU": "true"}
    args = ["-m", "agents.train", *COMMON, *CASES[case], "--output-dir", str(out)]
    if processes == 1:
        command = [sys.executable, *args]
    else:
        command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return [deterministic(json.loads(line)) for line in (out / "metrics.jsonl").read_text().splitlines()]


def runs() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return {f"{case}-{n}proc": run(case, n, Path(tmp) / f"{case}-{n}") for case in CASES for n in PROCESSES}


@pytest.mark.slow
@pytest.mark.skipif(not RECORD.exists(), reason="no record")
def test_metrics_equal_those_recorded_before_the_redesign():
    record = json.loads(RECORD.read_text())
    if record["machine"] != machine():
        pytest.skip(f"recorded on {record['machine']}, this is {machine()}: float results may differ")
    now = runs()
    assert now.keys() == record["runs"].keys()
    for name, lines in record["runs"].items():
        assert len(now[name]) == len(lines), name
        for step, (before, after) in enumerate(zip(map(deterministic, lines), now[name]), 1):
            assert after.keys() == before.keys(), (name, step, sorted(set(after) ^ set(before)))
            different = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
            assert not different, (name, step, different)


if __name__ == "__main__" and sys.argv[1:] == ["record"]:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps({"commit": commit, "machine": machine(), "runs": runs()}, indent=1) + "\n")
    print(f"recorded {RECORD} at {commit}")
