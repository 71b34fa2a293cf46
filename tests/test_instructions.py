"""Instruction following: IFEval's checkers (strict and loose), the recognisers, contradictions, hostile text, the
data lists, IFEval's scores, and the LSP-IF envs on the tiny model."""

import collections
import json
import re
import time

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import lsp_env
from lsp_env.tasks import InstructionsTask, InvalidQuery, instruction_data
from lsp_env.tasks import instructions as ifx
from lsp_env.tasks.instructions import AT_LEAST, LESS_THAN, Instruction, check, recognise

FAST_S = 0.5  # generous: only hangs and quadratic blow-ups break it


def inst(name, **kwargs):
    return Instruction(name, kwargs)


# ---- checkers: (instruction, an answer that follows it, one that does not) -----------------------------------------
CHECKS = [
    (inst("length_constraints:number_words", num_words=5, relation=AT_LEAST),
     "one two three four five", "one two three four"),
    (inst("length_constraints:number_words", num_words=3, relation=LESS_THAN), "Two words.", "Now three words."),
    (inst("length_constraints:number_sentences", num_sentences=2, relation=AT_LEAST),
     "Dr. Smith came. He left!", "Dr. Smith came home."),
    (inst("length_constraints:number_sentences", num_sentences=2, relation=LESS_THAN),
     "Just one, e.g. this.", "One. Two."),
    (inst("length_constraints:number_paragraphs", num_paragraphs=2),
     "First part.\n***\nSecond part.", "First.\n***\n\n***\nSecond."),
    (inst("length_constraints:nth_paragraph_first_word", num_paragraphs=2, nth_paragraph=2, first_word="river"),
     "Intro here.\n\n\"River, flowing.\"", "Intro here.\n\nThe river.\n\nExtra."),
    (inst("keywords:existence", keywords=["sea", "Sky"]), "The SEA under the sky.", "The sea under the sun."),
    (inst("keywords:frequency", keyword="cat", frequency=2, relation=AT_LEAST), "cat and Cat", "a cat"),
    (inst("keywords:frequency", keyword="cat", frequency=2, relation=LESS_THAN), "one cat", "cat, cat"),
    (inst("keywords:forbidden_words", forbidden_words=["sun"]), "Sunny sunday.", "The Sun rose."),
    (inst("keywords:letter_frequency", letter="e", let_frequency=3, let_relation=AT_LEAST), "EeE", "ee"),
    (inst("keywords:letter_frequency", letter="z", let_frequency=1, let_relation=LESS_THAN), "no such letter", "zebra"),
    (inst("change_case:english_lowercase"), "all lower, 123.", "Not lower."),
    (inst("change_case:english_capital"), "ALL CAPS, 123.", "ALL CAPS but one."),
    (inst("change_case:capital_word_frequency", capital_frequency=2, capital_relation=AT_LEAST),
     "The USA and NATO-LED team", "Only NASA here"),
    (inst("change_case:capital_word_frequency", capital_frequency=2, capital_relation=LESS_THAN),
     "Only NASA here", "USA UK"),
    (inst("punctuation:no_comma"), "No commas here.", "One, comma."),
    (inst("startend:end_checker", end_phrase="Any other questions?"),
     'Done. "any other questions?"  ', "Any other questions? Yes."),
    (inst("startend:quotation"), '  "quoted answer"\n', '"not closed'),
    (inst("detectable_format:title"), "<<My Title>>\nText.", "<< >> and <<\nbroken>>"),
    (inst("detectable_format:number_bullet_lists", num_bullets=2), "* one\n- two\n**bold** line", "* one"),
    (inst("detectable_format:number_highlighted_sections", num_highlights=2), "*one* and **two**", "*one* and ** **"),
    (inst("detectable_format:multiple_sections", section_spliter="Section", num_sections=2),
     "Section 1\na\nSection 2\nb", "Section 1 only"),
    (inst("detectable_format:json_format"), '```json\n{"a": [1, 2]}\n```', "{'a': 1}"),
    (inst("detectable_format:constrained_response"), "Hmm. My answer is maybe.", "My answer is yes"),
    (inst("detectable_content:number_placeholders", num_placeholders=2),
     "[name] lives at [address].", "[name] lives at [\naddress]"),
    (inst("detectable_content:postscript", postscript_marker="P.S."), "Hi.\n\np. s. see you", "Hi. PS see you"),
    (inst("detectable_content:postscript", postscript_marker="P.P.S"), "Hi.\nP.P.S. more", "Hi.\nP.S. more"),
    (inst("combination:repeat_prompt", prompt_to_repeat="Write a poem."),
     "write a POEM. Roses are red.", "Sure! Write a poem."),
    (inst("combination:two_responses"), "First answer.\n******\nSecond answer.", "Same.\n******\nSame."),
]


def test_every_instruction_id_is_covered():
    assert {i.id for i, _, _ in CHECKS} == set(ifx.INSTRUCTION_IDS)
    assert len(ifx.INSTRUCTION_IDS) == 24 and set(ifx.LEFT_OUT) == {"language:response_language"}


