"""Verifiable instructions (IFEval's): checking them, finding them in prose, writing them, scoring answers.

The instruction ids, their arguments (``kwargs``, IFEval's names) and the strict rule of each checker are those of
IFEval (Zhou et al., 2023, arXiv 2311.07911), re-implemented here. lm-eval's own checkers call
``nltk.download`` at import and use ``langdetect``, neither of which works offline on a fresh machine, so the word,
sentence and capital-word counts below are our own regular expressions (rules stated per instruction).

| id | kwargs | strict rule: the answer ... |
|----|--------|-----------------------------|
| ``length_constraints:number_words`` | num_words, relation | has < / >= num_words words (``\\w+`` runs) |
| ``length_constraints:number_sentences`` | num_sentences, relation | has < / >= num_sentences sentences (1) |
| ``length_constraints:number_paragraphs`` | num_paragraphs | has exactly that many paragraphs split by ``***`` (2) |
| ``length_constraints:nth_paragraph_first_word`` | num_paragraphs, nth_paragraph, first_word | has exactly num_paragraphs paragraphs split by a blank line, and paragraph nth starts with first_word (3) |
| ``keywords:existence`` | keywords | contains every keyword (case-insensitive substring) |
| ``keywords:frequency`` | keyword, frequency, relation | contains the keyword < / >= frequency times |
| ``keywords:forbidden_words`` | forbidden_words | contains none of them as a whole word |
| ``keywords:letter_frequency`` | letter, let_frequency, let_relation | contains the letter (either case) < / >= times |
| ``change_case:english_lowercase`` | | ``str.islower()`` (no language check, see below) |
| ``change_case:english_capital`` | | ``str.isupper()`` (no language check) |
| ``change_case:capital_word_frequency`` | capital_frequency, capital_relation | has < / >= that many all-capital words (4) |
| ``punctuation:no_comma`` | | contains no ``,`` |
| ``startend:end_checker`` | end_phrase | ends with the phrase (case-insensitive, after stripping spaces and ``"``) |
| ``startend:quotation`` | | starts and ends with ``"`` (after stripping spaces), length > 1 |
| ``detectable_format:title`` | | has a line with ``<<title>>`` (non-empty title) |
| ``detectable_format:number_bullet_lists`` | num_bullets | has exactly that many lines starting with ``-``, or ``*`` not followed by ``*`` |
| ``detectable_format:number_highlighted_sections`` | num_highlights | has >= that many non-empty ``*...*`` or ``**...**`` spans |
| ``detectable_format:multiple_sections`` | section_spliter, num_sections | has >= that many ``<spliter> <digits>`` marks |
| ``detectable_format:json_format`` | | parses as JSON (an enclosing markdown fence allowed) |
| ``detectable_format:constrained_response`` | | contains "My answer is yes.", "My answer is no." or "My answer is maybe." |
| ``detectable_content:number_placeholders`` | num_placeholders | has >= that many ``[...]`` placeholders on one line |
| ``detectable_content:postscript`` | postscript_marker | contains the marker (``P.S.``: ``p.s.``, ``P.P.S``: ``p.p.s``, any case) |
| ``combination:repeat_prompt`` | prompt_to_repeat | starts with the request (case-insensitive) |
| ``combination:two_responses`` | | holds exactly two different non-empty parts split by ``******`` |

(1) A sentence ends at ``.``, ``!`` or ``?`` (a run, closing quotes or brackets allowed) before whitespace, or at a
blank line; common abbreviations (Mr., Dr., e.g., i.e., etc.) and initials do not end one; pieces without a letter
or digit do not count. IFEval uses nltk's punkt model. (2) Empty pieces count only at the ends. (3) Paragraphs
are split at ``"\\n\\n"``, empty ones dropped; the first word is lowercased and cut at the first ``. , ? ! ' "``.
(4) Words are ``\\w+`` runs joined by ``-`` or ``.``; a word is capital when ``str.isupper()``. IFEval tokenises
with nltk. Every "< / >=" is IFEval's relation ``"less than"`` / ``"at least"``. Left out:
``language:response_language`` (and the English test of the two case checks), which need a language detector that
is not installed. Loose variant (IFEval's): the strict rule holds for any of the answer, the answer without its
first line, without its last line, without both, and those four with every ``*`` removed. Both variants fail an
empty (all-whitespace) answer.

Recognising instructions in a request (:func:`recognise`) is tolerant: case-insensitive, numbers as digits or
words ("50", "fifty", "twenty-five", "one hundred"), typographic quotes as straight ones. Phrasings (N a number;
``X``, ``Y`` words, quoted or not):

* words / sentences: "at least N", "no fewer than N", "a minimum of N" (at least); "more than N", "over N",
  "longer than N", "exceed N" (at least N + 1); "less than N", "fewer than N", "under N", "below N", "shorter
  than N" (less than); "at most N", "no more than N", "up to N", "a maximum of N", "not exceeding N", "within N",
  "no longer than N", "limit / keep your answer to N" (less than N + 1); "N words or more / or fewer", "N words
  long or longer"; "between N and M words"; "in one / a single sentence" (less than 2). A negation up to two words
  before the relation turns it round: "do not write more than 4 sentences" is less than 5, "never use fewer than
  20 words" at least 20, "do not exceed 50 words" less than 51; the same before "use the word / letter X (REL) N
  times" and before a count of capital words.
* paragraphs: "N paragraphs" ("there should be / exactly / in / with / needs / requires") together with a mention
  of ``***`` or "markdown divider"; "paragraph K" or "the K-th / first ... paragraph" "must start / begin with (the) word X" with
  an "N paragraphs" count.
* keywords: "include / use / mention / incorporate (the) keyword(s) / word(s) / term(s) X, Y and Z", "the words X
  and Y must / should appear"; frequency: "the word X should / must appear (REL) N times", "use / include /
  mention / repeat the word X (REL) N times", "once / twice / thrice", "N times or more"; forbidden: "do not /
  don't / never / must not use / include / mention (the) word(s) X or Y", "avoid / without / exclude / leave out /
  omit (using) the words X", "the words X and Y are forbidden / banned / not allowed"; letters: "the letter X should
  appear (REL) N times", "use / include the letter X (REL) N times".
* case: "all lowercase", "lowercase only", "write / answer / respond ... in lowercase", "no capital letters", "do not
  use any capital letters"; "all capital letters", "all caps", "... in uppercase", "capital letters only", "no
  lowercase letters"; capital
  words: "words with / in all capital letters should appear (REL) N times", "(REL) N words in all capital letters /
  caps", "(REL) N all-caps / fully capitalized / uppercase words".
* commas: "no commas", "do not / don't / must not / never use (any) commas", "without (any) commas", "avoid
  commas", "refrain from (the use of) any commas", "not a single comma", "comma-free".
* start / end: "finish / end / conclude your response with (this exact) phrase X" ("the words X", "the sentence
  X"), "your answer must end with X" (X quoted, or up to the first ``.``, ``?`` or ``!``); "wrap / enclose / put /
  surround your (entire) response ... double quotation marks / quotes".
* format: "a title ... double angular / angle brackets" or "title ... <<...>>"; "exactly N bullet points /
  bullets", "a bulleted list of N items"; "highlight (at least) N sections / parts / phrases", "N highlighted
  sections"; "N sections" with a marker "Section X" / "SECTION 1" (the marker's word is the ``section_spliter`` as
  written); "in JSON format", "as (valid) JSON", "wrapped in JSON", "response / output ... JSON"; the three options
  "My answer is yes." / "My answer is no." (constrained response); "(at least) N placeholders".
* content: "add / include / end with a postscript / P.S. / P.P.S" (marker ``P.P.S`` when named, else ``P.S.``);
  "(first) repeat the request / question / prompt word for word / verbatim / exactly / without change", "before
  answering, repeat ...", "start by repeating ..." (the request to repeat is the request without the sentence that
  says so, a parenthesis included); "give / provide / write two different / distinct / separate responses /
  answers", "separated by six asterisks / ******".

Several instructions of one id may be recognised (e.g. "between 20 and 60 words" gives two); identical ones are
merged. Counts stated in a form that is not a whole number ("2.5 sentences"), or exact counts where IFEval's rule is
a bound or the reverse ("at least 3 bullet points"), are problems that make the request invalid. :func:`problems`
adds the contradictions (e.g. lowercase and all capitals; at least 100 and less than 20 words; a keyword that is
also forbidden; ``Section`` markers in an all-lowercase answer) and the arguments no answer of at most
``max_words`` words can meet (every count needs about one word per unit; any count over ``MAX_COUNT``, such as
"10^100", is unmeetable). Numbers are parsed by hand, never evaluated. Every pattern is bounded: no recogniser or
checker backtracks catastrophically, and each runs in time linear in the text; a text over ``MAX_REQUEST_CHARS``
is not a request (nothing is recognised in it).
"""  # noqa: E501 -- the rows of the instruction table cannot be split

from __future__ import annotations

import functools
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

AT_LEAST, LESS_THAN = "at least", "less than"
MAX_COUNT = 10**6  # no count above this can be met; a larger number is kept as MAX_COUNT + 1
_TOO_LARGE = MAX_COUNT + 1
MAX_REQUEST_CHARS = 4000  # the env's queries are shorter (prompts.MAX_QUERY_CHARS); recognising is linear in this
WORDS_PER_TOKEN = 0.75  # English text with a BPE tokenizer: about three words to four tokens
DEFAULT_MAX_ANSWER_TOKENS = 64
DEFAULT_MAX_ANSWER_WORDS = int(DEFAULT_MAX_ANSWER_TOKENS * WORDS_PER_TOKEN)


