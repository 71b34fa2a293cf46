"""The training run's console: a rich progress bar and a live table of the latest metrics."""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

SHOWN = ("reward/challenger", "reward/solver", "invalid_query_rate", "loss/challenger", "loss/solver", "kl/challenger",
         "kl/solver", "tokens_per_second", "perf/mfu", "time/generate", "time/score", "time/update", "eval/headline",
         "hacking/number_ending", "hacking/suffix_sensitivity")


class Display:
    """Live view on a terminal; one printed line per iteration elsewhere (CI logs)."""

    def __init__(self, total: int, done: int = 0):
        self.console = Console()
        self.progress = Progress(TextColumn("iteration"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=self.console)
        self.task = self.progress.add_task("train", total=total, completed=done)
        self.live = Live(self.progress, console=self.console) if self.console.is_terminal else None  # rich: 4 Hz

    def __enter__(self):
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.__exit__(*exc)

    def update(self, step: int, metrics: dict, batch) -> None:
        self.progress.update(self.task, completed=step)
        shown = {k: metrics[k] for k in SHOWN if k in metrics}
        if self.live:
            table = Table("metric", "value", title=f"iteration {step}")
            for key, value in shown.items():
                table.add_row(key, f"{value:.4g}")
            sample = next((t for t, r in zip(batch.texts, batch.roles.tolist()) if r == 0), None)
            self.live.update(Group(self.progress, table, f"[dim]challenger:[/dim] {sample[:200]!r}" if sample else ""))
        else:
            self.console.print(f"iteration {step}: " + "  ".join(f"{k}={v:.4g}" for k, v in shown.items()),
                               highlight=False)
