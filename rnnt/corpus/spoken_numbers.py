"""Numbers as spoken English words: cardinals, ordinals, years and digit strings.

British style ("three hundred and forty two"); lower-case words and single spaces only, so the
results fit the demo grammar's transcripts as they are.
"""

from __future__ import annotations

import random

_UNITS = [
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
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORDINAL_UNITS = [
    "_",
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "eleventh",
    "twelfth",
    "thirteenth",
    "fourteenth",
    "fifteenth",
    "sixteenth",
    "seventeenth",
    "eighteenth",
    "nineteenth",
]
_ORDINAL_TENS = {20: "twentieth", 30: "thirtieth"}


def number_words(value: int) -> str:
    """A cardinal number 0 <= value < 1 000 000 in words, British style ("... hundred and ...")."""
    if not 0 <= value < 1_000_000:
        raise ValueError(f"number_words covers 0 to 999999, got {value}")
    if value < 1000:
        return _below_thousand(value)
    thousands, rest = divmod(value, 1000)
    words = f"{_below_thousand(thousands)} thousand"
    if rest == 0:
        return words
    if rest < 100:
        return f"{words} and {_below_hundred(rest)}"
    return f"{words} {_below_thousand(rest)}"


def ordinal_words(value: int) -> str:
    """An ordinal 1 <= value <= 99 in words ("twenty first")."""
    if not 1 <= value <= 99:
        raise ValueError(f"ordinal_words covers 1 to 99, got {value}")
    if value < 20:
        return _ORDINAL_UNITS[value]
    tens, unit = divmod(value, 10)
    if unit == 0:
        return _ORDINAL_TENS.get(value, _TENS[tens].removesuffix("y") + "ieth")
    return f"{_TENS[tens]} {_ORDINAL_UNITS[unit]}"


def year_words(year: int, rng: random.Random) -> str:
    """A year 1900..2099 as people say it ("nineteen oh five", "twenty twenty five")."""
    century, rest = divmod(year, 100)
    if century == 20 and (rest < 10 or rng.random() < 0.3):
        return "two thousand" if rest == 0 else f"two thousand and {number_words(rest)}"
    head = number_words(century)
    if rest == 0:
        return f"{head} hundred"
    if rest < 10:
        return f"{head} oh {number_words(rest)}"
    return f"{head} {number_words(rest)}"


def digit_words(digits: str, zero: str = "zero") -> str:
    """A digit string read digit by digit ("5550" -> "five five five zero")."""
    return " ".join(zero if digit == "0" else _UNITS[int(digit)] for digit in digits)


# --- internals ---------------------------------------------------------------------------------


def _below_hundred(value: int) -> str:
    if value < 20:
        return _UNITS[value]
    tens, unit = divmod(value, 10)
    return _TENS[tens] if unit == 0 else f"{_TENS[tens]} {_UNITS[unit]}"


def _below_thousand(value: int) -> str:
    hundreds, rest = divmod(value, 100)
    if hundreds == 0:
        return _below_hundred(rest)
    words = f"{_UNITS[hundreds]} hundred"
    return words if rest == 0 else f"{words} and {_below_hundred(rest)}"