@dataclass(frozen=True, eq=True)
class Instruction:
    """One instruction: its IFEval id and arguments."""

    id: str
    kwargs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "kwargs": dict(self.kwargs)}

    def key(self) -> str:
        return json.dumps([self.id, self.kwargs], sort_keys=True)


def same_instructions(a: Sequence[Instruction], b: Sequence[Instruction]) -> bool:
    """Whether two lists hold the same instructions, in any order."""
    return sorted(i.key() for i in a) == sorted(i.key() for i in b)


# ---------------------------------------------------------------------------------------------
# Counting

_WORD = re.compile(r"\w+")
_ALNUM = re.compile(r"[^\W_]")
_CAPITAL_WORD = re.compile(r"\w+(?:[-.]\w+)*")
_ABBREVIATION = re.compile(r"\b(?:mr|mrs|ms|dr|prof|st|jr|sr|vs|etc|no|fig|approx|e\.g|i\.e)\.|\b[A-Z]\.(?=\s*[A-Z])",
                           re.I)
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+|\n[ \t]*\n")


def count_words(text: str) -> int:
    return sum(1 for _ in _WORD.finditer(text))


def count_sentences(text: str) -> int:
    text = _ABBREVIATION.sub(lambda m: m.group(0).replace(".", ""), text)
    return sum(1 for piece in _SENTENCE_BREAK.split(text) if _ALNUM.search(piece))


def _compare(count: int, relation: str, threshold: int) -> bool:
    return count < threshold if relation == LESS_THAN else count >= threshold


# ---------------------------------------------------------------------------------------------
# Checkers (strict): response, **kwargs -> bool

def _number_words(r, num_words, relation):
    return _compare(count_words(r), relation, num_words)


def _number_sentences(r, num_sentences, relation):
    return _compare(count_sentences(r), relation, num_sentences)


def _number_paragraphs(r, num_paragraphs):
    pieces = re.split(r"\s?\*\*\*\s?", r)
    count = len(pieces)
    for index, piece in enumerate(pieces):
        if not piece.strip():
            if 0 < index < len(pieces) - 1:
                return False
            count -= 1
    return count == num_paragraphs


def _nth_paragraph_first_word(r, num_paragraphs, nth_paragraph, first_word):
    pieces = r.split("\n\n")
    count = sum(1 for p in pieces if p.strip())
    if nth_paragraph > count or not pieces[nth_paragraph - 1].strip():
        return False
    word = pieces[nth_paragraph - 1].split()[0].lstrip("'\"")
    word = re.match(r"[^.,?!'\"]*", word).group(0).lower()
    return count == num_paragraphs and word == first_word.lower()


def _existence(r, keywords):
    lowered = r.lower()
    return all(k.lower() in lowered for k in keywords)


def _frequency(r, keyword, frequency, relation):
    return _compare(r.lower().count(keyword.lower()), relation, frequency) if keyword else False


def _forbidden_words(r, forbidden_words):
    return not any(re.search(rf"\b{re.escape(w)}\b", r, re.I) for w in forbidden_words)


def _letter_frequency(r, letter, let_frequency, let_relation):
    return _compare(r.lower().count(letter.lower()), let_relation, let_frequency)


def _capital_word_frequency(r, capital_frequency, capital_relation):
    capitals = sum(1 for m in _CAPITAL_WORD.finditer(r) if m.group(0).isupper())
    return _compare(capitals, capital_relation, capital_frequency)


def _end_checker(r, end_phrase):
    return r.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def _quotation(r):
    r = r.strip()
    return len(r) > 1 and r[0] == '"' and r[-1] == '"'


def _title(r):
    for line in r.split("\n"):  # one greedy <<...>> per line, as IFEval's `<<[^\n]+>>`, without backtracking
        start, end = line.find("<<"), line.rfind(">>")
        if start >= 0 and end >= start + 3 and line[start:end + 2].lstrip("<").rstrip(">").strip():
            return True
    return False


def _number_bullet_lists(r, num_bullets):
    count = 0
    for line in r.split("\n"):
        line = line.lstrip()
        count += line.startswith("-") or (line.startswith("*") and not line.startswith("**"))
    return count == num_bullets


_HIGHLIGHT = re.compile(r"\*[^\n*]*\*")
_DOUBLE_HIGHLIGHT = re.compile(r"\*\*[^\n*]*\*\*")


def _number_highlighted_sections(r, num_highlights):
    count = sum(1 for m in _HIGHLIGHT.finditer(r) if m.group(0).strip("*").strip())
    count += sum(1 for m in _DOUBLE_HIGHLIGHT.finditer(r) if m.group(0)[2:-2].strip())
    return count >= num_highlights


def _multiple_sections(r, section_spliter, num_sections):
    return len(re.split(rf"\s?{re.escape(section_spliter)}\s?\d+\s?", r)) - 1 >= num_sections


def _json_format(r):
    r = r.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        if r.startswith(fence):
            r = r[len(fence):]
            break
    r = r.removesuffix("```").strip()
    try:
        json.loads(r)
    except (ValueError, RecursionError):
        return False
    return True


CONSTRAINED_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def _constrained_response(r):
    return any(option in r for option in CONSTRAINED_OPTIONS)


def _number_placeholders(r, num_placeholders):
    count, pos = 0, 0
    while (start := r.find("[", pos)) >= 0:  # IFEval's `\[.*?\]` in one pass: a '[' closes at the next ']' on its line
        close, newline = r.find("]", start), r.find("\n", start)
        if close < 0:
            break
        if 0 <= newline < close:
            pos = newline + 1
            continue
        count, pos = count + 1, close + 1
    return count >= num_placeholders


def _postscript(r, postscript_marker):
    patterns = {"P.P.S": r"p\.\s?p\.\s?s", "P.S.": r"p\.\s?s\."}
    pattern = patterns.get(postscript_marker, re.escape(postscript_marker.lower()))
    return re.search(pattern, r.lower()) is not None


def _repeat_prompt(r, prompt_to_repeat):
    return r.strip().lower().startswith(prompt_to_repeat.strip().lower())


def _two_responses(r):
    pieces = r.split("******")
    answers = []
    for index, piece in enumerate(pieces):
        if piece.strip():
            answers.append(piece.strip())
        elif 0 < index < len(pieces) - 1:
            return False
    return len(answers) == 2 and answers[0] != answers[1]


CHECKERS: dict[str, Callable[..., bool]] = {
    "length_constraints:number_words": _number_words,
    "length_constraints:number_sentences": _number_sentences,
    "length_constraints:number_paragraphs": _number_paragraphs,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph_first_word,
    "keywords:existence": _existence,
    "keywords:frequency": _frequency,
    "keywords:forbidden_words": _forbidden_words,
    "keywords:letter_frequency": _letter_frequency,
    "change_case:english_lowercase": str.islower,
    "change_case:english_capital": str.isupper,
    "change_case:capital_word_frequency": _capital_word_frequency,
    "punctuation:no_comma": lambda r: "," not in r,
    "startend:end_checker": _end_checker,
    "startend:quotation": _quotation,
    "detectable_format:title": _title,
    "detectable_format:number_bullet_lists": _number_bullet_lists,
    "detectable_format:number_highlighted_sections": _number_highlighted_sections,
    "detectable_format:multiple_sections": _multiple_sections,
    "detectable_format:json_format": _json_format,
    "detectable_format:constrained_response": _constrained_response,
    "detectable_content:number_placeholders": _number_placeholders,
    "detectable_content:postscript": _postscript,
    "combination:repeat_prompt": _repeat_prompt,
    "combination:two_responses": _two_responses,
}
INSTRUCTION_IDS = tuple(CHECKERS)
# what each instruction asks for, in a few plain words (the challenger's prompt can name the kinds it should use)
KIND_NAMES = {
    "length_constraints:number_words": "a number of words",
    "length_constraints:number_sentences": "a number of sentences",
    "length_constraints:number_paragraphs": "a number of paragraphs",
    "length_constraints:nth_paragraph_first_word": "the first word of a paragraph",
    "keywords:existence": "keywords to include",
    "keywords:frequency": "how often a word appears",
    "keywords:forbidden_words": "words to avoid",
    "keywords:letter_frequency": "how often a letter appears",
    "change_case:english_lowercase": "lowercase letters only",
    "change_case:english_capital": "capital letters only",
    "change_case:capital_word_frequency": "how many words are in capitals",
    "punctuation:no_comma": "no commas",
    "startend:end_checker": "a phrase to end with",
    "startend:quotation": "double quotation marks around the answer",
    "detectable_format:title": "a title in double angular brackets",
    "detectable_format:number_bullet_lists": "a number of bullet points",
    "detectable_format:number_highlighted_sections": "highlighted sections",
    "detectable_format:multiple_sections": "numbered sections",
    "detectable_format:json_format": "JSON format",
    "detectable_format:constrained_response": "a choice among fixed answers",
    "detectable_content:number_placeholders": "placeholders in square brackets",
    "detectable_content:postscript": "a postscript",
    "combination:repeat_prompt": "repeating the request first",
    "combination:two_responses": "two different responses",
}
LEFT_OUT = {"language:response_language": "needs a language detector (langdetect), which is not installed"}


