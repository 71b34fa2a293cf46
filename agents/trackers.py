"""Experiment trackers for ``lsp-train --report-to`` (TRL's name and values): ``tensorboard`` (event files under
``<output_dir>/tensorboard/``) and ``wandb`` (files under ``<output_dir>/wandb/``; offline unless ``WANDB_MODE`` or a
W&B login says otherwise; the run id kept in ``<output_dir>/wandb-run-id`` so ``--resume`` continues the same run).
Rank 0 reports every numeric field of each ``metrics.jsonl`` line at its ``step``, and the resolved config once.
Both are optional extras; a missing one fails in :func:`check_report_to`, before any model loads.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import secrets
from pathlib import Path

REPORT_TO = ("none", "tensorboard", "wandb")  # the package of each tracker has its name


def parse_report_to(value: str | list[str] | None) -> list[str]:
    """``"none"``, one name, a comma-separated list or a list -> the trackers to use (``[]`` for none)."""
    names = value if isinstance(value, list) else (value or "none").split(",")
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in REPORT_TO]
    if unknown:
        raise ValueError(f"--report-to {','.join(unknown)}: use none, or one or more of tensorboard, wandb")
    return [n for n in dict.fromkeys(names) if n != "none"]


def check_report_to(value) -> list[str]:
    """The trackers to use; raises ImportError naming the extra to install when one is missing."""
    names = parse_report_to(value)
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise ImportError(f"--report-to {name} needs the {name!r} package: pip install 'lsp-gym[{name}]'")
    return names


class Trackers:
    """The chosen trackers of one run: ``log(metrics)`` after each ``metrics.jsonl`` line, ``close()`` at the end."""

    def __init__(self, names: list[str], output_dir: Path, config: dict, resume: bool = False):
        self.writers, self.run = [], None
        output_dir = Path(output_dir)
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"))
            writer.add_text("config", "```\n" + json.dumps(config, indent=1, default=str) + "\n```", global_step=0)
            self.writers.append(writer)
        if "wandb" in names:
            import wandb

            id_file = output_dir / "wandb-run-id"
            run_id = id_file.read_text().strip() if resume and id_file.exists() else secrets.token_hex(4)
            id_file.write_text(run_id)
            mode = os.environ.get("WANDB_MODE") or ("online" if _wandb_logged_in() else "offline")
            (output_dir / "wandb").mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "lsp-gym"), id=run_id, resume="allow",
                                  dir=str(output_dir), config=config, mode=mode, name=output_dir.name)

    def log(self, metrics: dict) -> None:
        step = int(metrics["step"])
        scalars = {k: float(v) for k, v in metrics.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        for writer in self.writers:
            for key, value in scalars.items():
                writer.add_scalar(key, value, global_step=step)
            writer.flush()
        if self.run is not None:
            self.run.log(scalars, step=step)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.run is not None:
            self.run.finish()


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")
