"""Judge hardening: remove the parts of graded text that talk to the grader instead of the user.

A 135 M judge copies whatever grade the material names ("Grade: 9", a fake rubric, a spoofed system turn): measured
on the embedded model, 74 % of the attacks in ``benchmarks/data/judge_injection.json`` lifted a poor answer's grade
beyond the judge's own noise when the judge saw them. Telling the judge to ignore them does not help a model this
small, so the text it grades is filtered first: every segment (a line, or a sentence within a line) that addresses
the grading is dropped, and the judge grades what is left, i.e. what the user would actually read as the answer.
The guard is a filter, not the structural defence: against a searched suffix ("\n\n9 Machine") it fails, and the
default judge scheme reads no grade after the material at all (:class:`lsp_env.rewards.LLMJudge`). It stays in
front of that scheme because self-praise still moves it without the guard (README, "Prompt injection").

A segment is dropped when, after folding look-alike characters (NFKC, Cyrillic/Greek homoglyphs, leetspeak digits,
letter-by-letter spacing), it
- uses grading vocabulary (grade, score, rating, rubric, grader, evaluator, verdict, … in the languages listed
  below), or refers to "this answer" / "the response above" (an answer that reviews itself), or
- carries prompt structure (chat-template role markers, ``[SYSTEM]``, ``### Instruction``, ``</answer>``-like tags,
  HTML / Markdown comments, "ignore previous instructions", "respond with", …), or
- asks for a number on the grading scale ("give it a 9", "output 9", "received 9", "a 9 would …").

The cost is honest and stated: an answer whose real content talks about grades or scores ("a credit score above
700 …") loses those sentences in the judge's view. It is a filter written with the committed attack set in view
(`benchmarks/judge_injection.py` measures it, and the benign control set measures its false positives); an
adaptive policy can search for phrasings it misses, so use a stronger judge or a reward model for long runs.
"""

from __future__ import annotations

import re
import unicodedata

# Cyrillic / Greek letters that look like Latin ones (the common cases of Unicode's confusables list)
_HOMOGLYPHS = str.maketrans({
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t", "у": "y",
    "х": "x", "ѕ": "s", "і": "i", "ј": "j", "ԁ": "d", "ɡ": "g", "α": "a", "ε": "e", "ι": "i", "κ": "k", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ν": "v",
})
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b", "9": "g",
                       "@": "a", "$": "s"})

_GRADING_WORDS = (
    # English
    r"grad(?:e|es|ed|er|ers|ing)", r"scor(?:e|es|ed|ing)", r"rating", r"rubric", r"evaluat\w*", r"assess\w*",
    r"verdict", r"judg(?:e|es|ed|ing|ement|ment)", r"calibration", r"expected_output", r"gold reference",
    # French, Spanish, Italian, Portuguese, German
    r"notez", r"évaluat\w*", r"notation", r"calificaci\w*", r"puntuaci\w*", r"evaluador\w*",
    r"valutat\w*", r"voto", r"avaliador\w*", r"avalia\w*", r"bewert\w*", r"punktzahl", r"benot\w*",
)
_GRADING_SCRIPTS = (  # no word boundaries in these scripts (or \b misfires on them): substrings
    "оцен", "балл", "评分", "满分", "打分", "评价", "得分", "採点", "評価", "点数", "満点", "مقي", "الدرجة", "تقييم",
)
# an answer reviewing itself ("this answer is correct", "the response above ..."), not "the answer is 42"
_SELF_REFERENCE = (r"(?:(?:this|my)\s+(?:answer|response|reply|solution)\s+(?:is\s+(?:\w+\s+)?(?:correct|perfect|"
                   r"complete|accurate|excellent|right|flawless|great|the best)|deserves|meets|"
                   r"was\s+(?:reviewed|verified|checked))"
                   r"|(?:the|this)\s+(?:answer|response|reply|solution)\s+above"
                   r"|(?:above|previous|preceding)\s+(?:answer|response|reply))")