def response_variants(response: str) -> list[str]:
    """IFEval's loose variants: the answer, without its first / last / both lines, and each with ``*`` removed."""
    lines = response.split("\n")
    cut = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return cut + [text.replace("*", "") for text in cut]


def check(instruction: Instruction, response: str, loose: bool = False) -> bool:
    """Whether the response follows the instruction (IFEval's strict rule; ``loose``: its loose variant)."""
    checker = CHECKERS[instruction.id]
    variants = response_variants(response) if loose else [response]
    return any(text.strip() and checker(text, **instruction.kwargs) for text in variants)


# ---------------------------------------------------------------------------------------------
# Numbers in prose

_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_HUGE = {"googol", "googolplex", "zillion", "gazillion", "bazillion", "quadrillion", "quintillion"}
_NUMBER_WORD = "|".join(sorted([*_UNITS, *_TENS, *_SCALES, *_HUGE], key=len, reverse=True))
_DIGITS = (r"(?:\d{1,3}(?:,\d{3}){1,6}|\d{1,40})(?:\.\d{1,10})?"
           r"(?:\s*(?:\^|\*\*)\s*\d{1,6}|[eE]\+?\d{1,6}|\s*[x\u00d7]\s*10\s*(?:\^|\*\*)\s*\d{1,6})?")
NUM = (rf"(?:{_DIGITS}|(?:an?\s+(?={'|'.join([*_SCALES, *_HUGE])}))?"
       rf"(?:{_NUMBER_WORD})\b(?:[\s-]+(?:and[\s-]+)?(?:{_NUMBER_WORD})\b){{0,4}})")
_DIGIT_FORM = re.compile(r"([\d,]+)(?:\.(\d+))?\s*"
                         r"(?:(\^|\*\*)\s*(\d+)|[eE]\+?(\d+)|[x\u00d7]\s*10\s*(?:\^|\*\*)\s*(\d+))?")


def parse_count(text: str) -> int | None:
    """A count written in digits or words -> int (``MAX_COUNT + 1`` when larger), or None when not whole.

    "50" -> 50, "1,000" -> 1000, "fifty-five" -> 55, "a hundred and two" -> 102, "10^100" and "a googol" ->
    MAX_COUNT + 1, "2.5" -> None. Powers are compared by their number of digits, never computed when large.
    """
    text = text.strip().lower()
    match = _DIGIT_FORM.fullmatch(text)
    if match:
        digits, fraction, power, power_exp, e_exp, ten_exp = match.groups()
        digits = digits.replace(",", "").lstrip("0") or "0"
        if fraction and fraction.strip("0"):
            return None
        if len(digits) > 7:
            return _TOO_LARGE
        base = int(digits)
        exponent = power_exp or e_exp or ten_exp
        if exponent is None:
            return min(base, _TOO_LARGE)
        exponent = int(exponent[:4]) if len(exponent) <= 4 else 10**4
        if power and base <= 1:
            return base
        size = exponent * math.log10(max(base, 1)) if power else exponent + math.log10(max(base, 1))
        if base == 0 or size > 7:
            return 0 if base == 0 else _TOO_LARGE
        return min(base**exponent if power else base * 10**exponent, _TOO_LARGE)
    total = current = 0
    for token in re.split(r"[\s-]+", text):
        if token in _HUGE:
            return _TOO_LARGE
        if token in _UNITS or token in _TENS:
            current += _UNITS.get(token, 0) + _TENS.get(token, 0)
        elif token == "hundred":
            current = max(current, 1) * 100
        elif token in _SCALES:
            total, current = total + max(current, 1) * _SCALES[token], 0
    return min(total + current, _TOO_LARGE)


def number_words(n: int) -> str:
    """0..999 in words ("twenty-five", "one hundred and two"); larger numbers as digits."""
    if n < 20:
        return list(_UNITS)[n]
    if n < 100:
        tens, unit = divmod(n, 10)
        return list(_TENS)[tens - 2] + (f"-{list(_UNITS)[unit]}" if unit else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{list(_UNITS)[hundreds]} hundred" + (f" and {number_words(rest)}" if rest else "")
    return str(n)


# ---------------------------------------------------------------------------------------------
# Recognising instructions in a request

def _words_re(phrases: str) -> str:
    """'at least|no more than' -> an alternation in which every space is \\s+."""
    return "|".join(p.replace(" ", r"\s+") for p in phrases.split("|"))


# relation phrase -> (relation, added to the stated number)
_RELATIONS = {
    **dict.fromkeys(["at least", "no fewer than", "no less than", "not fewer than", "not less than",
                     "a minimum of", "minimum of", "minimum"], (AT_LEAST, 0)),
    **dict.fromkeys(["more than", "over", "upwards of", "longer than", "exceed", "exceeding"], (AT_LEAST, 1)),
    **dict.fromkeys(["less than", "fewer than", "under", "below", "shorter than"], (LESS_THAN, 0)),
    **dict.fromkeys(["at most", "no more than", "not more than", "a maximum of", "maximum of", "maximum", "up to",
                     "not exceeding", "within", "no longer than", "not longer than"], (LESS_THAN, 1)),
}
REL = _words_re("|".join(sorted(_RELATIONS, key=len, reverse=True)))
_TIMES = (rf"(?:(?P<rel>{REL})\s+)?(?:(?P<n>{NUM})\s+times|(?P<nw>once|twice|thrice))"
          r"(?:\s+or\s+(?P<suffix>more|fewer|less))?")
_QUOTED = r"(?:\"(?P<q>[^\"\n]{1,60})\"|'(?P<s>[^'\n]{1,60})')"
_KEYWORD = rf"(?:{_QUOTED}|(?P<w>[A-Za-z][\w'-]{{0,39}}))"
_LETTER = r"(?:\"(?P<lq>[A-Za-z])\"|'(?P<ls>[A-Za-z])'|(?P<l>[A-Za-z])\b)"
_ANSWER = r"(?:response|answer|reply|output|text|essay|poem|story|message|post|email|letter|summary)"
_ORDINALS = {w: i + 1 for i, w in enumerate("first second third fourth fifth sixth seventh eighth ninth tenth".split())}


class _Problem(Exception):
    """A recognised instruction whose arguments are unusable: the request is invalid for this reason."""


def _count(match: re.Match, name: str = "n") -> int:
    text = match.group(name)
    words = {"once": 1, "twice": 2, "thrice": 3}
    if text is None and match.groupdict().get("nw"):
        return words[match.group("nw").lower()]
    value = parse_count(text)
    if value is None:
        raise _Problem(f"{match.group(0)!r}: the count {text!r} is not a whole number")
    return value


def _relation(match: re.Match, default: str | None = None) -> tuple[str, int]:
    """(IFEval relation, threshold) from a match with groups rel / suffix and n."""
    n = _count(match)
    groups = match.groupdict()
    if groups.get("rel"):
        relation, shift = _RELATIONS[re.sub(r"\s+", " ", groups["rel"].lower())]
    elif groups.get("suffix"):
        relation, shift = (AT_LEAST, 0) if groups["suffix"].lower() in ("more", "longer") else (LESS_THAN, 1)
    elif default:
        relation, shift = default, 0
    else:
        raise _Problem(f"{match.group(0)!r}: say 'at least N' or 'less than N'")
    if groups.get("neg"):  # "do not write more than 4 sentences": not (count >= 5) is count < 5
        relation = LESS_THAN if relation == AT_LEAST else AT_LEAST
    return relation, min(n + shift, _TOO_LARGE)


def _bounded(noun: str) -> list[str]:
    """Patterns for a count of ``noun`` with a relation: 'at least N words' (negated: 'do not write more than N
    words'), 'N words or more', 'N words long or longer', 'between N and M', 'limit your answer to N words' (at
    most N)."""
    return [rf"\b{_NEGATED}(?P<rel>{REL})\s+(?P<n>{NUM})\s+{noun}",
            rf"\b(?P<n>{NUM})\s+{noun}\s+(?:long\s+)?or\s+(?P<suffix>more|fewer|less|longer|shorter)\b",
            rf"\bbetween\s+(?P<lo>{NUM})\s+and\s+(?P<hi>{NUM})\s+{noun}",
            rf"\b(?:limit|restrict|cap|keep)\s+(?:\w+\s+){{0,2}}?to\s+(?:a\s+maximum\s+of\s+)?(?P<lim>{NUM})\s+{noun}"]


def _length(names: tuple[str, str]) -> Callable:
    count_name, relation_name = names

    def build(match, text):
        if match.groupdict().get("lo"):
            low, high = _count(match, "lo"), _count(match, "hi")
            return [{count_name: low, relation_name: AT_LEAST},
                    {count_name: min(high + 1, _TOO_LARGE), relation_name: LESS_THAN}]
        if match.groupdict().get("single"):
            return [{count_name: 2, relation_name: LESS_THAN}]
        if match.groupdict().get("lim"):
            return [{count_name: min(_count(match, "lim") + 1, _TOO_LARGE), relation_name: LESS_THAN}]
        relation, n = _relation(match)
        return [{count_name: n, relation_name: relation}]
    return build


def _keyword(match: re.Match) -> str:
    return next(match.group(g) for g in ("q", "s", "w") if match.groupdict().get(g)).strip()


_LIST_END = re.compile(r"\s+(?:in|into|within|throughout|somewhere|anywhere|at\s+least|when|while|to|so|as|for|because|"
                       r"without|but|if|each|every|once|twice)\b.*", re.I | re.S)


def _keyword_list(text: str) -> list[str]:
    """'"sea", "sky" and "salt" in the reply' -> ['sea', 'sky', 'salt']; unquoted: one word per item."""
    text = _LIST_END.sub("", text)
    quoted = re.findall(r"\"([^\"\n]{1,40})\"|'([^'\n]{1,40})'", text)
    if quoted:
        return [(a or b).strip() for a, b in quoted if (a or b).strip()]
    items = []
    for piece in re.split(r",|;|\band\b|\bor\b|&|\bnor\b", text.strip(" []():")):
        words = re.findall(r"[A-Za-z][\w'-]*", piece)
        if words:
            items.append(words[0])
        if len(words) != 1:
            break
    return items


def _list_builder(key: str) -> Callable:
    def build(match, text):
        keywords = list(dict.fromkeys(_keyword_list(match.group("list"))))
        return [{key: keywords}] if keywords else []
    return build


def _frequency_kwargs(match, text):
    relation, n = _relation(match, default=AT_LEAST)
    return [{"keyword": _keyword(match), "frequency": n, "relation": relation}]


def _letter_kwargs(match, text):
    relation, n = _relation(match, default=AT_LEAST)
    letter = next(match.group(g) for g in ("lq", "ls", "l") if match.groupdict().get(g))
    return [{"letter": letter.lower(), "let_frequency": n, "let_relation": relation}]


def _exact(name: str, what: str) -> Callable:
    def build(match, text):
        if match.groupdict().get("rel"):
            raise _Problem(f"{match.group(0)!r}: {what} counts are exact (say 'exactly N')")
        return [{name: _count(match)}]
    return build


def _at_least(name: str, what: str) -> Callable:
    def build(match, text):
        relation, n = _relation(match, default=AT_LEAST)
        if relation != AT_LEAST:
            raise _Problem(f"{match.group(0)!r}: {what} counts are minimums (say 'at least N')")
        return [{name: n}]
    return build


_PARAGRAPH_COUNT = re.compile(rf"\b(?P<n>{NUM})\s+paragraphs?\b", re.I)
_NTH = rf"(?:paragraph\s+(?P<k>{NUM})|(?:the\s+)?(?P<o>{'|'.join(_ORDINALS)}|\d{{1,3}}(?:st|nd|rd|th))\s+paragraph)"


@functools.lru_cache(maxsize=16)
def _paragraph_count(text: str) -> re.Match | None:
    return _PARAGRAPH_COUNT.search(text)


def _nth_paragraph(match, text):
    count = _paragraph_count(text)
    if count is None:
        raise _Problem(f"{match.group(0)!r}: say how many paragraphs there should be")
    if match.group("k"):
        nth = _count(match, "k")
    else:
        ordinal = match.group("o").lower()
        nth = _ORDINALS.get(ordinal) or int(re.match(r"\d+", ordinal).group(0))
    return [{"num_paragraphs": _count(count), "nth_paragraph": nth, "first_word": _keyword(match).lower()}]


def _paragraphs(match, text):
    if not re.search(r"(?<!\*)\*\*\*(?!\*)|markdown\s+divider", text, re.I):
        return []  # paragraphs split by blank lines are nth_paragraph_first_word's (only with a first word)
    return [{"num_paragraphs": _count(match)}]


def _sections(match, text):
    marker = re.search(r"\b(section)\s+(?:x|n|\d{1,3}|\[?[a-z]\]?)\b", text[match.start():], re.I)
    if marker is None:
        return []
    return [{"section_spliter": marker.group(1), "num_sections": _count(match)}]


def _end_phrase(match, text):
    phrase = _keyword(match) if match.groupdict().get("q") or match.groupdict().get("s") else match.group("u")
    return [{"end_phrase": phrase.strip()}] if phrase and phrase.strip() else []


def _postscript_marker(match, text):
    near = text[match.start():match.end() + 40]
    return [{"postscript_marker": "P.P.S" if re.search(r"p\.\s?p\.\s?s", near, re.I) else "P.S."}]


def _repeat(match, text):
    start, end = _sentence_around(text, match.start(), match.end())
    rest = (text[:start].rstrip() + " " + text[end:].lstrip()).strip()
    if not rest:
        raise _Problem("the request asks to repeat itself but holds nothing else to repeat")
    return [{"prompt_to_repeat": rest}]


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)|\n")