@pytest.mark.parametrize("instruction, good, bad", CHECKS, ids=[i.id for i, _, _ in CHECKS])
def test_checker_strict(instruction, good, bad):
    assert check(instruction, good) is True
    assert check(instruction, bad) is False
    assert check(instruction, "   \n ") is False  # an empty answer follows nothing, as in IFEval


LOOSE = [  # fails strict, passes loose: a chatty first line, a last line, or markdown stars
    (inst("detectable_format:json_format"), 'Here is the JSON:\n{"a": 1}'),
    (inst("startend:end_checker", end_phrase="That is all."), "Answer. That is all.\nHope this helps!"),
    (inst("change_case:english_lowercase"), "Sure, Here You Go:\nall lower here"),
    (inst("combination:repeat_prompt", prompt_to_repeat="Write a poem."), "**Write a poem.** Roses."),
    (inst("startend:quotation"), 'Quote:\n"the answer"'),
]


@pytest.mark.parametrize("instruction, answer", LOOSE, ids=[i.id for i, _ in LOOSE])
def test_checker_loose(instruction, answer):
    assert check(instruction, answer) is False
    assert check(instruction, answer, loose=True) is True


def test_loose_variants_are_ifevals_eight():
    variants = ifx.response_variants("a*\nb\nc*")
    assert variants == ["a*\nb\nc*", "b\nc*", "a*\nb", "b", "a\nb\nc", "b\nc", "a\nb", "b"]


# ---- recognisers ----------------------------------------------------------------------------------------------------
def words(n, relation):
    return ("length_constraints:number_words", {"num_words": n, "relation": relation})


