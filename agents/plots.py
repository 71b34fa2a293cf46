"""PNG plots of a run's ``metrics.jsonl`` (matplotlib, no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

PANELS = {
    "reward": ("reward/challenger", "reward/solver"), "loss": ("loss/challenger", "loss/solver"),
    "KL to reference": ("kl/challenger", "kl/solver"), "held-out solve rate": ("eval/headline", "eval/overall"),
    "invalid queries": ("invalid_query_rate",), "seconds per phase": ("time/generate", "time/score", "time/update"),
}


def plot_metrics(metrics_path: Path, out_path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    panels = {title: keys for title, keys in PANELS.items() if any(k in line for line in lines for k in keys)}
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels.items()):
        for key in keys:
            points = [(line["step"], line[key]) for line in lines if key in line]
            if points:
                ax.plot(*zip(*points), marker=".", label=key)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return Path(out_path)