def _sentence_around(text: str, start: int, end: int) -> tuple[int, int]:
    """The span of the sentence holding text[start:end]; a parenthesis after it belongs to it."""
    begin = 0
    for boundary in _SENTENCE_END.finditer(text, 0, start):
        begin = boundary.end()
    depth, pos = 0, end
    while pos < len(text):
        ch = text[pos]
        if ch == "\n" and depth == 0:
            break
        depth += (ch == "(") - (ch == ")" and depth > 0)
        pos += 1
        if depth == 0 and ch in ".!?" and (pos == len(text) or text[pos].isspace()):
            break
    return begin, pos


def _none(match, text):
    return [{}]


_CAPS = r"(?:capital\s+letters|caps|capitals|upper[\s-]?case(?:\s+letters)?)"
_CAPITAL_WORDS = rf"words?\s+(?:with|in|written\s+in|using)\s+all\s+{_CAPS}"
_SHOULD_APPEAR = (r"(?:should|must|has\s+to|have\s+to|needs?\s+to|shall|will)\s+"
                  r"(?:appear|occur|be\s+used|be\s+included|be\s+mentioned|be\s+repeated|show\s+up)")
_NOUN = r"(?:key\s*words?|words?|terms?)"
_LIST = r"(?P<list>[^.;!?\n(]{1,160})"
_NEGATION = r"(?:do\s+not|don't|never|must\s+not|mustn't|should\s+not|shouldn't|cannot|can't|may\s+not)"
_NEGATED = rf"(?:(?P<neg>{_NEGATION})\s+(?:\w+\s+){{0,2}}?)?"  # before a count's relation: turns it round