PHRASINGS = {
    "Answer in at most 50 words.": [words(51, LESS_THAN)],
    "Use fewer than 50 words.": [words(50, LESS_THAN)],
    "Keep it to no more than fifty words, please.": [words(51, LESS_THAN)],
    "Write at least one hundred and twenty words.": [words(120, AT_LEAST)],
    "Write at least a hundred words.": [words(100, AT_LEAST)],
    "Write more than 20 words.": [words(21, AT_LEAST)],
    "Limit your answer to 40 words.": [words(41, LESS_THAN)],
    "Make it no longer than thirty words.": [words(31, LESS_THAN)],
    "Keep the summary to 3 sentences.":
        [("length_constraints:number_sentences", {"num_sentences": 4, "relation": LESS_THAN})],
    "Write 30 words or more.": [words(30, AT_LEAST)],
    "Write between 10 and 40 words.": [words(10, AT_LEAST), words(41, LESS_THAN)],
    "Explain it in a single sentence.":
        [("length_constraints:number_sentences", {"num_sentences": 2, "relation": LESS_THAN})],
    "Your response should contain at least 3 sentences.":
        [("length_constraints:number_sentences", {"num_sentences": 3, "relation": AT_LEAST})],
    "Write twenty-five sentences or fewer.":
        [("length_constraints:number_sentences", {"num_sentences": 26, "relation": LESS_THAN})],
    "There should be 3 paragraphs. Paragraphs are separated with the markdown divider: ***":
        [("length_constraints:number_paragraphs", {"num_paragraphs": 3})],
    "Write 2 paragraphs separated by blank lines. The second paragraph must start with the word 'Today'.":
        [("length_constraints:nth_paragraph_first_word",
          {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "today"})],
    "Use four paragraphs; paragraph 3 should begin with the word bridge.":
        [("length_constraints:nth_paragraph_first_word",
          {"num_paragraphs": 4, "nth_paragraph": 3, "first_word": "bridge"})],
    "Include the keywords X and Y.": [("keywords:existence", {"keywords": ["X", "Y"]})],
    "Please mention the words \u201criver\u201d, \u201cbank\u201d and \u201cfish\u201d in your answer.":
        [("keywords:existence", {"keywords": ["river", "bank", "fish"]})],
    "Include keywords ['alpha', 'beta'] in the response.": [("keywords:existence", {"keywords": ["alpha", "beta"]})],
    "The word moon should appear at least 3 times.":
        [("keywords:frequency", {"keyword": "moon", "frequency": 3, "relation": AT_LEAST})],
    "Use the word 'star' twice or more.":
        [("keywords:frequency", {"keyword": "star", "frequency": 2, "relation": AT_LEAST})],
    "Mention the word dog fewer than 2 times.":
        [("keywords:frequency", {"keyword": "dog", "frequency": 2, "relation": LESS_THAN})],
    "Do not use the words happy or sad.": [("keywords:forbidden_words", {"forbidden_words": ["happy", "sad"]})],
    "Avoid the words cat, dog and bird.": [("keywords:forbidden_words", {"forbidden_words": ["cat", "dog", "bird"]})],
    "The words 'very' and 'really' are forbidden.":
        [("keywords:forbidden_words", {"forbidden_words": ["very", "really"]})],
    "The letter q should appear at least 4 times.":
        [("keywords:letter_frequency", {"letter": "q", "let_frequency": 4, "let_relation": AT_LEAST})],
    "Use the letter 'Z' fewer than five times.":
        [("keywords:letter_frequency", {"letter": "z", "let_frequency": 5, "let_relation": LESS_THAN})],
    "Your entire response should be in English, and in all lowercase letters.": [("change_case:english_lowercase", {})],
    "Don't use any capital letters.": [("change_case:english_lowercase", {})],
    "Respond in all caps.": [("change_case:english_capital", {})],
    "Write your answer in uppercase.": [("change_case:english_capital", {})],
    "Use at least 3 words in all capital letters.":
        [("change_case:capital_word_frequency", {"capital_frequency": 3, "capital_relation": AT_LEAST})],
    "In your response, words with all capital letters should appear less than 4 times.":
        [("change_case:capital_word_frequency", {"capital_frequency": 4, "capital_relation": LESS_THAN})],
    "Your answer must not contain any commas.": [("punctuation:no_comma", {})],
    "use no commas": [("punctuation:no_comma", {})],
    "In your entire response, refrain from the use of any commas.": [("punctuation:no_comma", {})],
    "Write it without commas.": [("punctuation:no_comma", {})],
    "Finish your response with this exact phrase Any other questions?. No other words should follow this phrase.":
        [("startend:end_checker", {"end_phrase": "Any other questions?"})],
    "Your answer must end with \"See you soon.\"": [("startend:end_checker", {"end_phrase": "See you soon."})],
    "wrap your entire response in double quotation marks": [("startend:quotation", {})],
    "Enclose the whole answer in double quotes.": [("startend:quotation", {})],
    "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>.":
        [("detectable_format:title", {})],
    "Your answer must contain exactly 4 bullet points.":
        [("detectable_format:number_bullet_lists", {"num_bullets": 4})],
    "Give a bulleted list of 3 items.": [("detectable_format:number_bullet_lists", {"num_bullets": 3})],
    "Highlight at least 2 sections in your answer with markdown, i.e. *highlighted section*.":
        [("detectable_format:number_highlighted_sections", {"num_highlights": 2})],
    "Your response must have 3 sections. Mark the beginning of each section with SECTION X.":
        [("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 3})],
    "Entire output should be wrapped in JSON format.": [("detectable_format:json_format", {})],
    "Answer as valid JSON.": [("detectable_format:json_format", {})],
    "Answer with one of the following options: ('My answer is yes.', 'My answer is no.', 'My answer is maybe.')":
        [("detectable_format:constrained_response", {})],
    "The response must contain at least 2 placeholders represented by square brackets, such as [address].":
        [("detectable_content:number_placeholders", {"num_placeholders": 2})],
    "At the end of your response, please explicitly add a postscript starting with P.P.S":
        [("detectable_content:postscript", {"postscript_marker": "P.P.S"})],
    "End with a P.S.": [("detectable_content:postscript", {"postscript_marker": "P.S."})],
    "Write a limerick. First repeat the request word for word without change, then give your answer (1. do not say "
    "any words or characters before repeating the request; 2. the request you need to repeat does not include this "
    "sentence)": [("combination:repeat_prompt", {"prompt_to_repeat": "Write a limerick."})],
    "Repeat the question verbatim before answering. What is rain?":
        [("combination:repeat_prompt", {"prompt_to_repeat": "What is rain?"})],
    "Give two different responses. Responses and only responses should be separated by 6 asterisk symbols: ******.":
        [("combination:two_responses", {})],
}


@pytest.mark.parametrize("text", list(PHRASINGS))
def test_recognises_phrasing(text):
    found = recognise(text)
    assert found.problems == []
    assert [(i.id, i.kwargs) for i in found.instructions] == PHRASINGS[text]


def test_phrasings_cover_every_instruction_id():
    assert {name for expected in PHRASINGS.values() for name, _ in expected} == set(ifx.INSTRUCTION_IDS)


@pytest.mark.parametrize("text", [
    "Write a poem about the sea.", "Tell me about the history of the comma.", "What is a JSON parser?",
    "Why are titles capitalised?", "Explain how words get into a dictionary.",
    "Describe a paragraph of a novel you like.", "Count to fifty.", "What does lowercase mean?",
    "Give me three reasons to learn Python.", "", "!!!",
])
def test_prose_without_instructions(text):
    assert recognise(text).instructions == []


@pytest.mark.parametrize("templates", [ifx.TEMPLATES, instruction_data.REPHRASED_TEMPLATES],
                         ids=["training", "rephrased"])
@pytest.mark.parametrize("name", ifx.INSTRUCTION_IDS)
def test_every_template_is_recognised_with_its_arguments(name, templates):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(20):  # both relations, and several arguments
        instruction = ifx.sample_instruction(name, rng)
        if name == "combination:repeat_prompt":
            instruction = inst(name, prompt_to_repeat="Describe owls.")
        for index, template in enumerate(ifx.templates_for(instruction, templates)):
            seen.add(template)
            sentence = ifx.describe(instruction, rng, template=index, templates=templates)
            text = "Describe owls. " + sentence if name != "combination:repeat_prompt" else sentence + " Describe owls."
            assert [(i.id, i.kwargs) for i in recognise(text).instructions] == [(name, instruction.kwargs)], text
    assert seen == {t for _, t in templates[name]}


@pytest.mark.parametrize(("text", "relation", "count"), [
    ("Do not write more than four sentences.", LESS_THAN, 5), ("Never use fewer than 3 sentences.", AT_LEAST, 3),
    ("You must not use over 2 sentences.", LESS_THAN, 3),
    ("Do not use commas. Write at least 4 sentences.", AT_LEAST, 4),
    ("Your answer should exceed 3 sentences.", AT_LEAST, 4), ("Do not exceed 3 sentences.", LESS_THAN, 4),
    ("Keep it shorter than 3 sentences.", LESS_THAN, 3), ("Make it 3 sentences long or longer.", AT_LEAST, 3)])
def test_a_negated_or_comparative_count_keeps_its_meaning(text, relation, count):
    found = [i for i in recognise(text).instructions if i.id == "length_constraints:number_sentences"]
    assert found == [inst("length_constraints:number_sentences", num_sentences=count, relation=relation)], text


def test_a_negated_frequency_keeps_its_meaning():
    assert recognise("Do not use the word river more than 3 times.").instructions == [
        inst("keywords:frequency", keyword="river", frequency=4, relation=LESS_THAN)]  # not a forbidden word
    assert recognise("Never use the letter e more than 5 times.").instructions == [
        inst("keywords:letter_frequency", letter="e", let_frequency=6, let_relation=LESS_THAN)]
    assert recognise("Do not use the word river.").instructions == [
        inst("keywords:forbidden_words", forbidden_words=["river"])]
    assert recognise("Do not use more than 3 all-caps words.").instructions == [
        inst("change_case:capital_word_frequency", capital_frequency=4, capital_relation=LESS_THAN)]
    assert recognise("Do not use commas and use at least 2 words in all capital letters.").instructions == [
        inst("change_case:capital_word_frequency", capital_frequency=2, capital_relation=AT_LEAST),
        inst("punctuation:no_comma")]  # a negation more than two words before the count is another instruction's


def test_several_instructions_in_one_request():
    found = recognise("Describe owls. Use no commas, write in all lowercase and include the keywords night and "
                      "feather.")
    assert [i.id for i in found.instructions] == ["punctuation:no_comma", "change_case:english_lowercase",
                                                  "keywords:existence"]
    assert found.instructions[-1].kwargs == {"keywords": ["night", "feather"]}


def test_numbers_in_words_and_digits():
    assert ([ifx.parse_count(t) for t in ("50", "1,000", "fifty-five", "one hundred and two", "twelve", "2.0")]
            == [50, 1000, 55, 102, 12, 2])
    assert ifx.parse_count("2.5") is None
    for absurd in ("10^100", "10**100", "1e100", "99999999999", "a googol", "3 x 10^50"):
        assert ifx.parse_count(absurd.removeprefix("a ")) > ifx.MAX_COUNT
    assert ifx.number_words(25) == "twenty-five" and ifx.number_words(102) == "one hundred and two"


# ---- invalid requests: no instruction, problems, contradictions, unmeetable ------------------------------------------
INVALID = {
    "Tell me about cats.": "no verifiable instruction",
    "Answer in lowercase and in all capital letters.": "all lowercase and all capitals",
    "Use at most 20 words and at least 100 words.": "the bounds leave no count",
    "Include the keywords apple and pear. Do not use the word apple.": "forbidden word 'apple'",
    "Write in all lowercase. Your response must have 2 sections. Mark the beginning of each section with Section X.":
        "not in lowercase",
    "Write at least 10^100 words.": "over 1000000",
    "Write at least a googol words.": "over 1000000",
    "Use at least 99999999999 words.": "over 1000000",
    "Write at least 300 words.": "at most 48",
    "Write 2.5 sentences or more.": "not a whole number",
    "Use at least 3 bullet points.": "exact",
    "Use 2 paragraphs separated by blank lines; paragraph 5 must start with the word alpha.": "no paragraph 5",
    "Finish your response with the phrase \"Bye now.\" Your reply must end with \"See you.\"": "two different endings",
    "Answer in at most 5 words. First repeat the request word for word, then answer. Write about rivers and the sea "
    "today.":
        "need at least",
}


@pytest.mark.parametrize("text", list(INVALID))
def test_invalid_requests_say_why(text):
    task = InstructionsTask()
    with pytest.raises(InvalidQuery, match=INVALID[text]):
        task.parse_query(text)


def test_answer_budget_follows_the_token_option():
    text = "Write at least 100 words."
    with pytest.raises(InvalidQuery):
        InstructionsTask().parse_query(text)
    assert InstructionsTask(max_answer_tokens=256).parse_query(text) == text
    with pytest.raises(ValueError):
        InstructionsTask(max_answer_tokens=0)


def test_parse_query_keeps_the_request_as_written():
    task = InstructionsTask()
    assert task.parse_query('Query: "Describe owls. Use no commas."') == "Describe owls. Use no commas."
    assert (task.solver_messages("Describe owls. Use no commas.")[-1]
            == {"role": "user", "content": "Describe owls. Use no commas."})


# ---- hostile text ----------------------------------------------------------------------------------------------------
HOSTILE = [c * 100_000 for c in "a *[<>\n\t.,-\"'{"] + [
    "<<" * 50_000, "[[" * 50_000, "*a" * 50_000, "**a" * 33_000, "\n\n" * 50_000, "Section 1 " * 10_000,
    "p.s. " * 20_000, "1," * 50_000, "one " * 25_000, "twenty-" * 14_000, "{" * 50_000 + "}" * 50_000, "9^" * 50_000,
    "the letter a should appear at least " * 3_000, "paragraph 1 must start with the word " * 3_000,
]
# requests of up to MAX_REQUEST_CHARS made of every recogniser's cue words, so that every pattern runs
CUES = " ".join(cue for _, cues, _, _ in ifx._RECOGNISERS for cue in cues)
HOSTILE_REQUESTS = [((piece + " " + CUES + " ") * 200)[:ifx.MAX_REQUEST_CHARS] for piece in
                    ("1,1,1,1", "one one one", "at least at least", "the words", "*a*a", "repeat the request (",
                     "9^9^9")]


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    assert time.perf_counter() - start < FAST_S
    return result


@pytest.mark.parametrize("index", range(len(HOSTILE)))
def test_hostile_answers_finish_quickly(index):
    answer = HOSTILE[index]
    for instruction, _, _ in CHECKS:
        timed(check, instruction, answer)
        timed(check, instruction, answer, True)
    timed(recognise, answer)


@pytest.mark.parametrize("index", range(len(HOSTILE_REQUESTS)))
def test_hostile_requests_finish_quickly(index):
    ifx._recognise.cache_clear()
    found = timed(recognise, HOSTILE_REQUESTS[index])
    timed(ifx.problems, found.instructions, 48)


PIECES = ["at least", "no more than", "10^100", "fifty", "words", "sentences", "paragraph 2", "the word", "commas",
          "lowercase", "all caps", "***", "******", "<<", ">>", "[", "]", "*", "\n\n", "Section 1", "P.S.", "JSON",
          "repeat the request word for word", "(", ")", "\"", "'", ",", ".", "between 3 and", "times", "the letter"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), max_size=30).map(" ".join))
