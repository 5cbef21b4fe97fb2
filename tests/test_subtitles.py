"""Subtitles from word timings: cue grouping rules, and SRT / WebVTT files that real parsers
(the `srt` and `webvtt-py` packages, strict mode) read back to the same times and text."""

from __future__ import annotations

import html
import os
import re
from datetime import timedelta
from itertools import pairwise

import pytest
import srt
import webvtt
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnt.constants import (
    SUBTITLE_MAX_CHARS,
    SUBTITLE_MAX_GAP_S,
    SUBTITLE_MAX_SECONDS,
    SUBTITLE_MIN_SECONDS,
)
from rnnt.subtitles import Cue, subtitle_cues, to_srt, to_webvtt, write_subtitles
from rnnt.timestamps import WordTiming

# The WebVTT spec's cue timings line, with no cue settings: hours of two or more digits (and
# here always written), minutes and seconds 00-59, exactly three digits of milliseconds.
_VTT_TIME = r"\d{2,}:[0-5]\d:[0-5]\d\.\d{3}"
VTT_TIMING_LINE = re.compile(rf"{_VTT_TIME} --> {_VTT_TIME}")
SRT_TIMING_LINE = re.compile(r"\d{2,}:[0-5]\d:[0-5]\d,\d{3} --> \d{2,}:[0-5]\d:[0-5]\d,\d{3}")


def word(text: str, start: float, end: float) -> WordTiming:
    return WordTiming(text, start, end, 1.0)


def ms(seconds: float) -> int:
    return round(seconds * 1000)


def parsed_srt(text: str) -> list[tuple[int, int, str]]:
    subtitles = list(srt.parse(text))
    assert [subtitle.index for subtitle in subtitles] == list(range(1, len(subtitles) + 1))
    return [
        (subtitle.start // timedelta(milliseconds=1), subtitle.end // timedelta(milliseconds=1),
         subtitle.content)
        for subtitle in subtitles
    ]  # fmt: skip


def parsed_webvtt(text: str) -> list[tuple[int, int, str]]:
    for line in text.split("\n"):
        if "-->" in line:
            assert VTT_TIMING_LINE.fullmatch(line), line
    captions = webvtt.from_string(text, strict=True).captions
    return [
        (
            caption.start_time.in_milliseconds(),
            caption.end_time.in_milliseconds(),
            html.unescape(caption.raw_text),
        )
        for caption in captions
    ]


def as_ms(cues: list[Cue]) -> list[tuple[int, int, str]]:
    return [(ms(cue.start), ms(cue.end), cue.text) for cue in cues]


SENTENCE = [
    word("the", 0.00, 0.20),
    word("quick", 0.24, 0.56),
    word("brown", 0.60, 0.92),
    word("fox", 0.96, 1.28),
    word("jumps", 2.80, 3.12),  # after a 1.52 s pause
    word("over", 3.16, 3.40),
]


# --- the files, read back by real parsers -------------------------------------------------------


def test_srt_reads_back_to_the_same_cues():
    cues = subtitle_cues(SENTENCE)
    text = to_srt(cues)
    assert (
        parsed_srt(text)
        == as_ms(cues)
        == [
            (0, 1280, "the quick brown fox"),
            (2800, 3800, "jumps over"),  # 0.6 s long: shown for SUBTITLE_MIN_SECONDS
        ]
    )
    assert text.split("\n")[:4] == ["1", "00:00:00,000 --> 00:00:01,280", "the quick brown fox", ""]
    assert all(SRT_TIMING_LINE.fullmatch(line) for line in text.split("\n") if "-->" in line)


def test_webvtt_reads_back_to_the_same_cues():
    cues = subtitle_cues(SENTENCE)
    text = to_webvtt(cues)
    assert text.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.280\nthe quick brown fox\n\n")
    assert parsed_webvtt(text) == as_ms(cues)


