"""The demo corpus's sentence grammar (rnnt/corpus/grammar.py) and its number words."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from rnnt.corpus.grammar import ALLOWED_CHARACTERS, CATEGORIES, generate_sentence, spoken_form
from rnnt.corpus.spoken_numbers import digit_words, number_words, ordinal_words, year_words
from rnnt.corpus.vocabulary import MONTHS, WEEKDAYS


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (0, "zero"),
        (13, "thirteen"),
        (40, "forty"),
        (342, "three hundred and forty two"),
        (100, "one hundred"),
        (2005, "two thousand and five"),
        (12300, "twelve thousand three hundred"),
        (100_100, "one hundred thousand one hundred"),
        (999_999, "nine hundred and ninety nine thousand nine hundred and ninety nine"),
    ],
)
def test_number_words(value, words):
    assert number_words(value) == words


def test_ordinals_years_and_digits():
    assert [ordinal_words(n) for n in (1, 2, 3, 12, 20, 21, 30, 31)] == [
        "first",
        "second",
        "third",
        "twelfth",
        "twentieth",
        "twenty first",
        "thirtieth",
        "thirty first",
    ]
    rng = random.Random(0)
    assert year_words(1984, rng) == "nineteen eighty four"
    assert year_words(1905, rng) == "nineteen oh five"
    assert year_words(2003, rng) == "two thousand and three"
    assert digit_words("5550123", zero="oh") == "five five five oh one two three"
    with pytest.raises(ValueError, match="0 to 999999"):
        number_words(1_000_000)


def test_sentences_use_only_allowed_characters_and_cover_every_category():
    rng = random.Random(1)
    sentences = [generate_sentence(rng) for _ in range(3000)]
    for sentence in sentences:
        assert set(sentence.text) <= ALLOWED_CHARACTERS, sentence
        assert sentence.text == " ".join(sentence.text.split())  # single spaces, no padding
    assert set(Counter(s.category for s in sentences)) == set(CATEGORIES)
    words = {word for s in sentences for word in s.text.split()}
    assert len(words) >= 300  # "a few hundred words"
    text = " ".join(s.text for s in sentences)
    for expected in ("hundred and", "half past", " p m", "o'clock", "set an alarm for"):
        assert expected in text
    assert any(day in words for day in WEEKDAYS) and any(month in words for month in MONTHS)


_NUMBER_WORDS = set(
    [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
        "thirty",
        "forty",
        "fifty",
        "sixty",
        "seventy",
        "eighty",
        "ninety",
        "hundred",
        "thousand",
    ]
)
_DIGIT_WORDS = set(
    ["zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
)


def _has_digit_run(words: list[str], length: int = 3) -> bool:
    run = 0
    for word in words:
        run = run + 1 if word in _DIGIT_WORDS else 0
        if run >= length:
            return True
    return False


_CATEGORY_CHECKS = {
    "number": lambda words: bool(_NUMBER_WORDS & set(words)),
    "digits": _has_digit_run,
    "time": lambda words: bool((_NUMBER_WORDS | {"noon", "midnight"}) & set(words)),
    "date": lambda words: bool(set(WEEKDAYS + MONTHS + ["today", "tomorrow"]) & set(words)),
    "command": lambda words: (
        words[0]
        in [
            "turn",
            "switch",
            "dim",
            "set",
            "remind",
            "call",
            "send",
            "tell",
            "play",
            "pause",
            "skip",
            "add",
            "open",
            "close",
            "lock",
            "navigate",
            "book",
            "schedule",
            "cancel",
        ]
    ),
    "question": lambda words: (
        words[0]
        in ["what", "what's", "is", "will", "how", "when", "are", "who", "did", "where", "do"]
    ),
}


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_category_generates_its_kind(category):
    rng = random.Random(2)
    sentences = [generate_sentence(rng, category) for _ in range(300)]
    assert {sentence.category for sentence in sentences} == {category}
    for sentence in sentences:
        assert _CATEGORY_CHECKS[category](sentence.text.split()), sentence
    assert len({sentence.text for sentence in sentences}) > 50  # not a few fixed sentences


def test_generation_is_deterministic_for_a_seed():
    first = [generate_sentence(random.Random(5)).text for _ in range(3)]
    assert len(set(first)) == 1
    run_a = [generate_sentence(rng).text for rng in [random.Random(9)] for _ in range(50)]
    run_b = [generate_sentence(rng).text for rng in [random.Random(9)] for _ in range(50)]
    assert run_a == run_b


def test_spoken_form_reads_am_pm_as_letters():
    assert spoken_form("ten forty five a m") == "ten forty five a.m."
    assert spoken_form("seven p m at a meeting") == "seven p.m. at a meeting"
    assert spoken_form("a man") == "a man"


def test_unknown_category_is_an_error():
    with pytest.raises(ValueError, match="unknown sentence category 'poetry'"):
        generate_sentence(random.Random(0), "poetry")
