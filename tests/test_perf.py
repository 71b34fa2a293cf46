"""perf/mfu: useful FLOPs counted from the model's shape against a measured matmul peak."""

import json

import pytest
import torch

from agents.perf import FlopCounter, mfu_metrics, peak_flops


def test_flops_count_each_distinct_prompt_once_and_backward_twice_the_forward():
    counter = FlopCounter(params=1000, layers=2, attention_width=8)
    counter.sequences("logps", [[1, 2, 3], [1, 2, 3], [4]], [[5, 6], [7], [8, 9, 10]])
    per_token = lambda context: 2 * 1000 + 4 * 2 * 8 * context  # noqa: E731
    want = 3 * per_token(3) + 2 * per_token(5) + 1 * per_token(4) + 1 * per_token(1) + 3 * per_token(4)
    assert counter.flops["logps"] == want
    counter.sequences("train", [[1, 2, 3]], [[5, 6]])
    assert counter.flops["train"] == 3 * (3 * per_token(3) + 2 * per_token(5))
    assert counter.reset()["logps"] == want and counter.flops == {"generate": 0.0, "logps": 0.0, "train": 0.0}


def test_mfu_is_flops_over_time_times_peak():
    m = mfu_metrics({"generate": 2e9, "logps": 1e9, "train": 3e9}, {"iteration": 2.0, "generate": 1.0, "update": 1.0},
                    peak=1e10, tokens=100)
    assert m["perf/mfu"] == pytest.approx(0.3) and m["perf/mfu_generate"] == pytest.approx(0.2)
    assert m["perf/mfu_update"] == pytest.approx(0.4) and m["perf/tokens_per_second"] == 50


def test_the_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("LSP_CACHE_DIR", str(tmp_path))
    first = peak_flops(torch.float32, size=256)
    assert first > 1e8
    (key, value), = json.loads((tmp_path / "peak_flops.json").read_text()).items()
    assert value == first and "float32" in key
    assert peak_flops(torch.float32, size=256) == first  # read back, not measured again


def test_measuring_the_peak_leaves_the_seeded_streams_alone(tmp_path, monkeypatch):
    """A first run on a fresh machine measures the peak, later runs read it: both must then sample alike."""
    monkeypatch.setenv("LSP_CACHE_DIR", str(tmp_path))
    state = torch.get_rng_state()
    peak_flops(torch.float32, size=64)
    assert torch.equal(torch.get_rng_state(), state)


def test_a_training_run_reports_mfu(tmp_path, one_torch_thread):
    from agents.train import main

    main(["--env", "LSP-Arith-v0", "--model", "tiny-random", "--iterations", "1", "--num-queries", "2",
          "--num-generations", "2", "--max-completion-length", "8", "--output-dir", str(tmp_path / "run")])
    (line,) = [json.loads(row) for row in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert 0 < line["perf/mfu"] < 1 and line["perf/flops"] > 0 and line["perf/tokens_per_second"] > 0