# (id, cues, patterns, builder): the patterns run only on a text holding one of the cues (lowercase substrings),
# which keeps recognising cheap; an earlier recogniser's matches hide overlapping matches of the later ones.
_RECOGNISERS: list[tuple[str, tuple[str, ...], list[str], Callable]] = [
    ("combination:repeat_prompt", ('repeat',), [
        r"\brepeat\s+(?:the|this|my|your|our)\s+(?:request|question|prompt|instructions?|query)\s+(?:word\s+for\s+word|verbatim|exactly|without\s+(?:any\s+)?change)",
        r"\b(?:start|begin)\s+(?:your\s+\w+\s+)?by\s+repeating\s+(?:the|this|my)\s+(?:request|question|prompt|query)\s*(?:word\s+for\s+word|verbatim|exactly)?"],
     _repeat),
    ("detectable_format:constrained_response", ('my answer is',), [
        r"my\s+answer\s+is\s+yes[^\n]{0,80}?my\s+answer\s+is\s+no"], _none),
    ("startend:end_checker", ('end', 'finish', 'conclude', 'close', 'wrap'), [
        rf"\b(?:finish|end|conclude|close|wrap\s+up)\s+(?:your\s+{_ANSWER}\s+|it\s+)?with\s+(?:this|the)\s+(?:exact\s+)?(?:phrase|words|sentence)\s*:?\s*(?:{_QUOTED}|(?P<u>[^\n\"]{{1,100}}?[.?!])(?=[\s.]|$))",
        rf"\b{_ANSWER}\s+(?:must|should|has\s+to|needs\s+to)\s+end\s+with\s+(?:the\s+(?:exact\s+)?(?:phrase|words|sentence)\s*:?\s*)?(?:{_QUOTED}|(?P<u>[^\n\"]{{1,100}}?[.?!])(?=[\s.]|$))"],
     _end_phrase),
    ("length_constraints:nth_paragraph_first_word", ('paragraph',), [
        rf"\b{_NTH}\s+(?:must|should|has\s+to|needs\s+to|shall)\s+(?:start|begin)\s+with\s+(?:the\s+)?(?:word\s+)?{_KEYWORD}",
        rf"\b(?:start|begin)\s+{_NTH}\s+with\s+(?:the\s+)?(?:word\s+)?{_KEYWORD}"], _nth_paragraph),
    ("change_case:capital_word_frequency", ('capital', 'caps', 'upper'), [
        rf"\b{_CAPITAL_WORDS}\s+{_SHOULD_APPEAR}\s+{_TIMES}",
        rf"\b{_NEGATED}(?P<rel>{REL})\s+(?P<n>{NUM})\s+{_CAPITAL_WORDS}",
        rf"\b(?P<n>{NUM})\s+(?:or\s+(?P<suffix>more|fewer|less)\s+)?{_CAPITAL_WORDS}",
        rf"\b{_NEGATED}(?:(?P<rel>{REL})\s+)?(?P<n>{NUM})\s+(?:or\s+(?P<suffix>more|fewer|less)\s+)?(?:fully\s+capitali[sz]ed|all[\s-]+caps|all[\s-]+capitals?|upper[\s-]?case|all[\s-]+upper[\s-]?case)\s+words\b"],
     lambda m, t: [dict(zip(("capital_relation", "capital_frequency"), _relation(m, default=AT_LEAST)))]),
    ("keywords:letter_frequency", ('letter',), [
        rf"\bletter\s+{_LETTER}\s+{_SHOULD_APPEAR}\s+(?:in\s+(?:your|the)\s+{_ANSWER}\s+)?{_TIMES}",
        rf"\b(?:(?P<neg>{_NEGATION})\s+)?(?:use|include|write|type|say)\s+the\s+letter\s+{_LETTER}\s+{_TIMES}"],
     _letter_kwargs),
    ("keywords:frequency", ('time', 'once', 'twice', 'thrice'), [
        rf"\b(?:key)?word\s+{_KEYWORD}\s+{_SHOULD_APPEAR}\s+(?:in\s+(?:your|the)\s+{_ANSWER}\s+)?{_TIMES}",
        rf"\b(?:(?P<neg>{_NEGATION})\s+)?(?:use|include|mention|repeat|say|write)\s+(?:the\s+)?(?:key)?word\s+{_KEYWORD}\s+{_TIMES}",
        rf"\b(?:(?P<neg>{_NEGATION})\s+)?(?:use|include|mention|repeat|say|write)\s+{_QUOTED}\s+{_TIMES}"],
     _frequency_kwargs),
    ("punctuation:no_comma", ('comma',), [
        r"\b(?:no|zero|without(?:\s+using)?(?:\s+any)?|avoid(?:\s+using)?(?:\s+any)?|free\s+of(?:\s+any)?|not\s+(?:a\s+single|one|any))\s+commas?\b",
        rf"\b{_NEGATION}\s+(?:use|contain|include|have|put|add)\s+(?:any\s+|a\s+single\s+)?commas?\b",
        r"\brefrain\s+from\s+(?:the\s+use\s+of\s+|using\s+)?(?:any\s+)?commas?\b", r"\bcomma[\s-]free\b",
        r"\bcommas?\s+(?:are|is)\s+(?:not\s+allowed|forbidden|banned|prohibited)"], _none),
    ("change_case:english_lowercase", ('lower', 'capital', 'upper'), [
        r"\ball\s+(?:in\s+)?lower[\s-]?case\b", r"\blower[\s-]?case\s+(?:letters\s+)?only\b",
        r"\bonly\s+lower[\s-]?case\b", r"\b(?:entirely|completely|written|only|wholly)\s+in\s+lower[\s-]?case\b",
        r"\b(?:answer|respond|reply|write|response|everything|be)\s+(?:\w+\s+){0,4}?in\s+lower[\s-]?case\b",
        r"\bno\s+(?:capital|upper[\s-]?case)\s+letters\b",
        rf"\b{_NEGATION}\s+(?:use|include|contain|write)\s+(?:any\s+)?(?:capital|upper[\s-]?case)\s+letters\b",
        r"\bwithout\s+(?:using\s+)?(?:any\s+)?(?:capital|upper[\s-]?case)\s+letters\b"], _none),
    ("change_case:english_capital", ('capital', 'caps', 'upper', 'lower'), [
        rf"\ball\s+(?:in\s+)?{_CAPS}", r"\b(?:capital|upper[\s-]?case)\s+letters\s+only\b",
        r"\bonly\s+(?:capital|upper[\s-]?case)\s+letters\b",
        rf"\b(?:entirely|completely|written|only|wholly)\s+in\s+{_CAPS}",
        rf"\b(?:answer|respond|reply|write|response|everything|be)\s+(?:\w+\s+){{0,4}}?in\s+{_CAPS}",
        r"\bno\s+lower[\s-]?case\s+letters\b",
        rf"\b{_NEGATION}\s+(?:use|include|contain|write)\s+(?:any\s+)?lower[\s-]?case\s+letters\b"], _none),
    ("keywords:forbidden_words", ('word', 'term'), [
        rf"\b{_NEGATION}\s+(?:use|include|mention|say|write|contain)\s+(?:any\s+of\s+)?(?:the\s+)?(?:following\s+)?{_NOUN}\s*:?\s*{_LIST}",
        rf"\b(?:avoid|without|refrain\s+from|exclude|excluding|leave\s+out|omit)\s+(?:using\s+|mentioning\s+|saying\s+)?(?:any\s+of\s+)?(?:the\s+)?(?:following\s+)?{_NOUN}\s*:?\s*{_LIST}",
        rf"\b(?:the\s+)?{_NOUN}\s+(?P<list>[^.;!?\n(]{{1,160}}?)\s+(?:are|is)\s+(?:forbidden|banned|not\s+allowed|off[\s-]limits|prohibited)"],
     _list_builder("forbidden_words")),
    ("keywords:existence", ('word', 'term'), [
        rf"\b(?:include|use|mention|incorporate|feature|contain|add)\s+(?:both\s+|all\s+)?(?:of\s+)?(?:the\s+)?(?:following\s+)?{_NOUN}\s*:?\s*{_LIST}",
        rf"\b(?:with|including)\s+the\s+{_NOUN}\s*:?\s*{_LIST}",
        rf"\b(?:the\s+)?{_NOUN}\s+(?P<list>[^.;!?\n(]{{1,160}}?)\s+{_SHOULD_APPEAR}"], _list_builder("keywords")),
    ("length_constraints:number_paragraphs", ('paragraph',), [
        rf"\b(?:there\s+should\s+be|exactly|write|use|in|with|into|contain|have|has|needs?|requires?)\s+(?:exactly\s+)?(?P<n>{NUM})\s+paragraphs?\b"],
     _paragraphs),
    ("length_constraints:number_words", ('word',), _bounded(r"words?\b(?!\s+(?:with|in|written\s+in|using)\s+all\s)"),
     _length(("num_words", "relation"))),
    ("length_constraints:number_sentences", ('sentence',),
     _bounded(r"sentences?\b") + [r"\bin\s+(?P<single>a\s+single|one|just\s+one|only\s+one)\s+sentence\b"],
     _length(("num_sentences", "relation"))),
    ("startend:quotation", ('quot',), [
        r"\b(?:wrap|wrapped|enclose|enclosed|put|place|surround|surrounded)\b[^.\n]{0,50}?\bdouble\s+quot(?:ation\s+marks?|es?\b)"],
     _none),
    ("detectable_format:title", ('title',), [
        r"\btitle\b[^.\n]{0,60}?(?:double\s+angul(?:ar)?\s+brackets|double\s+angle\s+brackets|<<)"], _none),
    ("detectable_format:number_bullet_lists", ('bullet',), [
        rf"\b(?:(?P<rel>{REL})\s+)?(?:exactly\s+|precisely\s+)?(?P<n>{NUM})\s+(?:markdown\s+)?(?:bullet(?:ed)?\s+points?|bullets|bullet(?:ed)?\s+items)\b",
        rf"\bbullet(?:ed)?\s+list\s+(?:of|with)\s+(?:exactly\s+)?(?P<n>{NUM})\s+(?:items|points|entries)\b"],
     _exact("num_bullets", "bullet point")),
    ("detectable_format:number_highlighted_sections", ('highlight',), [
        rf"\bhighlight\s+(?:(?P<rel>{REL})\s+)?(?P<n>{NUM})\s+(?:or\s+(?P<suffix>more|fewer|less)\s+)?(?:\w+\s+)?(?:sections?|parts?|phrases?|passages?)\b",
        rf"\b(?:(?P<rel>{REL})\s+)?(?P<n>{NUM})\s+(?:or\s+(?P<suffix>more|fewer|less)\s+)?highlighted\s+(?:sections?|parts?|phrases?|passages?)\b"],
     _at_least("num_highlights", "highlighted section")),
    ("detectable_format:multiple_sections", ('section',), [
        rf"\b(?:have|has|with|into|in|write|use|contain|be)\s+(?:exactly\s+)?(?P<n>{NUM})\s+sections\b"], _sections),
    ("detectable_format:json_format", ('json',), [
        rf"\b{_ANSWER}\b[^.\n]{{0,40}}?\bjson\b", r"\bjson\s+(?:format|only)\b",
        r"\b(?:respond|reply|answer|format\s+\w+(?:\s+\w+)?)\s+(?:only\s+)?(?:in|as|with)\s+(?:valid\s+|a\s+)?json\b",
        r"\b(?:in|as|into)\s+(?:valid\s+|proper\s+)?json\s+(?:format|object)\b"], _none),
    ("detectable_content:number_placeholders", ('placeholder',), [
        rf"\b(?:(?P<rel>{REL})\s+)?(?P<n>{NUM})\s+(?:or\s+(?P<suffix>more|fewer|less)\s+)?placeholders?\b"],
     _at_least("num_placeholders", "placeholder")),
    ("detectable_content:postscript", ('script', 'p.', 'pps', 'p p s'), [
        r"\b(?:add|include|append|write|end\s+with|finish\s+with|close\s+with|with)\s+(?:a|an|one)\s+(?:explicit\s+)?(?:post[\s-]?script|p\.?\s?p\.?\s?s\b\.?|p\.\s?s\.)",
        r"\bpost[\s-]?script\s+(?:starting|beginning)\s+with"], _postscript_marker),
    ("combination:two_responses", ('two', '2', 'six', '6', '*'), [
        r"\b(?:give|provide|write|offer|produce)\s+(?:me\s+)?(?:two|2)\s+(?:different|distinct|separate|alternative)\s+(?:responses|answers|replies|versions)\b",
        r"\bseparated?\s+(?:them\s+)?(?:by|with)\s+(?:six|6)\s+asterisk",
        r"\bseparated?\s+(?:them\s+)?(?:by|with)\s+\*{6}"], _none),
]
_COMPILED = [(name, cues, [re.compile(p, re.I) for p in patterns], build)
             for name, cues, patterns, build in _RECOGNISERS]