def test_any_text_is_recognised_or_rejected_without_error(text):
    found = recognise(text)
    ifx.problems(found.instructions, 48)
    for instruction in found.instructions:
        check(instruction, text, loose=True)
    for instruction, _, _ in CHECKS:
        check(instruction, text, loose=True)


def test_regex_special_characters_in_arguments_are_literal():
    assert check(inst("keywords:existence", keywords=["a.c"]), "abc") is False
    assert check(inst("keywords:forbidden_words", forbidden_words=["a.c"]), "abc") is True
    assert check(inst("keywords:frequency", keyword="a+", frequency=2, relation=AT_LEAST), "a+ a+ aa") is True
    assert check(inst("detectable_format:multiple_sections", section_spliter="S.", num_sections=1), "SX 1") is False


# ---- data ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def heldout():
    return {split: InstructionsTask().heldout(split) for split in InstructionsTask.heldout_splits}


def test_heldout_set_size_and_coverage(heldout):
    items = heldout["dev"] + heldout["test"]
    assert len(items) >= 300 and heldout["dev"] and heldout["test"]
    assert all(1 <= len(item["instruction_id_list"]) <= 3 for item in items)
    assert len({i for item in items for i in item["instruction_id_list"]}) >= 20
    assert len({item["key"] for item in items}) == len(items)


