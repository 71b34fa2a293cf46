"""Multi-process helpers (accelerate / torch.distributed): rank, world size, gathers and the gradient all-reduce.

Each is a no-op returning its input when no process group is up. Under ``accelerate launch`` (:func:`setup` starts
the group through accelerate's ``PartialState``) they are collectives: every rank calls them in the same order. They
call ``torch.distributed`` on the group itself, which is the one source of truth: accelerate's own helpers trust its
state object, which can say "one process" while a group is up (``PartialState()`` without ``cpu=True`` under a CPU
launch), and then silently gather nothing.
"""

from __future__ import annotations

import datetime
import functools

import torch
import torch.distributed as dist
from torch.utils._pytree import tree_flatten, tree_unflatten


class ProcessGroupError(RuntimeError):
    """A collective failed: another process of the run died or cannot be reached. Every rank raises it."""


def setup(timeout_seconds: float = 1800):
    """Start the process group when launched by ``accelerate launch`` (gloo on CPU, nccl on GPUs); returns the state.
    ``timeout_seconds``: how long a collective waits for a rank that stopped answering (transformers' ddp_timeout)."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # PartialState ignores ACCELERATE_USE_CPU: without cpu=True a CPU launch's state says DistributedType.NO, 1 process
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"),
                        timeout=datetime.timedelta(seconds=timeout_seconds))


def collective(fn):
    """Turn a failed collective (a peer died, timed out or was unreachable) into a :class:`ProcessGroupError`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RuntimeError as err:
            if not (dist.is_available() and dist.is_initialized()) or isinstance(err, ProcessGroupError):
                raise
            cause = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            raise ProcessGroupError(f"rank {dist.get_rank()}: {fn.__name__} failed, another process of the run died "
                                    f"or cannot be reached ({cause})") from err

    return wrapper


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


def is_main() -> bool:
    """Rank 0: the one process that writes metrics, checkpoints, plots and the console view."""
    return rank() == 0


def _device() -> torch.device:
    # nccl reduces only GPU tensors (on the device accelerate set for this rank); gloo takes CPU ones
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


@collective
def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


@collective
def gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (pickled: small things only)."""
    if world_size() == 1:
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_rows(*columns: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], slice]:
    """Concatenate 1-D per-row tensors of every rank (any row counts) in rank order, and this rank's slice of them.
    Values travel as Python numbers, so float32 / int64 entries come back bit for bit."""
    if world_size() == 1:
        return columns, slice(0, len(columns[0]))
    per_rank = gather_objects([column.tolist() for column in columns])
    start = sum(len(rows[0]) for rows in per_rank[: rank()])
    gathered = tuple(torch.tensor([x for rows in per_rank for x in rows[k]], dtype=column.dtype)
                     for k, column in enumerate(columns))
    return gathered, slice(start, start + len(columns[0]))


@collective
def sum_across(tree):
    """The element-wise sum over ranks of a nested dict / list of numbers (metric totals): one collective."""
    if world_size() == 1:
        return tree
    leaves, spec = tree_flatten(tree)
    total = torch.tensor([float(x) for x in leaves], dtype=torch.float64, device=_device())
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return tree_unflatten(total.tolist(), spec)


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on any: decisions that must agree (stop now?) so no rank waits alone."""
    return bool(sum_across([float(flag)])[0]) if world_size() > 1 else flag


@collective
def all_reduce_gradients(params: list[torch.Tensor]) -> None:
    """SUM each parameter's gradient over ranks, in place.

    A parameter no rank has a gradient for keeps ``grad=None`` (AdamW then skips it, as in one process); one that
    only some ranks have a gradient for gets zeros on the others before the sum.
    """
    if world_size() == 1:
        return
    device = _device()
    has_grad = torch.tensor([float(p.grad is not None) for p in params], device=device)
    dist.all_reduce(has_grad, op=dist.ReduceOp.SUM)
    for p, present in zip(params, has_grad.tolist()):
        if not present:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grad = p.grad.to(device)  # a no-op unless a CPU model runs under nccl
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        if grad is not p.grad:
            p.grad.copy_(grad)
