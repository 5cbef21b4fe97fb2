"""The demo corpus's English grammar: random sentences, lower-case words only.

Six categories, each a list of templates whose ``{slots}`` are filled at random:

- ``number``: cardinal numbers in words, up to 999 999 ("three hundred and forty two"), prices,
  years ("nineteen eighty four");
- ``digits``: digit strings read one by one, zero as "zero" or "oh" (phone numbers, codes);
- ``time``: times of day ("half past seven", "ten forty five p m", "six o'clock");
- ``date``: weekdays, months and ordinals ("tuesday the twenty first of march");
- ``command``: short spoken commands ("set an alarm for ...", "turn off the lights in the kitchen");
- ``question``: short questions ("what is the weather like on friday").

Transcripts hold only ``a``-``z``, the apostrophe and single spaces (``ALLOWED_CHARACTERS``); no
digits or punctuation, so what is written is exactly what is said. ``spoken_form`` turns a
transcript into the text given to the speech synthesizer where the two must differ ("a m" is
read as the letters "a.m.", not the article "a").

The slots' words come from ``rnnt/corpus/vocabulary.py``, numbers in words from
``rnnt/corpus/spoken_numbers.py``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from rnnt.corpus.spoken_numbers import digit_words, number_words, ordinal_words, year_words
from rnnt.corpus.vocabulary import (
    CONTACTS,
    CURRENCIES,
    DEVICES,
    ITEMS,
    MONTHS,
    MUSIC,
    NAMES,
    ON_OFF,
    OPENABLES,
    PAST,
    PLACES,
    ROOMS,
    SHOPS,
    TASKS,
    UNITS_OF_MEASURE,
    WEATHER,
    WEEKDAYS,
    WHEN,
)

ALLOWED_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz' ")
CATEGORIES = ("number", "digits", "time", "date", "command", "question")


def spoken_form(text: str) -> str:
    """The text to give the synthesizer for a transcript (letters that must be read as letters)."""
    return _SPOKEN_PATTERN.sub(lambda match: _SPOKEN_FORMS[match.group(0)], text)


@dataclass(frozen=True)
class Sentence:
    """One generated sentence: its transcript and its category (one of ``CATEGORIES``)."""

    text: str
    category: str


def generate_sentence(rng: random.Random, category: str | None = None) -> Sentence:
    """One random sentence; ``category`` None draws the category at random too.

    Deterministic for the state of ``rng`` (Python's ``random.Random``).
    """
    if category is None:
        category = rng.choice(CATEGORIES)
    if category not in _TEMPLATES:
        raise ValueError(f"unknown sentence category {category!r}; choose from {CATEGORIES}")
    template = rng.choice(_TEMPLATES[category])
    text = _SLOT.sub(lambda match: _SLOTS[match.group(1)](rng), template)
    return Sentence(text=" ".join(text.split()), category=category)


# --- internals ---------------------------------------------------------------------------------

_SPOKEN_FORMS = {"a m": "a.m.", "p m": "p.m."}
_SPOKEN_PATTERN = re.compile(r"\b(?:a m|p m)\b")


def _number(rng: random.Random) -> str:
    band = rng.random()
    if band < 0.3:
        return number_words(rng.randint(0, 20))
    if band < 0.6:
        return number_words(rng.randint(21, 99))
    if band < 0.85:
        return number_words(rng.randint(100, 999))
    return number_words(rng.randint(1000, 999_999))


def _digits(rng: random.Random, low: int, high: int) -> str:
    count = rng.randint(low, high)
    digits = "".join(str(rng.randint(0, 9)) for _ in range(count))
    return digit_words(digits, zero=rng.choice(("zero", "oh")))


def _hour(rng: random.Random) -> str:
    return number_words(rng.randint(1, 12))


def _time(rng: random.Random) -> str:
    form = rng.randrange(6)
    hour = _hour(rng)
    if form == 0:
        return f"{hour} o'clock"
    if form == 1:
        return f"{rng.choice(('half past', 'quarter past', 'quarter to'))} {hour}"
    if form == 2:
        minutes = rng.choice(("five", "ten", "twenty", "twenty five"))
        return f"{minutes} {rng.choice(('past', 'to'))} {hour}"
    if form == 5:
        return rng.choice(("noon", "midnight", f"{hour} in the morning", f"{hour} in the evening"))
    minute = rng.randint(1, 59)
    minute_words = f"oh {number_words(minute)}" if minute < 10 else number_words(minute)
    suffix = rng.choice(("", " a m", " p m")) if form == 4 else ""
    return f"{hour} {minute_words}{suffix}"


def _date(rng: random.Random) -> str:
    day = ordinal_words(rng.randint(1, 31))
    month = rng.choice(MONTHS)
    form = rng.randrange(6)
    if form == 0:
        return f"{rng.choice(WEEKDAYS)} the {day} of {month}"
    if form == 1:
        return f"the {day} of {month}"
    if form == 2:
        return f"{month} the {day}"
    if form == 3:
        return f"{rng.choice(('', 'next ', 'this '))}{rng.choice(WEEKDAYS)}"
    if form == 4:
        return f"{month} {day} {year_words(rng.randint(1900, 2099), rng)}"
    return rng.choice(("tomorrow", "today", "the day after tomorrow", f"next {month}"))


_SLOTS: dict[str, Callable[[random.Random], str]] = {
    "number": _number,
    "small": lambda rng: number_words(rng.randint(1, 20)),
    "minutes": lambda rng: number_words(rng.choice((1, 2, 3, 5, 10, 15, 20, 25, 30, 40, 45, 90))),
    "percent": lambda rng: number_words(5 * rng.randint(1, 20)),
    "degrees": lambda rng: number_words(rng.randint(15, 28)),
    "cents": lambda rng: number_words(rng.randint(1, 99)),
    "year": lambda rng: year_words(rng.randint(1900, 2099), rng),
    "phone": lambda rng: _digits(rng, 7, 11),
    "code": lambda rng: _digits(rng, 3, 8),
    "pin": lambda rng: _digits(rng, 4, 4),
    "time": _time,
    "date": _date,
    "weekday": lambda rng: rng.choice(WEEKDAYS),
    "month": lambda rng: rng.choice(MONTHS),
    "ordinal": lambda rng: ordinal_words(rng.randint(1, 31)),
    "name": lambda rng: rng.choice(NAMES),
    "contact": lambda rng: rng.choice(CONTACTS),
    "room": lambda rng: rng.choice(ROOMS),
    "device": lambda rng: rng.choice(DEVICES),
    "openable": lambda rng: rng.choice(OPENABLES),
    "place": lambda rng: rng.choice(PLACES),
    "shop": lambda rng: rng.choice(SHOPS),
    "item": lambda rng: rng.choice(ITEMS),
    "music": lambda rng: rng.choice(MUSIC),
    "task": lambda rng: rng.choice(TASKS),
    "weather": lambda rng: rng.choice(WEATHER),
    "when": lambda rng: rng.choice(WHEN),
    "past": lambda rng: rng.choice(PAST),
    "on_off": lambda rng: rng.choice(ON_OFF),
    "currency": lambda rng: rng.choice(CURRENCIES),
    "unit": lambda rng: rng.choice(UNITS_OF_MEASURE),
}
_SLOT = re.compile(r"\{(\w+)\}")

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "number": (
        "{number}",
        "it costs {number} {currency}",
        "that will be {number} {currency} and {cents} cents",
        "the total is {number} {currency}",
        "there are {number} people in the queue",
        "my score was {number} points",
        "turn to page {number}",
        "the population is about {number}",
        "we drove {number} {unit} today",
        "add {number} and {number}",
        "i was born in {year}",
        "the house was built in {year}",
        "the room number is {number}",
        "take {small} tablets a day",
    ),
    "digits": (
        "my phone number is {phone}",
        "call {phone}",
        "dial {phone}",
        "the code is {code}",
        "my pin is {pin}",
        "the order number is {code}",
        "enter {code}",
        "the tracking number is {code}",
        "flight {code} is delayed",
        "the door code is {pin}",
    ),
    "time": (
        "set an alarm for {time}",
        "wake me up at {time}",
        "the meeting starts at {time}",
        "it is {time}",
        "the train leaves at {time}",
        "remind me at {time}",
        "the shop closes at {time}",
        "dinner is at {time}",
        "i will be home by {time}",
    ),
    "date": (
        "my birthday is on the {ordinal} of {month}",
        "the party is on {date}",
        "book a table for {date}",
        "the deadline is {date}",
        "we are flying out on {date}",
        "{date}",
        "the appointment is on {date} at {time}",
        "today is {weekday} the {ordinal} of {month}",
    ),
    "command": (
        "turn {on_off} the {device}",
        "turn {on_off} the lights in the {room}",
        "switch {on_off} the {device} in the {room}",
        "dim the lights in the {room} to {percent} percent",
        "set the temperature to {degrees} degrees",
        "set a timer for {minutes} minutes",
        "set an alarm for {time} on {weekday}",
        "remind me to {task} at {time}",
        "remind me to {task} {when}",
        "call {contact}",
        "send a message to {contact}",
        "tell {name} i will be late",
        "play {music}",
        "play {music} in the {room}",
        "pause the music",
        "skip this song",
        "set the volume to {small}",
        "add {item} to the shopping list",
        "add {item} and {item} to my list",
        "open the {openable}",
        "close the {openable}",
        "lock the {openable}",
        "navigate to {place}",
        "book a taxi to {place} for {time}",
        "schedule a meeting with {name} on {date}",
        "cancel my meeting with {name}",
    ),
    "question": (
        "what is the weather like on {weekday}",
        "what is the weather like in {place}",
        "will it rain {when}",
        "is it going to be {weather} {when}",
        "what time is it",
        "what time is it in {place}",
        "how long does it take to get to {place}",
        "when is my next meeting",
        "what is on my calendar {when}",
        "what day is the {ordinal} of {month}",
        "what is {number} plus {number}",
        "what is {number} times {small}",
        "how many days until {date}",
        "is the {device} on",
        "are the lights in the {room} on",
        "who called me {past}",
        "did {name} call",
        "what is the temperature in the {room}",
        "when does the {shop} open",
        "what time does the {shop} close on {weekday}",
        "where is the nearest {shop}",
        "do we have any {item}",
        "how far is {place} from here",
        "what's the traffic like on the way to {place}",
    ),
}