def test_every_heldout_request_is_recognised_with_exactly_its_instructions(heldout):
    task = InstructionsTask()
    for item in heldout["dev"] + heldout["test"]:
        assert task.parse_query(item["prompt"]) == item["prompt"]
        assert ifx.same_instructions(recognise(item["prompt"]).instructions, ifx.item_instructions(item)), item


def test_heldout_topics_are_never_trained_on(heldout):
    assert not set(instruction_data.EVAL_TOPICS) & set(instruction_data.TRAIN_TOPICS)
    training = InstructionsTask().default_prompts()
    assert len(training) >= 500 and len(set(training)) == len(training)
    joined = "\n".join(training)
    for item in heldout["dev"] + heldout["test"]:
        assert item["topic"] in instruction_data.EVAL_TOPICS and item["topic"] not in joined


def test_the_rephrased_split_holds_out_the_wording_too(heldout):
    def sentences(text):  # of five words or more: IFEval's fixed options ("My answer is no.") are shared text
        return {piece for piece in re.split(r"(?<=[.!?])\s+", text) if len(re.findall(r"[A-Za-z]+", piece)) >= 5}

    rephrased = heldout["test_rephrased"]
    assert len(rephrased) >= 200 and len({i for item in rephrased for i in item["instruction_id_list"]}) >= 20
    assert not set(instruction_data.REPHRASED_FRAMES) & set(instruction_data.FRAMES)
    for name, entries in instruction_data.REPHRASED_TEMPLATES.items():
        assert not {t for _, t in entries} & {t for _, t in ifx.TEMPLATES[name]}, name
    task = InstructionsTask()
    seen = set().union(*map(sentences, task.default_prompts()))
    for seed in range(50):  # and the challenger's examples
        seen |= {s for m in task.challenger_messages(np.random.default_rng(seed)) for s in sentences(m["content"])}
    for item in rephrased:
        assert not sentences(item["prompt"]) & seen, item["prompt"]


