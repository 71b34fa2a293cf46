"""The roles' prompts, query extraction, and chat rendering that keeps model text from forging special tokens.

One model plays both roles; the only thing that switches it between them is the system prompt + user turn built
here. Every text that comes from a model is cleaned by :func:`clean_text` before it is used anywhere.
"""

from __future__ import annotations

import enum
import re
import weakref


class Role(enum.IntEnum):
    """Who plays a turn: the observation's ``role``, and a sample's role in a batch (``Batch.roles``)."""

    CHALLENGER = 0
    SOLVER = 1

    @property
    def key(self) -> str:
        """``"challenger"`` / ``"solver"``: the key of the role's rewards in ``info`` and of its metrics."""
        return self.name.lower()


MAX_QUERY_CHARS = 1000    # a longer challenger output is not a usable query: the round ends, challenger penalised
MAX_ANSWER_CHARS = 4000   # a longer solver answer is cut to this before it is scored (info["answer_truncated"])
MAX_PROMPT_CHARS = 8192   # bound of the observation's text space; every prompt the env builds fits in it

CHALLENGER_SYSTEM = (
    "You are the challenger in a game against an AI assistant. You write one new instruction or question "
    "that a user could ask, chosen to be hard to answer well: it should need knowledge, reasoning or care. "
    "Reply with the query only, no preamble."
)
CHALLENGER_USER = "Write one new query for the assistant."
SOLVER_SYSTEM = "You are a helpful assistant. Answer the user's request as well as you can."

_QUERY_TAG = re.compile(r"<query>(.*?)</query>", re.S | re.I)
# a label is the word, an optional number, then ":", ". " or a spaced dash ("Query 2 - ");
# "Question-answering" is no label
_LABEL = re.compile(r"^\s*(?:\*\*)?(?:query|question|instruction|prompt|task)(?:\s*\d+)?"
                    r"(?:\s*:|\.\s|\s+[-–]\s)\s*(?:\*\*)?\s*", re.I)
_QUOTES = "\"'`“”‘’"


_SURROGATE = re.compile("[\ud800-\udfff]")  # in a str every surrogate code point is a lone one


def clean_text(text: str) -> str:
    """Make a model's text safe to tokenize and write: lone surrogates -> U+FFFD, NUL dropped."""
    return _SURROGATE.sub("\ufffd", text).replace("\x00", "")


def extract_query(text: str, max_chars: int = MAX_QUERY_CHARS) -> str | None:
    """The challenger's output -> one query, or None when it holds no usable query.

    Rule: if the text has ``<query>...</query>``, the first such span is the query; otherwise the whole text is.
    Then a leading label (``Query:``, ``Question 1 -``, ``**Instruction:**``), whitespace, and one pair of quotes
    around the whole query are stripped. A plain question with no markup is a valid query. Unusable: empty, no
    letter or digit, or longer than ``max_chars`` characters.
    """
    text = clean_text(text)
    tagged = _QUERY_TAG.search(text)
    query = tagged.group(1) if tagged else text
    query = _LABEL.sub("", query, count=1).strip()
    if len(query) > 1 and query[0] in _QUOTES and query[-1] in _QUOTES:
        query = query[1:-1].strip()
    if not query or len(query) > max_chars or not any(ch.isalnum() for ch in query):
        return None
    return query


def messages(system: str, user: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


_SPECIAL_PATTERNS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _special_pattern(tokenizer) -> re.Pattern | None:
    try:
        return _SPECIAL_PATTERNS[tokenizer]
    except (KeyError, TypeError):
        pass
    specials = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    specials |= set(tokenizer.all_special_tokens)
    specials = sorted((s for s in specials if s), key=len, reverse=True)
    pattern = re.compile("|".join(map(re.escape, specials))) if specials else None
    try:
        _SPECIAL_PATTERNS[tokenizer] = pattern
    except TypeError:
        pass
    return pattern


def escape_special_tokens(text: str, tokenizer) -> str:
    """Keep special-token strings inside content as text: a word joiner (U+2060) after their first character.

    Tokenizing a rendered chat template would otherwise turn ``<|im_end|>`` typed by a model into the real
    end-of-turn token, letting one role's text close its turn and open another's (or speak as the judge's system).
    """
    pattern = _special_pattern(tokenizer)
    return pattern.sub(lambda m: m.group(0)[0] + "\u2060" + m.group(0)[1:], text) if pattern else text


def render_chat(tokenizer, chat: list[dict], add_generation_prompt: bool = True, continue_with: str = "") -> list[int]:
    """Chat messages -> prompt token ids, with the content escaped so only the template's own markers are special.

    ``continue_with`` is text appended after the generation prompt (e.g. a forced ``"Score: "`` for a judge).
    """
    safe = [{"role": m["role"], "content": escape_special_tokens(clean_text(m["content"]), tokenizer)} for m in chat]
    text = tokenizer.apply_chat_template(safe, tokenize=False, add_generation_prompt=add_generation_prompt)
    return tokenizer(text + continue_with, add_special_tokens=False)["input_ids"]