_TYPOGRAPHIC = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


@dataclass
class Recognition:
    """What :func:`recognise` found: the instructions, and the reasons some could not be used."""

    instructions: list[Instruction]
    problems: list[str]


def recognise(text: str) -> Recognition:
    """Find the instructions a request states (phrasings in the module docstring), in the order of the registry.

    A text over ``MAX_REQUEST_CHARS`` characters is no request: nothing is recognised, and that is its problem.
    """
    if len(text) > MAX_REQUEST_CHARS:
        return Recognition([], [f"request over {MAX_REQUEST_CHARS} characters ({len(text)})"])
    found, problems = _recognise(text)
    return Recognition(list(found), list(problems))


@functools.lru_cache(maxsize=8192)  # a request is recognised when parsed, then again for each of its G answers
def _recognise(text: str) -> tuple[tuple[Instruction, ...], tuple[str, ...]]:
    text = text.translate(_TYPOGRAPHIC)  # one character for one: spans stay valid
    taken: list[tuple[int, int]] = []
    found: list[Instruction] = []
    problems: list[str] = []
    lowered = text.lower()
    for name, cues, patterns, build in _COMPILED:
        if not any(cue in lowered for cue in cues):
            continue
        for pattern in patterns:
            for match in pattern.finditer(text):
                if any(match.start() < end and start < match.end() for start, end in taken):
                    continue
                try:
                    kwargs_list = build(match, text)
                except _Problem as err:
                    problems.append(str(err))
                    kwargs_list = None
                if kwargs_list is None or kwargs_list:  # the repeat instruction's whole sentence is not the request's
                    whole = name == "combination:repeat_prompt"
                    taken.append(_sentence_around(text, *match.span()) if whole else match.span())
                for kwargs in kwargs_list or []:
                    instruction = Instruction(name, kwargs)
                    if instruction not in found:
                        found.append(instruction)
    return tuple(found), tuple(problems)


# ---------------------------------------------------------------------------------------------
# Contradictions and unmeetable arguments

_LOWER_BOUNDS = {  # id -> (count kwarg, relation kwarg) of the bounded counts
    "length_constraints:number_words": ("num_words", "relation"),
    "length_constraints:number_sentences": ("num_sentences", "relation"),
    "keywords:frequency": ("frequency", "relation"),
    "keywords:letter_frequency": ("let_frequency", "let_relation"),
    "change_case:capital_word_frequency": ("capital_frequency", "capital_relation"),
}
_EXACT = {"length_constraints:number_paragraphs": "num_paragraphs",
          "detectable_format:number_bullet_lists": "num_bullets"}


def words_needed(instruction: Instruction) -> int:
    """The fewest words an answer following the instruction can have (letters: 5 to a word, sections: 2)."""
    kw = instruction.kwargs
    counts = {
        "length_constraints:number_paragraphs": kw.get("num_paragraphs", 0),
        "length_constraints:nth_paragraph_first_word": kw.get("num_paragraphs", 0),
        "keywords:existence": sum(count_words(k) for k in kw.get("keywords", [])),
        "change_case:capital_word_frequency":
            kw.get("capital_frequency", 0) if kw.get("capital_relation") == AT_LEAST else 0,
        "detectable_format:number_bullet_lists": kw.get("num_bullets", 0),
        "detectable_format:number_highlighted_sections": kw.get("num_highlights", 0),
        "detectable_format:multiple_sections": 2 * kw.get("num_sections", 0),
        "detectable_content:number_placeholders": kw.get("num_placeholders", 0),
        "detectable_content:postscript": 2,
        "detectable_format:constrained_response": 4,
        "combination:two_responses": 2,
        "startend:end_checker": count_words(kw.get("end_phrase", "")),
        "combination:repeat_prompt": count_words(kw.get("prompt_to_repeat", "")) + 1,
    }
    if instruction.id == "length_constraints:number_words" and kw["relation"] == AT_LEAST:
        return kw["num_words"]
    if instruction.id == "length_constraints:number_sentences" and kw["relation"] == AT_LEAST:
        return kw["num_sentences"]
    if instruction.id == "keywords:frequency" and kw["relation"] == AT_LEAST:
        return kw["frequency"] * max(count_words(kw["keyword"]), 1)
    if instruction.id == "keywords:letter_frequency" and kw["let_relation"] == AT_LEAST:
        return math.ceil(kw["let_frequency"] / 5)
    return counts.get(instruction.id, 1)


_FIXED_TEXT = ("startend:end_checker", "combination:repeat_prompt", "detectable_format:constrained_response",
               "detectable_content:postscript")


def _describe(instruction: Instruction) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in instruction.kwargs.items() if k != "prompt_to_repeat")
    return f"{instruction.id}({args})"


def problems(instructions: Sequence[Instruction], max_words: int) -> list[str]:
    """Why no answer of at most ``max_words`` words can follow all the instructions ([] when one can)."""
    found: list[str] = []
    by_id: dict[str, list[Instruction]] = {}
    for inst in instructions:
        by_id.setdefault(inst.id, []).append(inst)
    has = by_id.__contains__

    def clash(a: Instruction, b: Instruction, why: str) -> None:
        found.append(f"contradiction: {_describe(a)} and {_describe(b)} ({why})")

    first = {name: group[0] for name, group in by_id.items()}
    lower, capital = first.get("change_case:english_lowercase"), first.get("change_case:english_capital")
    if lower and capital:
        clash(lower, capital, "all lowercase and all capitals")
    for case, test, label in ((lower, str.islower, "lowercase"), (capital, str.isupper, "capitals")):
        if not case:
            continue
        for inst in by_id.get("detectable_format:multiple_sections", []):
            if not test(inst.kwargs["section_spliter"]):
                clash(case, inst, f"the marker {inst.kwargs['section_spliter']!r} is not in {label}")
        if has("detectable_format:constrained_response"):
            clash(case, first["detectable_format:constrained_response"], f"the options are not in {label}")
    for inst in by_id.get("change_case:capital_word_frequency", []):
        if lower and inst.kwargs["capital_relation"] == AT_LEAST and inst.kwargs["capital_frequency"] > 0:
            clash(lower, inst, "an all-lowercase answer has no capital words")

    # bounds on one count: at least A and less than B with B <= A
    for name, (count_key, relation_key) in _LOWER_BOUNDS.items():
        groups: dict = {}
        for inst in by_id.get(name, []):
            subject = inst.kwargs.get("keyword", inst.kwargs.get("letter", "")).lower()
            groups.setdefault(subject, []).append(inst)
        if name == "keywords:frequency":
            for inst in by_id.get("keywords:existence", []):
                for keyword in inst.kwargs["keywords"]:
                    groups.setdefault(keyword.lower(), []).append(
                        Instruction(name, {"frequency": 1, "relation": AT_LEAST}))
        for group in groups.values():
            lows = [i for i in group if i.kwargs[relation_key] == AT_LEAST]
            highs = [i for i in group if i.kwargs[relation_key] == LESS_THAN]
            for low in lows:
                for high in highs:
                    if high.kwargs[count_key] <= low.kwargs[count_key]:
                        clash(low, high, "the bounds leave no count")
            for high in highs:
                if high.kwargs[count_key] <= 0:
                    found.append(f"unmeetable: {_describe(high)} (no count is less than {high.kwargs[count_key]})")
    for name, key in _EXACT.items():
        values = {i.kwargs[key] for i in by_id.get(name, [])}
        if len(values) > 1:
            clash(by_id[name][0], by_id[name][1], f"different exact counts {sorted(values)}")
    nth = by_id.get("length_constraints:nth_paragraph_first_word", [])
    if nth and has("length_constraints:number_paragraphs"):
        clash(first["length_constraints:number_paragraphs"], nth[0], "paragraphs split by *** and by blank lines")
    for inst in nth:
        if not 1 <= inst.kwargs["nth_paragraph"] <= inst.kwargs["num_paragraphs"]:
            found.append(f"unmeetable: {_describe(inst)} (there is no paragraph {inst.kwargs['nth_paragraph']})")
    for a in nth:
        for b in nth[nth.index(a) + 1:]:
            if a.kwargs["num_paragraphs"] != b.kwargs["num_paragraphs"] or (
                    a.kwargs["nth_paragraph"] == b.kwargs["nth_paragraph"]
                    and a.kwargs["first_word"] != b.kwargs["first_word"]):
                clash(a, b, "different paragraph counts or first words")
    ends = by_id.get("startend:end_checker", [])
    for a in ends:
        for b in ends[ends.index(a) + 1:]:
            x, y = a.kwargs["end_phrase"].lower(), b.kwargs["end_phrase"].lower()
            if not (x.endswith(y) or y.endswith(x)):
                clash(a, b, "two different endings")

    # text the answer must hold, against forbidden words and the comma ban
    required = [(i, i.kwargs["prompt_to_repeat"]) for i in by_id.get("combination:repeat_prompt", [])]
    required += [(i, i.kwargs["end_phrase"]) for i in ends]
    required += [(i, k) for i in by_id.get("keywords:existence", []) for k in i.kwargs["keywords"]]
    required += [(i, i.kwargs["keyword"]) for i in by_id.get("keywords:frequency", [])
                 if i.kwargs["relation"] == AT_LEAST and i.kwargs["frequency"] > 0]
    for ban in by_id.get("keywords:forbidden_words", []):
        for inst, text in required:
            for word in ban.kwargs["forbidden_words"]:
                if re.search(rf"\b{re.escape(word)}\b", text, re.I):
                    clash(inst, ban, f"it needs the forbidden word {word!r}")
    if has("punctuation:no_comma"):
        for inst, text in required:
            if "," in text:
                clash(inst, first["punctuation:no_comma"], "it needs a comma")
    for repeat in by_id.get("combination:repeat_prompt", []):
        prompt = repeat.kwargs["prompt_to_repeat"]
        if has("startend:quotation") and not prompt.startswith('"'):
            clash(repeat, first["startend:quotation"], "the answer must start with the request, not a quote")
        if has("detectable_format:json_format") and not _json_format(prompt):
            clash(repeat, first["detectable_format:json_format"], "the request repeated first is not JSON")
        for inst in nth:
            if inst.kwargs["nth_paragraph"] == 1 and not _nth_first(prompt, inst.kwargs["first_word"]):
                clash(repeat, inst, "the answer must start with the request, not that word")

    # the answer budget, and counts nobody can meet
    for inst in instructions:
        for key, value in inst.kwargs.items():
            if isinstance(value, int) and value > MAX_COUNT:
                found.append(f"unmeetable: {_describe(inst)} ({key} over {MAX_COUNT})")
    fixed = sum(words_needed(i) for i in instructions if i.id in _FIXED_TEXT)
    counted = max((words_needed(i) for i in instructions if i.id not in _FIXED_TEXT), default=0)
    limit = min([max_words] + [i.kwargs["num_words"] - 1 for i in by_id.get("length_constraints:number_words", [])
                               if i.kwargs["relation"] == LESS_THAN])
    if (not any(p.startswith("unmeetable") for p in found) and max(fixed, counted) <= MAX_COUNT
            and fixed + counted > limit):
        found.append(f"unmeetable: the instructions need at least {fixed + counted} words and the answer may have "
                     f"at most {limit}")
    return found