def test_data_files_are_what_the_seeded_generator_writes(tmp_path, heldout):
    instruction_data.write_data_files(tmp_path)
    lines = (tmp_path / "instructions_train.txt").read_text().splitlines()
    assert lines == InstructionsTask().default_prompts()
    assert json.loads((tmp_path / "instructions_eval.json").read_text()) == heldout


def test_challenger_examples_follow_the_seed():
    task = InstructionsTask()
    chat = task.challenger_messages(np.random.default_rng(0))
    assert (chat == task.challenger_messages(np.random.default_rng(0))
            != task.challenger_messages(np.random.default_rng(1)))
    examples = [m["content"] for m in chat if m["role"] == "assistant"]
    assert len(examples) == 6 and all(task.parse_query(e) == e for e in examples)
    few = InstructionsTask(challenger_examples=2).challenger_messages(np.random.default_rng(0))
    assert [m["role"] for m in few] == ["system", "user", "assistant", "user", "assistant", "user"]
    with pytest.raises(ValueError, match="challenger_examples=-1"):
        InstructionsTask(challenger_examples=-1)


def test_challenger_kinds_name_each_examples_kinds_and_spread_the_new_requests_over_every_id():
    task = InstructionsTask(challenger_kinds=True)
    chat = task.challenger_messages(np.random.default_rng(0))
    for ask, example in zip(chat[1::2], chat[2::2]):  # each example answers a turn naming its own kinds
        named = ask["content"].split(": ", 1)[1].rstrip(".").split("; ")
        assert named == [ifx.KIND_NAMES[i.id] for i in task.recognise(example["content"])]
    assert set(ifx.KIND_NAMES) == set(ifx.INSTRUCTION_IDS) and len(set(ifx.KIND_NAMES.values())) == len(ifx.KIND_NAMES)
    asked = collections.Counter(kind for seed in range(400) for kind in task.challenger_messages(
        np.random.default_rng(seed))[-1]["content"].split(": ", 1)[1].rstrip(".").split("; "))
    assert set(asked) == set(ifx.KIND_NAMES.values()) and max(asked.values()) < 3 * min(asked.values()), asked
    plain = InstructionsTask().challenger_messages(np.random.default_rng(0))
    assert {m["content"] for m in plain if m["role"] == "user"} == {"Write one new request."}
    assert [m["content"] for m in plain if m["role"] == "assistant"] == [m["content"] for m in chat[2::2]]


# ---- scoring ---------------------------------------------------------------------------------------------------------
def test_score_gives_ifevals_four_figures():
    items = [
        {"prompt": "a", "instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"],
         "kwargs": [{}, {}]},
        {"prompt": "b", "instruction_id_list": ["detectable_format:json_format"], "kwargs": [{"num_words": None}]},
        "Describe owls. Use no commas.",  # a plain request: its instructions are recognised
    ]
    answers = ["no commas here", 'Sure:\n{"a": 1}', "Owls, hoot."]
    result = ifx.score(items, answers)
    assert result["prompt_strict"] == pytest.approx(1 / 3) and result["prompt_loose"] == pytest.approx(2 / 3)
    assert result["instruction_strict"] == pytest.approx(2 / 4) and result["instruction_loose"] == pytest.approx(3 / 4)
    assert result["per_instruction"]["punctuation:no_comma"] == {"strict": 0.5, "loose": 0.5, "n": 2}
    assert result["per_instruction"]["detectable_format:json_format"] == {"strict": 0.0, "loose": 1.0, "n": 1}
    assert (result["n_prompts"], result["n_instructions"]) == (3, 4)
    with pytest.raises(ValueError):
        ifx.score(items, answers[:2])


def test_task_scores_its_heldout_split(heldout):
    task = InstructionsTask()
    items = heldout["dev"]
    result = task.score(items, ["My answer is yes."] * len(items))
    assert set(result) >= {"prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose",
                           "per_instruction"}
    assert 0 <= result["prompt_strict"] <= result["prompt_loose"] <= 1
    with pytest.raises(ValueError):
        task.heldout("train")


# ---- the envs --------------------------------------------------------------------------------------------------------
IF_IDS = ["LSP-IF-v0", "LSP-IF-Data-v0"]


@pytest.fixture(autouse=True)
def _tiny(tiny_pair):
    """Load the tiny model once (envs share it through the cache)."""


