"""Model FLOPs utilisation: the useful work of an iteration against the machine's measured matmul peak.

Useful FLOPs come from the model's shape (nanoGPT's ``estimate_mfu``, PaLM's appendix B): ``2 N + 4 L d T`` per token
through the forward pass (N parameters, L layers of width d attending to T tokens), three times that with backward.
Only the method's work counts: each distinct prompt once per pass, every completion token, a forward per generated
token; recomputation, padding and skipped zero-gradient rows do not, so a faster implementation shows a higher MFU.
The peak is a square-matmul probe, measured once per device, dtype and thread count and cached (``peak_flops.json``
in the model cache directory): MFU compares against what this machine's matmul reaches, not a datasheet.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import torch

from lsp_env import models
from lsp_env.tokens import distinct_prompts


@dataclass
class FlopCounter:
    """Useful FLOPs done since the last :meth:`reset`, per phase (``generate``, ``logps`` without grad, ``train``)."""

    params: int
    layers: int
    attention_width: int
    flops: dict = field(default_factory=lambda: {"generate": 0.0, "logps": 0.0, "train": 0.0})

    @classmethod
    def for_model(cls, model) -> FlopCounter:
        config = getattr(model, "config", None)
        layers = getattr(config, "num_hidden_layers", 0) or 0
        width = getattr(config, "hidden_size", 0) or 0
        return cls(sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()), layers, width)

    def forward(self, phase: str, tokens: int, context: int) -> None:
        """``tokens`` tokens through one forward pass, attending to ``context`` tokens each (x3 with backward)."""
        per_token = 2 * self.params + 4 * self.layers * self.attention_width * context
        self.flops[phase] += (3 if phase == "train" else 1) * tokens * per_token

    def sequences(self, phase: str, prompts: list[list[int]], completions: list[list[int]]) -> None:
        """Each distinct prompt once and every completion token, at the context of its row."""
        for row in distinct_prompts(prompts)[0]:
            self.forward(phase, len(prompts[row]), len(prompts[row]))
        for prompt, completion in zip(prompts, completions):
            self.forward(phase, len(completion), len(prompt) + len(completion))

    def reset(self) -> dict:
        """The FLOPs per phase since the last reset, then zero them."""
        done, self.flops = self.flops, {phase: 0.0 for phase in self.flops}
        return done


def peak_flops(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", size: int = 2048) -> float:
    """This machine's matmul FLOP/s in ``dtype`` (the best of a few timed square matmuls), measured once and cached."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    key = f"{device.type}:{name}:{dtype}:{torch.get_num_threads()}"
    path = models.cache_dir() / "peak_flops.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return float(known[key])
    a, b = (torch.full((size, size), 0.5, device=device, dtype=dtype) for _ in range(2))  # no RNG draw: runs seed alike
    times = []
    for _ in range(5):
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    flops = 2 * size**3 / min(times[1:])  # the first run warms the kernels up; the best run is the least disturbed
    try:  # best effort: another process may write at the same time, the value is the same kind of number
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps({**known, key: flops}, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass
    return flops


def mfu_metrics(flops: dict, seconds: dict, peak: float, tokens: int) -> dict:
    """``perf/*`` metrics of one iteration: MFU overall and per phase, and tokens per second."""
    total = sum(flops.values())
    out = {"perf/mfu": total / (seconds["iteration"] * peak) if seconds["iteration"] > 0 else 0.0,
           "perf/tokens_per_second": tokens / seconds["iteration"] if seconds["iteration"] > 0 else 0.0,
           "perf/flops": total}
    if seconds.get("generate"):
        out["perf/mfu_generate"] = flops["generate"] / (seconds["generate"] * peak)
    if seconds.get("update"):
        out["perf/mfu_update"] = (flops["train"] + flops["logps"]) / (seconds["update"] * peak)
    return out