def _nth_first(prompt: str, first_word: str) -> bool:
    return _nth_paragraph_first_word(prompt, 1, 1, first_word)


# ---------------------------------------------------------------------------------------------
# Templates: writing instructions (data lists, the challenger's examples)

# id -> [(relation or None, template)]; fields: the kwargs, {n} a count in digits, {n_word} in words, {m} / {m_word}
# the count minus one (for "at most" phrasings), {keywords} / {forbidden} joined lists, {ordinal} nth in words.
TEMPLATES: dict[str, list[tuple[str | None, str]]] = {
    "length_constraints:number_words": [
        (AT_LEAST, "Answer with at least {n} words."),
        (AT_LEAST, "Your response should contain no fewer than {n_word} words."),
        (AT_LEAST, "Write {n} words or more."), (AT_LEAST, "Use a minimum of {n} words."),
        (LESS_THAN, "Answer with less than {n} words."), (LESS_THAN, "Keep your answer under {n} words."),
        (LESS_THAN, "Respond in at most {m} words."), (LESS_THAN, "Use no more than {m_word} words."),
        (LESS_THAN, "Your reply must have fewer than {n_word} words.")],
    "length_constraints:number_sentences": [
        (AT_LEAST, "Your response should contain at least {n} sentences."),
        (AT_LEAST, "Write no fewer than {n_word} sentences."),
        (LESS_THAN, "Your response should contain less than {n} sentences."),
        (LESS_THAN, "Answer in at most {m_word} sentences."),
        (LESS_THAN, "Use fewer than {n} sentences.")],
    "length_constraints:number_paragraphs": [
        (None, "There should be {n} paragraphs, separated with the markdown divider ***."),
        (None, "Write exactly {n_word} paragraphs and separate them with ***."),
        (None, "Use {n} paragraphs with *** between paragraphs.")],
    "length_constraints:nth_paragraph_first_word": [
        (None, "There should be {n} paragraphs separated by blank lines, and paragraph {nth_paragraph} must start with "
               "the word {first_word}."),
        (None, "Write {n_word} paragraphs separated by two new lines; the {ordinal} paragraph should begin with the "
               "word \"{first_word}\"."),
        (None, "Use {n} paragraphs split by blank lines and start the {ordinal} paragraph with the word "
               "{first_word}.")],
    "keywords:existence": [
        (None, "Include the keywords {keywords} in your response."), (None, "Make sure to use the words {keywords}."),
        (None, "Mention the terms {keywords} somewhere in your answer."),
        (None, "The words {keywords} should appear in your reply.")],
    "keywords:frequency": [
        (AT_LEAST, "In your response, the word {keyword} should appear at least {n} times."),
        (AT_LEAST, "Use the word \"{keyword}\" {n_word} times or more."),
        (LESS_THAN, "The word {keyword} should appear less than {n} times."),
        (LESS_THAN, "Mention the word \"{keyword}\" fewer than {n_word} times.")],
    "keywords:forbidden_words": [
        (None, "Do not include the keywords {forbidden} in the response."), (None, "Avoid the words {forbidden}."),
        (None, "Do not use the words {forbidden_or}."), (None, "Write it without using the words {forbidden_or}.")],
    "keywords:letter_frequency": [
        (AT_LEAST, "In your response, the letter {letter} should appear at least {n} times."),
        (AT_LEAST, "Use the letter \"{letter}\" {n} times or more."),
        (LESS_THAN, "In your response, the letter {letter} should appear less than {n} times."),
        (LESS_THAN, "The letter '{letter}' must appear fewer than {n_word} times.")],
    "change_case:english_lowercase": [
        (None, "Your entire response should be in English and in all lowercase letters."),
        (None, "Write everything in lowercase."), (None, "Do not use any capital letters."),
        (None, "Use lowercase letters only.")],
    "change_case:english_capital": [
        (None, "Your entire response should be in English and in all capital letters."),
        (None, "Write your whole answer in all caps."), (None, "Use capital letters only."),
        (None, "Respond entirely in uppercase.")],
    "change_case:capital_word_frequency": [
        (AT_LEAST, "In your response, words with all capital letters should appear at least {n} times."),
        (AT_LEAST, "Use at least {n_word} words in all capital letters."),
        (LESS_THAN, "In your response, words with all capital letters should appear less than {n} times."),
        (LESS_THAN, "Include fewer than {n} all-caps words.")],
    "punctuation:no_comma": [
        (None, "In your entire response, refrain from the use of any commas."),
        (None, "Your answer must not contain any commas."),
        (None, "Use no commas."), (None, "Do not use commas.")],
    "startend:end_checker": [
        (None, "Finish your response with this exact phrase \"{end_phrase}\" and no other words after it."),
        (None, "End your answer with the phrase \"{end_phrase}\""),
        (None, "Your reply must end with \"{end_phrase}\"")],
    "startend:quotation": [
        (None, "Wrap your entire response with double quotation marks."),
        (None, "Enclose your whole answer in double quotes."),
        (None, "Put your entire reply inside double quotation marks.")],
    "detectable_format:title": [
        (None, "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>."),
        (None, "Give it a title in double angle brackets like <<my title>>."),
        (None, "Add a title written as <<title>>.")],
    "detectable_format:number_bullet_lists": [
        (None, "Your answer must contain exactly {n} bullet points in markdown, such as * This is a point."),
        (None, "Use exactly {n_word} markdown bullet points."),
        (None, "Format the answer as a bulleted list of exactly {n} items.")],
    "detectable_format:number_highlighted_sections": [
        (None, "Highlight at least {n} sections in your answer with markdown, i.e. *highlighted section*."),
        (None, "Include at least {n_word} highlighted sections such as *this*."),
        (None, "Highlight {n} or more key phrases with markdown like *this*.")],
    "detectable_format:multiple_sections": [
        (None, "Your response must have {n} sections. Mark the beginning of each section with {section_spliter} X."),
        (None, "Divide your answer into {n_word} sections, starting each with {section_spliter} 1, {section_spliter} 2 "
               "and so on."),
        (None, "Write it in {n} sections, labelled {section_spliter} 1 to {section_spliter} {n}.")],
    "detectable_format:json_format": [
        (None, "Entire output should be wrapped in JSON format."), (None, "Format your whole response as valid JSON."),
        (None, "Reply only in JSON.")],
    "detectable_format:constrained_response": [
        (None, "Answer with one of the following options: \"My answer is yes.\", \"My answer is no.\", "
               "\"My answer is maybe.\""),
        (None, "Reply with exactly one of My answer is yes. / My answer is no. / My answer is maybe.")],
    "detectable_content:number_placeholders": [
        (None, "The response must contain at least {n} placeholders represented by square brackets, such as "
               "[address]."),
        (None, "Include at least {n_word} placeholders in square brackets like [name]."),
        (None, "Use {n} or more placeholders such as [date].")],
    "detectable_content:postscript": [
        (None, "At the end of your response, please explicitly add a postscript starting with {postscript}"),
        (None, "End with a {postscript_marker} note."), (None, "Include a postscript beginning with {postscript}")],
    "combination:repeat_prompt": [
        (None, "First repeat the request word for word without change, then give your answer (1. do not say any words "
               "or characters before repeating the request; 2. the request you need to repeat does not include this "
               "sentence)."),
        (None, "Before answering, repeat the request word for word (not including this sentence)."),
        (None, "Start by repeating the request verbatim, leaving out this sentence, then answer.")],
    "combination:two_responses": [
        (None, "Give two different responses. Responses and only responses should be separated by 6 asterisk symbols: "
               "******."),
        (None, "Provide two distinct answers separated by six asterisks."),
        (None, "Write two different versions, separated by ******.")],
}