def test_webvtt_escapes_markup_and_srt_keeps_it():
    cues = [Cue(1.0, 2.0, "a<b> & c --> d"), Cue(2.0, 3.5, "R&D")]
    vtt = to_webvtt(cues)
    assert "a&lt;b&gt; &amp; c --&gt; d\n" in vtt and "R&amp;D\n" in vtt
    assert parsed_webvtt(vtt) == as_ms(cues)
    assert parsed_srt(to_srt(cues)) == as_ms(cues)


def test_hours_past_99_are_written_in_full():
    start = 100 * 3600 + 61.5  # 100 h 1 min 1.5 s
    cues = [Cue(start, start + 2, "late")]
    assert "100:01:01,500 --> 100:01:03,500" in to_srt(cues)
    assert "100:01:01.500 --> 100:01:03.500" in to_webvtt(cues)
    expected = [(ms(start), ms(start + 2), "late")]
    assert parsed_srt(to_srt(cues)) == parsed_webvtt(to_webvtt(cues)) == expected


def test_times_are_rounded_to_the_millisecond_halves_up():
    cues = [Cue(1.0004, 1.0006, "a"), Cue(59.9995, 3599.9996, "b")]
    assert to_srt(cues).split("\n")[1] == "00:00:01,000 --> 00:00:01,001"
    assert to_webvtt(cues).split("\n")[5] == "00:01:00.000 --> 01:00:00.000"


def test_empty_input_gives_valid_empty_files(tmp_path):
    assert to_srt([]) == "" and list(srt.parse("")) == []
    assert to_webvtt([]) == "WEBVTT\n" and parsed_webvtt(to_webvtt([])) == []
    assert subtitle_cues([]) == []
    path = write_subtitles([], tmp_path / "empty.vtt", "vtt")
    assert path.read_bytes() == b"WEBVTT\n"


def test_cue_text_never_holds_a_blank_line():
    # A blank line ends an SRT or WebVTT cue: it would cut the text short.
    cues = [Cue(0.0, 1.0, "one\n\n  two  \n")]
    assert parsed_srt(to_srt(cues)) == parsed_webvtt(to_webvtt(cues)) == [(0, 1000, "one\ntwo")]
    words = [word("new\nline", 0.0, 0.5), word("  ", 0.5, 0.6), word("x", 0.6, 0.9)]
    assert [cue.text for cue in subtitle_cues(words)] == ["new line x"]


# --- the grouping rules ----------------------------------------------------------------------


def test_a_pause_longer_than_max_gap_starts_a_cue():
    gap = SUBTITLE_MAX_GAP_S
    apart = [word("hello", 0.0, 0.5), word("world", 0.5 + gap + 0.001, 1.0 + gap)]
    close = [word("hello", 0.0, 0.5), word("world", 0.5 + gap, 1.0 + gap)]
    assert [cue.text for cue in subtitle_cues(apart)] == ["hello", "world"]
    assert [cue.text for cue in subtitle_cues(close)] == ["hello world"]


def test_a_cue_never_passes_max_chars():
    # Seven words of 5,5,5,5,5,5,6 letters and six spaces: exactly 42 characters, one cue.
    texts = ["aaaaa"] * 6 + ["bbbbbb"]
    assert len(" ".join(texts)) == SUBTITLE_MAX_CHARS
    line = [word(text, 0.1 * i, 0.1 * (i + 1)) for i, text in enumerate(texts)]
    assert [cue.text for cue in subtitle_cues(line)] == [" ".join(texts)]
    longer = line + [word("c", 0.7, 0.8)]
    assert [cue.text for cue in subtitle_cues(longer)] == [" ".join(texts), "c"]
    many = [word(f"word{i:02d}", 0.1 * i, 0.1 * (i + 1)) for i in range(30)]  # 3 s, no pause
    cues = subtitle_cues(many)
    assert max(len(cue.text) for cue in cues) <= SUBTITLE_MAX_CHARS
    assert [len(cue.text.split()) for cue in cues] == [6, 6, 6, 6, 6]  # 6 x 6 + 5 = 41