@pytest.mark.parametrize("env_id", IF_IDS)
def test_registered_and_check_env_passes(env_id):
    assert env_id in lsp_env.ENV_IDS
    env = gymnasium.make(env_id, model="tiny-random", num_generations=2)
    assert isinstance(env.unwrapped.reward_fn, lsp_env.InstructionReward)
    check_env(env.unwrapped)


def test_round_rewards_are_the_share_of_followed_instructions():
    env = gymnasium.make("LSP-IF-v0", model="tiny-random", num_generations=3)
    env.reset(seed=0)
    request = "Describe owls. Use no commas, answer in at most 5 words and include the keywords night and wise."
    obs, reward, terminated, _, info = env.step(request)
    assert obs == {"role": 1, "prompt": request} and not terminated and info["messages"][-1]["content"] == request
    answers = ["Wise night hunters.", "Night owls, wise.", "Owls, owls, owls, owls, owls, owls."]
    expected = [1.0, 2 / 3, 0.0]
    for answer, share in zip(answers, expected):
        _, reward, terminated, _, info = env.step(answer)
        assert reward == pytest.approx(share)
        assert [(d["id"], d["passed"]) for d in info["instructions"]][0][0] == "punctuation:no_comma"
        assert sum(d["passed"] for d in info["instructions"]) / 3 == pytest.approx(share)
    assert {"id": "length_constraints:number_words", "kwargs": {"num_words": 6, "relation": LESS_THAN},
            "passed": False} in info["instructions"]
    assert terminated and info["rewards"]["solver"] == pytest.approx(expected)
    assert info["rewards"]["challenger"] == pytest.approx(-np.mean(expected))


def test_invalid_requests_end_the_round_with_a_reason():
    env = gymnasium.make("LSP-IF-v0", model="tiny-random", num_generations=2)
    for text in ("Tell me about cats.", "Write in lowercase and in all caps.", "Write at least 10^100 words."):
        env.reset(seed=0)
        _, reward, terminated, _, info = env.step(text)
        assert terminated and reward == -1.0 and info["invalid_query"] and info["invalid_reason"]


def test_data_mode_draws_from_the_training_list():
    env = gymnasium.make("LSP-IF-Data-v0", model="tiny-random", num_generations=1)
    obs, info = env.reset(seed=0)
    assert obs["role"] == 1 and obs["prompt"] in InstructionsTask().default_prompts()
    *_, info = env.step("an answer")
    assert info["rewards"]["challenger"] is None and info["instructions"]


def test_options_of_the_other_envs_work_here():
    """quality=, kl=, payoff=, repetition_penalty= and the vector env, as on the other ids."""
    envs = gymnasium.make_vec("LSP-IF-v0", num_envs=2, model="tiny-random", num_generations=2, payoff="rzero",
                              quality=lsp_env.LengthReward(target_words=4), kl=lsp_env.KLHook(beta=0.1),
                              repetition_penalty=0.5, task_options={"max_answer_tokens": 128})
    assert envs.kl.beta == 0.1 and all(env.kl is envs.kl for env in envs.envs)
    envs.reset(seed=0)
    request = "Describe owls. Use no commas."
    envs.step([request, request])
    envs.step(["Owls hoot at night.", "Owls, hoot."])
    _, rewards, terminations, _, infos = envs.step(["Owls hoot.", "Owls hoot."])
    assert terminations.all()
    solver = infos["rewards"]["solver"]
    assert solver[0] == pytest.approx([1.0 + 1.0, 1.0 + 0.5]) and solver[1] == pytest.approx([0.0 + 0.5, 1.0 + 0.5])
    p = 0.5  # V(q) of the second sub-env; rzero payoff 1 - 2|p - 1/2|, + mean quality, - 0.5 x share of duplicates (1)
    assert infos["rewards"]["challenger"][1] == pytest.approx(1 - 2 * abs(p - 0.5) + 0.5 - 0.5)
    assert infos["instructions"][0] == [{"id": "punctuation:no_comma", "kwargs": {}, "passed": True}]


def test_request_mix_counts_each_id_once_per_request_and_every_instruction_per_request():
    from lsp_env.tasks.instructions import request_mix

    mix = request_mix([["change_case:lowercase", "change_case:lowercase", "keywords:existence"],
                       ["keywords:existence"]])
    assert mix == {"instructions/per_query": 2.0, "instructions/change_case:lowercase": 0.5,
                   "instructions/keywords:existence": 1.0}
    assert request_mix([]) == {"instructions/per_query": 0.0}  # no valid request this iteration: no division by 0