KEYWORDS = ("river", "light", "garden", "engine", "silver", "market", "window", "winter", "signal", "bridge", "forest",
            "music", "paper", "stone", "cloud", "coffee", "harbor", "planet", "ladder", "island", "mirror", "candle")
END_PHRASES = ("Any other questions?", "Is there anything else I can help with?", "That is all.",
               "Thank you for reading.")


def _join(words: Sequence[str], conjunction: str = "and") -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" {conjunction} " + words[-1]


def templates_for(instruction: Instruction, templates: dict = TEMPLATES) -> list[str]:
    """The templates (of ``templates``, a table like :data:`TEMPLATES`) that can state the instruction (those of its
    relation, if it has one)."""
    relation = next((v for k, v in instruction.kwargs.items() if k.endswith("relation")), None)
    return [t for r, t in templates[instruction.id] if r in (None, relation)]


def describe(instruction: Instruction, rng: np.random.Generator, template: int | None = None,
             templates: dict = TEMPLATES) -> str:
    """One sentence stating the instruction, from a template drawn with ``rng`` (or the ``template``-th of
    :func:`templates_for`); for repeat_prompt the sentence only, without the request."""
    kw = instruction.kwargs
    choices = templates_for(instruction, templates)
    n = next((v for k, v in kw.items() if isinstance(v, int) and k != "nth_paragraph"), 0)
    fields = {**kw, "n": n, "n_word": number_words(n), "m": n - 1, "m_word": number_words(max(n - 1, 0)),
              "postscript": kw.get("postscript_marker", "P.S.").rstrip(".") + ".",
              "ordinal": list(_ORDINALS)[kw.get("nth_paragraph", 1) - 1] if kw.get("nth_paragraph", 1) <= 10 else "",
              "keywords": _join(kw.get("keywords", ["-"])), "forbidden": _join(kw.get("forbidden_words", ["-"])),
              "forbidden_or": _join(kw.get("forbidden_words", ["-"]), "or")}
    index = int(rng.integers(len(choices))) if template is None else template
    return choices[index].format(**fields)


def sample_instruction(name: str, rng: np.random.Generator) -> Instruction:
    """Random arguments for an instruction id, sized for short answers (about 50 words); not repeat_prompt."""
    def pick(options):
        return options[int(rng.integers(len(options)))]

    def between(low, high):
        return int(rng.integers(low, high + 1))

    relation = pick((AT_LEAST, LESS_THAN))
    kwargs = {
        "length_constraints:number_words": lambda: {
            "num_words": between(5, 30) if relation == AT_LEAST else between(15, 80), "relation": relation},
        "length_constraints:number_sentences": lambda: {
            "num_sentences": between(1, 4) if relation == AT_LEAST else between(2, 6), "relation": relation},
        "length_constraints:number_paragraphs": lambda: {"num_paragraphs": between(2, 4)},
        "length_constraints:nth_paragraph_first_word": lambda: (lambda p: {
            "num_paragraphs": p, "nth_paragraph": between(1, p), "first_word": pick(KEYWORDS)})(between(2, 3)),
        "keywords:existence": lambda: {
            "keywords": [str(k) for k in rng.choice(KEYWORDS, size=between(1, 3), replace=False)]},
        "keywords:frequency": lambda: {
            "keyword": pick(KEYWORDS), "frequency": between(1, 3) if relation == AT_LEAST else between(2, 4),
            "relation": relation},
        "keywords:forbidden_words": lambda: {
            "forbidden_words": [str(k) for k in rng.choice(KEYWORDS, size=between(1, 2), replace=False)]},
        "keywords:letter_frequency": lambda: {
            "letter": pick("abcdefghilmnoprstuwy"), "let_frequency": between(2, 10), "let_relation": relation},
        "change_case:capital_word_frequency": lambda: {
            "capital_frequency": between(1, 5) if relation == AT_LEAST else between(2, 6),
            "capital_relation": relation},
        "startend:end_checker": lambda: {"end_phrase": pick(END_PHRASES)},
        "detectable_format:number_bullet_lists": lambda: {"num_bullets": between(2, 4)},
        "detectable_format:number_highlighted_sections": lambda: {"num_highlights": between(1, 3)},
        "detectable_format:multiple_sections": lambda: {
            "section_spliter": pick(("Section", "SECTION")), "num_sections": between(2, 3)},
        "detectable_content:number_placeholders": lambda: {"num_placeholders": between(1, 3)},
        "detectable_content:postscript": lambda: {"postscript_marker": pick(("P.S.", "P.P.S"))},
    }.get(name, dict)()
    return Instruction(name, kwargs)


def compose_request(base: str, instructions: Sequence[Instruction], rng: np.random.Generator,
                    templates: dict = TEMPLATES) -> tuple[str, list[Instruction]]:
    """The base request followed by one sentence per instruction; repeat_prompt gets the rest of the text as its
    argument (so pass it without one). Returns the text and the instructions with their final arguments."""
    parts = [base] + [describe(i, rng, templates=templates) for i in instructions
                      if i.id != "combination:repeat_prompt"]
    final = [i for i in instructions if i.id != "combination:repeat_prompt"]
    if any(i.id == "combination:repeat_prompt" for i in instructions):
        final.append(Instruction("combination:repeat_prompt", {"prompt_to_repeat": " ".join(parts)}))
        parts.append(describe(final[-1], rng, templates=templates))
    return " ".join(parts), final


# ---------------------------------------------------------------------------------------------
# Scoring (IFEval's four figures)

FIGURES = ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose")  # IFEval's four accuracies


def follows(instructions: Sequence[Instruction], response: str, loose: bool = False) -> list[bool]:
    return [check(i, response, loose) for i in instructions]


def score(items: Sequence[dict | str], responses: Sequence[str]) -> dict:
    """IFEval's accuracies over requests and their answers, plus the rates per instruction id.

    ``items`` are held-out items (``{"prompt", "instruction_id_list", "kwargs"}``, IFEval's fields) or plain request
    texts (their instructions recognised). ``prompt_*``: share of requests whose every instruction is followed;
    ``instruction_*``: share of all instructions followed; ``*_loose``: with IFEval's loose variants.
    ``per_instruction`` maps each id to ``{"strict", "loose", "n"}``.
    """
    if len(items) != len(responses):
        raise ValueError(f"{len(items)} requests but {len(responses)} answers")
    prompt = {"strict": 0, "loose": 0}
    followed = {"strict": 0, "loose": 0}
    per: dict[str, dict] = {}
    total = 0
    for item, response in zip(items, responses):
        instructions = item_instructions(item)
        for mode in ("strict", "loose"):
            results = follows(instructions, response, loose=mode == "loose")
            prompt[mode] += bool(results) and all(results)
            followed[mode] += sum(results)
            for inst, ok in zip(instructions, results):
                entry = per.setdefault(inst.id, {"strict": 0, "loose": 0, "n": 0})
                entry[mode] += ok
                entry["n"] += mode == "strict"
        total += len(instructions)
    n = max(len(items), 1)
    return {
        "prompt_strict": prompt["strict"] / n, "prompt_loose": prompt["loose"] / n,
        "instruction_strict": followed["strict"] / max(total, 1),
        "instruction_loose": followed["loose"] / max(total, 1),
        "per_instruction": {k: {"strict": v["strict"] / v["n"], "loose": v["loose"] / v["n"], "n": v["n"]}
                            for k, v in sorted(per.items())},
        "n_prompts": len(items), "n_instructions": total,
    }


def item_instructions(item: dict | str) -> list[Instruction]:
    """An item's instructions; ``None`` arguments are dropped (IFEval's data on the hub lists every key of every id)."""
    if isinstance(item, str):
        return recognise(item).instructions
    return [Instruction(i, {key: v for key, v in (k or {}).items() if v is not None})
            for i, k in zip(item["instruction_id_list"], item["kwargs"], strict=True)]


def request_mix(asked: list[list[str]]) -> dict:
    """The challenger's mix over valid requests (their instruction ids): instructions per request, and the share of
    requests asking for each id."""
    n = max(len(asked), 1)
    counts = Counter(name for ids in asked for name in set(ids))
    return {"instructions/per_query": sum(map(len, asked)) / n,
            **{f"instructions/{name}": count / n for name, count in sorted(counts.items())}}