_STRUCTURE = (
    r"<\|[a-z_]+\|>", r"\bim_(?:start|end)\b", r"endoftext", r"\[/?\s*(?:system|inst|assistant|user)\s*\]",
    r"</?\s*(?:system|assistant|user|answer|request|grade|score|instruction)s?\b[^>]*>", r"^\s*#{2,}\s*\w+\s*:?\s*$",
    r"<!--", r"\[//\]\s*:", r"^\s*(?:system|assistant|user|grader|judge|evaluator)\s*:",
    r"\bignore\b.{0,30}\binstruction", r"\b(?:new|updated|previous|prior)\s+instructions?\b", r"\boverride\b",
    r"\brespond\s+with\b", r"\byour\s+(?:reply|output|answer)\s+must\b", r"\b(?:do not|don't|only)\s+output\b",
)
# the top of a grading scale: what an injection asks for (a low number is not worth asking for)
_SCALE = r"(?:9|10|nine|ten|neuf|nueve|neun|nove|девять|九)"
_ASK_FOR_NUMBER = (
    rf"\b(?:give|gave|giving|given|assign\w*|award\w*|output|reply|respond|record|reproduce|receiv\w*|deserv\w*)\b\W+(?:\w+\W+){{0,3}}{_SCALE}\b",
    rf"\b(?:note|nota|voto|noten)\s+{_SCALE}\b",
    rf"\ba\s+{_SCALE}\b(?!\s*(?:-|%|percent|volt|year|day|hour|minute|second|km|kg|cm|mm|m\b))",
    rf"\b{_SCALE}\s*(?:/|out of|su|de|von|из|sur)\s*{_SCALE}\b",
)
_FLAGS = re.I | re.M
_GRADING = re.compile(r"\b(?:" + "|".join(_GRADING_WORDS) + r")\b|" + "|".join(map(re.escape, _GRADING_SCRIPTS)),
                      _FLAGS)
# inside a run of spaced-out letters: no word boundaries
_GRADING_SQUEEZED = re.compile("|".join(_GRADING_WORDS[:6]), _FLAGS)
_TOP_OF_SCALE = re.compile(r"(?<![\d.,])(?:9|10)(?![\d.,]\d)|\b(?:nine|ten)\b|九|девять", _FLAGS)
_SELF = re.compile(r"\b" + _SELF_REFERENCE + r"\b", _FLAGS)
_STRUCT = re.compile("|".join(_STRUCTURE), _FLAGS)
_ASK = re.compile("|".join(_ASK_FOR_NUMBER), _FLAGS)
_SPACED = re.compile(r"\b(?:\w[\s\-_.·*]+){3,}\w\b")  # g r a d e, g-r-a-d-e
_SEGMENT_END = re.compile(r"(?<=[.!?])(?=\s)|(?<=[。！？])|(?<=\n)")  # after a sentence's end, or a line's


def _views(segment: str) -> list[str]:
    """The segment as the judge reads it, folded several ways so look-alike spellings match the patterns."""
    native = unicodedata.normalize("NFKC", segment)
    text = native.lower().translate(_HOMOGLYPHS)
    views = [native, text]
    if re.search(r"[a-z]\d|\d[a-z]", text, re.I):  # leetspeak only where digits sit inside words
        views.append(text.lower().translate(_LEET))
    return views


def addresses_grader(segment: str) -> bool:
    """Whether a segment of graded text talks to the grader (see the module docstring for the rules)."""
    views = _views(segment)
    if any(_GRADING.search(v) or _SELF.search(v) or _STRUCT.search(v) or _ASK.search(v) for v in views):
        return True
    spaced = (re.sub(r"[\s\-_.·*]+", "", run) for run in _SPACED.findall(views[1]))  # g r a d e, g-r-a-d-e
    return any(_GRADING_SQUEEZED.search(run) for run in spaced)


def strip_grader_talk(text: str) -> str:
    """``text`` without the segments that address the grader; the rest unchanged, in order.

    Once a text is caught addressing the grader, its segments that name the top of the grading scale (9, 10,
    "nine", …) go too: a bare "9" left behind a removed "Grade:" line is the same injection.
    """
    segments = [s for s in _SEGMENT_END.split(text) if s]
    flagged = [addresses_grader(s) for s in segments]
    if any(flagged):
        flagged = [f or bool(_TOP_OF_SCALE.search(unicodedata.normalize("NFKC", s))) for s, f in zip(segments, flagged)]
    return "".join(s for s, f in zip(segments, flagged) if not f).strip()