# ---- the coverage bonus: the challenger is paid for kinds the recent valid requests rarely held ------------------
def test_kind_history_rarity_hand_example():
    history = lsp_env.rewards.KindHistory(window=3)
    assert history.rarity(["a"]) == 0.0  # nothing remembered yet: nothing to compare with
    for kinds in (["a", "b"], ["a"], ["a", "a"]):  # a kind counts once per query
        history.add(kinds)
    assert history.rarity(["a"]) == 0.0 and history.rarity(["b"]) == pytest.approx(1 - 1 / 3)
    assert history.rarity(["c"]) == 1.0 and history.rarity(["a", "c"]) == pytest.approx(0.5)
    history.add(["c"])  # the window forgets the oldest query, the only one with "b"
    assert history.rarity(["b"]) == 1.0 and history.rarity(["c"]) == pytest.approx(0.5)
    copy = lsp_env.rewards.KindHistory(window=3)
    copy.load_state_dict(json.loads(json.dumps(history.state_dict())))  # through a checkpoint's JSON
    assert copy.rarity(["b"]) == 1.0 and copy.rarity(["c"]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="window"):
        lsp_env.rewards.KindHistory(window=4).load_state_dict(history.state_dict())
    with pytest.raises(ValueError, match="at least one"):
        lsp_env.rewards.KindHistory(window=0)


def test_coverage_bonus_pays_kinds_the_earlier_requests_lacked():
    envs = gymnasium.make_vec("LSP-IF-v0", num_envs=2, model="tiny-random", num_generations=1, payoff="zero_sum",
                              reward=lambda q, a: [0.0] * len(a), coverage_bonus=0.5)

    def payoffs(requests):
        envs.reset(seed=0)
        _, _, _, _, infos = envs.step(requests)
        rarity = [float(r) for r in infos["rarity"]]
        _, _, _, _, infos = envs.step(["an answer"] * 2)
        return rarity, [float(c) for c in infos["rewards"]["challenger"]]

    commas, lowercase = "Describe owls. Use no commas.", "Describe owls in lowercase letters only."
    # the two requests of one step are rated against the history before the step: empty, so no bonus yet
    assert payoffs([commas, commas]) == ([0.0, 0.0], [0.0, 0.0])
    rarity, paid = payoffs([commas, lowercase])  # no_comma asked twice before, lowercase never
    assert rarity == [0.0, 1.0] and paid == [0.0, 0.5]
    state = envs.state_dict()
    fresh = gymnasium.make_vec("LSP-IF-v0", num_envs=2, model="tiny-random", num_generations=1,
                               reward=lambda q, a: [0.0] * len(a), coverage_bonus=0.5)
    fresh.load_state_dict(json.loads(json.dumps(state)))
    assert fresh.envs[1].coverage is fresh.envs[0].coverage  # one history for every sub-env
    assert fresh.envs[0].coverage.rarity(["change_case:english_lowercase"]) == pytest.approx(1 - 1 / 3)
    single = gymnasium.make("LSP-IF-v0", model="tiny-random", num_generations=1, payoff="zero_sum",
                            reward=lambda q, a: [0.0] * len(a), coverage_bonus=0.5)
    single.reset(seed=0)
    single.step(commas)  # the first request: nothing remembered
    assert single.step("an answer")[4]["rewards"]["challenger"] == 0.0
    single.reset(seed=0)
    assert single.step(lowercase)[4]["rarity"] == 1.0
    with pytest.raises(ValueError, match="no kinds"):
        gymnasium.make("LSP-Arith-v0", model="tiny-random", coverage_bonus=0.5)


def test_example_archive_shows_the_queries_whose_answers_scored_apart():
    def reward(queries, answers):  # "yes" passes, anything else fails: the solver's scores vary only if it mixes them
        return [float(a == "yes") for a in answers]

    envs = gymnasium.make_vec("LSP-IF-v0", num_envs=2, model="tiny-random", num_generations=2, reward=reward,
                              example_archive=3, shared_challenger_prompt=True)
    _, infos = envs.reset(seed=0)
    templates = [m["content"] for m in infos["messages"][0] if m["role"] == "assistant"]
    apart, alike = "Describe owls. Use no commas.", "Describe owls in lowercase letters only."
    envs.step([apart, alike])
    envs.step(["yes", "no"])
    envs.step(["no", "no"])  # every answer to `alike` scored the same: the update learns nothing from it
    assert list(envs.envs[0].archive.queries) == [apart] and envs.envs[1].archive is envs.envs[0].archive
    _, infos = envs.reset(seed=0)
    for chat in infos["messages"]:  # the archived request is the last example; the templates fill the other slots
        shown = [m["content"] for m in chat if m["role"] == "assistant"]
        assert shown[-1] == apart and len(shown) == len(templates) and apart not in templates
    fresh = gymnasium.make_vec("LSP-IF-v0", num_envs=2, model="tiny-random", reward=reward, example_archive=3)
    fresh.load_state_dict(json.loads(json.dumps(envs.state_dict())))
    assert list(fresh.envs[1].archive.queries) == [apart]
    with pytest.raises(ValueError, match="cannot resume"):
        gymnasium.make_vec("LSP-IF-v0", model="tiny-random", example_archive=5).load_state_dict(envs.state_dict())
    off = gymnasium.make_vec("LSP-IF-v0", num_envs=2, model="tiny-random", reward=reward, shared_challenger_prompt=True)
    assert [m["content"] for m in off.reset(seed=0)[1]["messages"][0] if m["role"] == "assistant"] == templates
    with pytest.raises(ValueError, match="example_archive"):
        gymnasium.make("LSP-Arith-v0", model="tiny-random", example_archive=4)
