"""The instruction-following data lists, generated from fixed seeds: ``python benchmarks/instruction_data.py``.

A request is a base request (a task frame about a topic, e.g. "Write a short poem about honeybees.") followed by
one to three instructions, each written by a template of :mod:`lsp_env.tasks.instructions`. Every request is kept
only when :func:`instructions.recognise` finds exactly its instructions, with no problem, and an answer of at most
``max_words`` words can follow them all. The training list and the held-out set draw their topics from two disjoint
lists, so no held-out topic is ever trained on.

- ``lsp_env/data/instructions_train.txt``: ``TRAIN_SIZE`` requests, one a line (``LSP-IF-Data-v0``'s prompts).
- ``lsp_env/data/instructions_eval.json``: ``{"dev": [...], "test": [...]}``, IFEval's item fields (``key``,
  ``prompt``, ``instruction_id_list``, ``kwargs``) plus ``topic``. Every held-out request's first instruction cycles
  through all the instruction ids, so each id is measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import instructions as ifx

FRAMES = (
    "Write a short poem about {}.", "Describe {} in plain language.", "Tell a short story about {}.",
    "Explain why {} matters.", "Write a blog post about {}.", "Give advice to someone curious about {}.",
    "Write a diary entry about {}.", "Summarize what a beginner should know about {}.",
    "Write a product pitch inspired by {}.", "Write a friendly note to a neighbour about {}.",
)
TRAIN_TOPICS = (
    "honeybees", "the night sky", "a rainy morning", "learning to swim", "an old bicycle", "the first day of school",
    "volcanoes", "a busy train station", "baking bread", "a lost umbrella", "mountain hiking", "recycling",
    "a small fishing village", "the moon landing", "houseplants", "a thunderstorm", "chess", "street food",
    "a lighthouse keeper", "autumn leaves", "solar power", "a library at midnight", "penguins", "a birthday party",
    "public parks", "an old clock", "deserts", "playing the violin", "a snowy village", "friendship",
    "coral reefs", "a job interview", "the ocean tides", "a family dinner", "wind turbines", "a vegetable garden",
    "a city bus", "origami", "the history of maps", "a long road trip",
)
EVAL_TOPICS = (
    "octopuses", "a jazz club", "glaciers", "a robot chef", "the invention of the telephone", "a haunted house",
    "beekeeping in cities", "a marathon runner", "tea ceremonies", "a desert caravan", "paper airplanes",
    "the northern lights", "a museum guard", "sourdough starters", "hot air balloons", "a school science fair",
    "rock climbing", "a street musician", "the water cycle", "an abandoned castle", "knitting", "a farmers market",
    "submarines", "a kite festival", "owls", "a night shift nurse", "tidal pools", "an ice cream truck",
)
TRAIN_SIZE = 1000
EVAL_SIZES = {"dev": 120, "test": 240}
# ids that a generated request never combines: no answer can follow both, or one hides the other's phrasing
_EXCLUSIVE = [{"change_case:english_lowercase", "change_case:english_capital"},
              {"length_constraints:number_paragraphs", "length_constraints:nth_paragraph_first_word"}]


def generate_request(rng: np.random.Generator, topics=TRAIN_TOPICS, first: str | None = None,
                     max_words: int = ifx.DEFAULT_MAX_ANSWER_WORDS, attempts: int = 200) -> dict:
    """One request with 1–3 instructions (``first`` the id of its first one, if given), as an IFEval item."""
    for _ in range(attempts):
        topic = topics[int(rng.integers(len(topics)))]
        base = FRAMES[int(rng.integers(len(FRAMES)))].format(topic)
        count = 1 + int(rng.choice(3, p=[0.4, 0.4, 0.2]))
        ids = [first] if first else []
        while len(ids) < count:
            candidate = ifx.INSTRUCTION_IDS[int(rng.integers(len(ifx.INSTRUCTION_IDS)))]
            if candidate not in ids and not any({candidate, other} <= pair for pair in _EXCLUSIVE for other in ids):
                ids.append(candidate)
        text, chosen = ifx.compose_request(base, [ifx.sample_instruction(i, rng) for i in ids], rng)
        found = ifx.recognise(text)
        if found.problems or not ifx.same_instructions(found.instructions, chosen) or ifx.problems(chosen, max_words):
            continue
        return {"prompt": text, "instruction_id_list": [i.id for i in chosen], "kwargs": [i.kwargs for i in chosen],
                "topic": topic}
    raise RuntimeError(f"no valid request in {attempts} attempts (first={first!r})")


def training_requests(n: int = TRAIN_SIZE, seed: int = 0) -> list[str]:
    """n distinct training requests on the training topics."""
    rng = np.random.default_rng(seed)
    requests: dict[str, None] = {}
    while len(requests) < n:
        requests[generate_request(rng)["prompt"]] = None
    return list(requests)


def heldout_requests(sizes: dict[str, int] = EVAL_SIZES, seed: int = 20231114) -> dict[str, list[dict]]:
    rng = np.random.default_rng(seed)
    total = sum(sizes.values())
    items = [generate_request(rng, EVAL_TOPICS, first=ifx.INSTRUCTION_IDS[i % len(ifx.INSTRUCTION_IDS)])
             for i in range(total)]
    items = [items[i] for i in rng.permutation(total)]
    for key, item in enumerate(items):
        item["key"] = key
    splits, start = {}, 0
    for name, size in sizes.items():
        splits[name] = [{"key": it["key"], **{k: v for k, v in it.items() if k != "key"}}
                        for it in items[start:start + size]]
        start += size
    return splits


def write_data_files(data: Path = Path(__file__).resolve().parent.parent / "data") -> None:
    """Regenerate ``instructions_train.txt`` and ``instructions_eval.json`` in ``data`` (the package's by default)."""
    (data / "instructions_train.txt").write_text("\n".join(training_requests()) + "\n", encoding="utf-8")
    (data / "instructions_eval.json").write_text(json.dumps(heldout_requests(), indent=1) + "\n", encoding="utf-8")