def test_a_cue_never_passes_max_seconds():
    # Thirteen half-second words, no pause, 25 characters: only the span cuts.
    words = [word("a", 0.5 * i, 0.5 * (i + 1)) for i in range(13)]
    cues = subtitle_cues(words)
    assert as_ms(cues) == [(0, ms(SUBTITLE_MAX_SECONDS), " ".join("a" * 12)), (6000, 7000, "a")]
    assert SUBTITLE_MAX_SECONDS == 6.0  # the figures above assume it


def test_a_long_word_gets_a_cue_of_its_own():
    long_word = "x" * (SUBTITLE_MAX_CHARS + 5)
    words = [word("a", 0.0, 0.2), word(long_word, 0.2, 8.0), word("b", 8.0, 8.2)]
    assert [cue.text for cue in subtitle_cues(words)] == ["a", long_word, "b"]


def test_a_short_cue_stays_up_min_seconds_or_until_the_next_cue():
    assert SUBTITLE_MIN_SECONDS == 1.0  # the figures below assume it
    far = [word("hi", 0.0, 0.2), word("there", 3.0, 3.3)]
    assert as_ms(subtitle_cues(far)) == [(0, 1000, "hi"), (3000, 4000, "there")]
    # Cut by the character limit 0.4 s later: the first cue ends where the second starts.
    near = [word("hello", 0.0, 0.2), word("world", 0.4, 2.0)]
    assert as_ms(subtitle_cues(near, max_chars=5)) == [(0, 400, "hello"), (400, 2000, "world")]
    assert as_ms(subtitle_cues(far, min_seconds=0)) == [(0, 200, "hi"), (3000, 3300, "there")]


def test_overlapping_words_give_cues_that_do_not_overlap():
    # A transducer can start a word in the frame where the previous one ends (40 ms frames).
    words = [word("hello", 0.0, 0.08), word("world", 0.04, 0.12)]
    assert as_ms(subtitle_cues(words, max_chars=5, min_seconds=0)) == [
        (0, 40, "hello"),
        (40, 120, "world"),
    ]


def test_words_in_the_cues_first_millisecond_are_never_cut():
    words = [word("hello", 1.0, 1.0), word("world", 1.0, 1.0)]
    cues = subtitle_cues(words, max_chars=5, min_seconds=0)
    assert as_ms(cues) == [(1000, 1001, "hello world")]  # kept together, shown for 1 ms


# --- random word lists ---------------------------------------------------------------------------

LIMITS = {"max_gap_seconds": 0.3, "max_chars": 12, "max_seconds": 1.5, "min_seconds": 0.4}


@st.composite
def word_lists(draw) -> list[WordTiming]:
    """Words in time order, times in whole milliseconds, that may overlap or share a start."""
    count = draw(st.integers(0, 40))
    words, start = [], draw(st.integers(0, 5000))
    for _ in range(count):
        start += draw(st.sampled_from([0, 0, 40, 80, 200, 400]) | st.integers(0, 2000))
        length = draw(st.integers(0, 800))
        text = draw(st.text(alphabet="abcé<&>", min_size=1, max_size=15))
        words.append(word(text, start / 1000, (start + length) / 1000))
    return words


@settings(max_examples=300, deadline=None)
@given(words=word_lists())
def test_random_words_give_ordered_cues_that_never_overlap(words):
    cues = subtitle_cues(words, **LIMITS)
    spans = as_ms(cues)
    assert " ".join(text for _, _, text in spans) == " ".join(w.word for w in words)
    for (start, end, _), (next_start, _, _) in pairwise(spans):
        assert start < end <= next_start
    assert all(start < end for start, end, _ in spans)
    # Each cue starts at its first word and ends at its last word's end or its minimum display
    # time, cut short only by the next cue (and never to nothing).
    position = 0
    for index, (start, end, text) in enumerate(spans):
        group = words[position : position + len(text.split(" "))]
        position += len(group)
        assert start == ms(group[0].start)
        shown = max(max(ms(w.end) for w in group), start + ms(LIMITS["min_seconds"]))
        if index + 1 < len(spans):
            shown = min(shown, spans[index + 1][0])
        assert end == max(shown, start + 1)
    assert parsed_srt(to_srt(cues)) == spans
    assert parsed_webvtt(to_webvtt(cues)) == spans


