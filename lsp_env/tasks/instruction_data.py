"""The instruction-following data lists, generated from fixed seeds: ``python benchmarks/instruction_data.py``.

A request is a base request (a task frame about a topic, e.g. "Write a short poem about honeybees.") followed by
one to three instructions, each written by a template of :mod:`lsp_env.tasks.instructions`. Every request is kept
only when :func:`instructions.recognise` finds exactly its instructions, with no problem, and an answer of at most
``max_words`` words can follow them all. The training list and the held-out set draw their topics from two disjoint
lists, so no held-out topic is ever trained on.

``dev`` and ``test`` are written by the training list's frames and templates: they hold out the topic only. The
``test_rephrased`` split also holds out the wording: its task frames (``REPHRASED_FRAMES``) and instruction
sentences (``REPHRASED_TEMPLATES``) appear nowhere in the training list or in the challenger's examples, as a user's
own words would not (IFEval's requests are written by people).

- ``lsp_env/data/instructions_train.txt``: ``TRAIN_SIZE`` requests, one a line (``LSP-IF-Data-v0``'s prompts).
- ``lsp_env/data/instructions_eval.json``: ``{"dev": [...], "test": [...], "test_rephrased": [...]}``, IFEval's
  item fields (``key``, ``prompt``, ``instruction_id_list``, ``kwargs``) plus ``topic``. Every held-out request's
  first instruction cycles through all the instruction ids, so each id is measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import instructions as ifx
from .instructions import AT_LEAST, LESS_THAN

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
REPHRASED_FRAMES = (
    "Write a limerick about {}.", "Compose an email to a friend about {}.", "Draft a short speech about {}.",
    "Write a travel guide entry on {}.", "Describe a day in the life of someone who loves {}.",
    "Share some fun facts about {}.", "Write a newspaper article about {}.", "Write a review of {}.",
)
# the same ids, arguments and fields as instructions.TEMPLATES, in other words (test_rephrased only)
REPHRASED_TEMPLATES: dict[str, list[tuple[str | None, str]]] = {
    "length_constraints:number_words": [
        (AT_LEAST, "The response must be {n} words long or longer."),
        (AT_LEAST, "Make sure your reply runs to at least {n_word} words."),
        (LESS_THAN, "Limit your reply to fewer than {n} words."), (LESS_THAN, "Do not exceed {m} words.")],
    "length_constraints:number_sentences": [
        (AT_LEAST, "Make your answer {n} sentences long or longer."),
        (AT_LEAST, "Write a minimum of {n_word} sentences."),
        (LESS_THAN, "Keep it shorter than {n} sentences."), (LESS_THAN, "Do not write more than {m_word} sentences.")],
    "length_constraints:number_paragraphs": [
        (None, "Organize your response into {n} paragraphs, putting the markdown divider *** between them."),
        (None, "Your reply needs {n_word} paragraphs separated by ***.")],
    "length_constraints:nth_paragraph_first_word": [
        (None, "Write {n} paragraphs with a blank line between them, and begin paragraph {nth_paragraph} with the word "
               "{first_word}."),
        (None, "Your answer needs {n_word} paragraphs separated by blank lines, and the {ordinal} paragraph has to "
               "start with the word \"{first_word}\".")],
    "keywords:existence": [
        (None, "Be sure to mention the words {keywords}."),
        (None, "Your answer has to include the keywords {keywords}.")],
    "keywords:frequency": [
        (AT_LEAST, "Use the word {keyword} no fewer than {n} times."),
        (AT_LEAST, "The word \"{keyword}\" has to show up at least {n} times."),
        (LESS_THAN, "Use the word {keyword} less than {n} times."),
        (LESS_THAN, "The word \"{keyword}\" must occur fewer than {n} times.")],
    "keywords:forbidden_words": [
        (None, "Never use the words {forbidden_or}."), (None, "Leave out the words {forbidden}.")],
    "keywords:letter_frequency": [
        (AT_LEAST, "The letter {letter} has to occur at least {n} times."),
        (LESS_THAN, "The letter {letter} should occur fewer than {n} times.")],
    "change_case:english_lowercase": [
        (None, "Only lowercase letters are allowed in your answer."),
        (None, "Reply in lowercase, with no capital letters at all.")],
    "change_case:english_capital": [
        (None, "Write the whole reply in capital letters."), (None, "Your answer must be in uppercase letters only.")],
    "change_case:capital_word_frequency": [
        (AT_LEAST, "Include at least {n} words written in all capitals."),
        (LESS_THAN, "Use fewer than {n} words written in all capital letters.")],
    "punctuation:no_comma": [
        (None, "Commas are not allowed in your reply."), (None, "Avoid using any commas.")],
    "startend:end_checker": [
        (None, "Close your reply with the exact phrase \"{end_phrase}\""),
        (None, "Conclude your answer with the words \"{end_phrase}\"")],
    "startend:quotation": [
        (None, "Put double quotes around your entire answer."),
        (None, "Your whole reply should be wrapped in double quotation marks.")],
    "detectable_format:title": [
        (None, "Include a title in double angular brackets, for example <<a day out>>."),
        (None, "Start with a title inside double angle brackets, like <<the title>>.")],
    "detectable_format:number_bullet_lists": [
        (None, "Include exactly {n} bullet points using markdown, like * point."),
        (None, "Use a bulleted list with exactly {n_word} items.")],
    "detectable_format:number_highlighted_sections": [
        (None, "Use markdown to highlight at least {n} parts of your answer, like *this part*."),
        (None, "Mark at least {n_word} highlighted parts with markdown, e.g. *important*.")],
    "detectable_format:multiple_sections": [
        (None, "Split your response into {n} sections, each beginning with {section_spliter} and its number, e.g. "
               "{section_spliter} 1."),
        (None, "Organize the answer in {n_word} sections, marked {section_spliter} 1, {section_spliter} 2 and so "
               "on.")],
    "detectable_format:json_format": [
        (None, "Your whole answer should be valid JSON."), (None, "Return the entire response in JSON format.")],
    "detectable_format:constrained_response": [
        (None, "Respond with only one of these: \"My answer is yes.\", \"My answer is no.\", \"My answer is maybe.\""),
        (None, "Your reply must be one of My answer is yes. / My answer is no. / My answer is maybe.")],
    "detectable_content:number_placeholders": [
        (None, "Add at least {n} placeholders in square brackets, for example [location]."),
        (None, "Leave at least {n_word} placeholders written in square brackets, like [name].")],
    "detectable_content:postscript": [
        (None, "Please end your reply with a postscript that starts with {postscript}"),
        (None, "Add a {postscript_marker} at the very end.")],
    "combination:repeat_prompt": [
        (None, "Repeat the request exactly as written before you answer it, without this sentence."),
        (None, "Repeat my request word for word before answering, but leave out this sentence.")],
    "combination:two_responses": [
        (None, "Write two different answers and separate them with six asterisks (******)."),
        (None, "Give two alternative responses separated by ******.")],
}
TRAIN_SIZE = 1000
EVAL_SIZES = {"dev": 120, "test": 240}
REPHRASED_SIZE = 240
# ids that a generated request never combines: no answer can follow both, or one hides the other's phrasing
_EXCLUSIVE = [{"change_case:english_lowercase", "change_case:english_capital"},
              {"length_constraints:number_paragraphs", "length_constraints:nth_paragraph_first_word"}]


def generate_request(rng: np.random.Generator, topics=TRAIN_TOPICS, first: str | None = None,
                     max_words: int = ifx.DEFAULT_MAX_ANSWER_WORDS, attempts: int = 200, frames=FRAMES,
                     templates: dict = ifx.TEMPLATES) -> dict:
    """One request with 1–3 instructions (``first`` the id of its first one, if given), as an IFEval item, written
    with ``frames`` and ``templates``."""
    for _ in range(attempts):
        topic = topics[int(rng.integers(len(topics)))]
        base = frames[int(rng.integers(len(frames)))].format(topic)
        count = 1 + int(rng.choice(3, p=[0.4, 0.4, 0.2]))
        ids = [first] if first else []
        while len(ids) < count:
            candidate = ifx.INSTRUCTION_IDS[int(rng.integers(len(ifx.INSTRUCTION_IDS)))]
            if candidate not in ids and not any({candidate, other} <= pair for pair in _EXCLUSIVE for other in ids):
                ids.append(candidate)
        text, chosen = ifx.compose_request(base, [ifx.sample_instruction(i, rng) for i in ids], rng, templates)
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


def heldout_requests(sizes: dict[str, int] = EVAL_SIZES, seed: int = 20231114,
                     rephrased: int = REPHRASED_SIZE) -> dict[str, list[dict]]:
    """``dev`` and ``test`` (``sizes``), then ``rephrased`` requests of ``test_rephrased`` from a stream of their
    own (adding that split left the first two as they were), keys numbered on."""
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
    rng = np.random.default_rng(seed + 1)
    splits["test_rephrased"] = [
        {"key": start + k, **generate_request(rng, EVAL_TOPICS, first=ifx.INSTRUCTION_IDS[k % len(ifx.INSTRUCTION_IDS)],
                                              frames=REPHRASED_FRAMES, templates=REPHRASED_TEMPLATES)}
        for k in range(rephrased)]
    return splits


def write_data_files(data: Path = Path(__file__).resolve().parent.parent / "data") -> None:
    """Regenerate ``instructions_train.txt`` and ``instructions_eval.json`` in ``data`` (the package's by default)."""
    (data / "instructions_train.txt").write_text("\n".join(training_requests()) + "\n", encoding="utf-8")
    (data / "instructions_eval.json").write_text(json.dumps(heldout_requests(), indent=1) + "\n", encoding="utf-8")