@settings(max_examples=300, deadline=None)
@given(words=word_lists())
def test_random_words_are_cut_exactly_where_a_rule_says(words):
    cues = subtitle_cues(words, **LIMITS)
    gap, chars, span = (ms(LIMITS["max_gap_seconds"]), LIMITS["max_chars"],
                        ms(LIMITS["max_seconds"]))  # fmt: skip

    def breaks_a_limit(group: list[WordTiming], next_word: WordTiming) -> bool:
        end = max(ms(w.end) for w in group)
        return (
            ms(next_word.start) - end > gap
            or len(" ".join(w.word for w in [*group, next_word])) > chars
            or max(end, ms(next_word.end)) - ms(group[0].start) > span
        )

    groups, position = [], 0
    for cue in cues:
        groups.append(words[position : position + len(cue.text.split(" "))])
        position += len(groups[-1])
    for group, next_group in pairwise(groups):  # every cut has a reason
        assert breaks_a_limit(group, next_group[0])
    for group in groups:  # and every word kept within a limit, or in the cue's first millisecond
        for count in range(1, len(group)):
            same_start = ms(group[count].start) == ms(group[0].start)
            assert same_start or not breaks_a_limit(group[:count], group[count])


# --- writing files and bad input ------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "render"), [("srt", to_srt), ("vtt", to_webvtt)])
def test_write_subtitles_writes_utf8_with_newlines_and_no_leftovers(tmp_path, fmt, render):
    words = [word("café", 0.0, 0.4), word("naïve", 0.5, 1.2)]
    path = write_subtitles(words, tmp_path / f"talk.{fmt}", fmt)
    assert path.read_bytes() == render(subtitle_cues(words)).encode("utf-8")
    assert b"\r" not in path.read_bytes() and "café naïve".encode() in path.read_bytes()
    assert os.listdir(tmp_path) == [f"talk.{fmt}"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_write_subtitles_rejects_an_unknown_format_and_writes_nothing(tmp_path):
    with pytest.raises(
        ValueError, match=r"subtitle format 'ass' for .*out\.ass: use one of srt, vtt"
    ):
        write_subtitles(SENTENCE, tmp_path / "out.ass", "ass")
    assert os.listdir(tmp_path) == []


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "talk.srt"
    path.write_text("old\n")

    def full_disk(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_subtitles(SENTENCE, path, "srt")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["talk.srt"]


def test_words_out_of_order_are_named():
    words = [word("one", 1.0, 1.2), word("two", 0.5, 0.7)]
    with pytest.raises(ValueError, match=r"word 1 \('two'\) starts at 0\.5 s, before word 0"):
        subtitle_cues(words)
    with pytest.raises(ValueError, match=r"word 0 \('x'\): start 2\.0 s and end 1\.0 s"):
        subtitle_cues([word("x", 2.0, 1.0)])
    with pytest.raises(ValueError, match=r"word 0 \('x'\): start and end must be finite"):
        subtitle_cues([word("x", 0.0, float("nan"))])


def test_bad_cues_and_limits_are_named():
    with pytest.raises(ValueError, match=r"cue 1: ends at 2\.0 s, not after its start"):
        to_srt([Cue(0.0, 1.0, "a"), Cue(2.0, 2.0, "b")])
    with pytest.raises(ValueError, match=r"cue 1: starts at 0\.5 s, before cue 0"):
        to_webvtt([Cue(1.0, 2.0, "a"), Cue(0.5, 3.0, "b")])
    with pytest.raises(ValueError, match=r"cue 0 \(0\.0 s to 1\.0 s\) has no text"):
        to_srt([Cue(0.0, 1.0, " \n ")])
    with pytest.raises(ValueError, match=r"max_chars = 0 \(needs an integer >= 1\)"):
        subtitle_cues(SENTENCE, max_chars=0)
