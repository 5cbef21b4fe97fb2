"""The hotword graph's tables against a brute-force reference, and the hotwords file reader."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnt.constants import BLANK_ID, HOTWORD_BOOST
from rnnt.data.tokenizer import Tokenizer, train_tokenizer
from rnnt.hotwords import (
    Hotword,
    HotwordError,
    HotwordGraph,
    load_hotwords,
    read_hotwords,
)

A, B, C, D, E, X = 1, 2, 3, 4, 5, 6  # token ids of the hand-made examples; X is in no phrase
NUM_CLASSES = 7


# --- the reference: running bonus straight from the definition, no trie ---------------------


def reference_bonus(phrases: list[tuple[list[int], float]], sequence: list[int]) -> float:
    """Running bonus after ``sequence`` (blanks ignored): the scores of the phrase occurrences
    completed so far plus ``pending`` of the longest suffix that starts some phrase."""
    boost_of_prefix: dict[tuple[int, ...], float] = {}
    for ids, boost in phrases:
        for end in range(1, len(ids) + 1):
            prefix = tuple(ids[:end])
            boost_of_prefix[prefix] = max(boost_of_prefix.get(prefix, 0.0), boost)
    ends = {tuple(ids) for ids, _ in phrases}

    def score(prefix: tuple[int, ...]) -> float:
        return sum(boost_of_prefix[prefix[:end]] for end in range(1, len(prefix) + 1))

    tokens = tuple(token for token in sequence if token != BLANK_ID)
    completed = sum(
        score(phrase)
        for stop in range(1, len(tokens) + 1)
        for phrase in ends
        if tokens[:stop][-len(phrase) :] == phrase
    )
    match = next(
        tokens[start:]
        for start in range(len(tokens) + 1)
        if start == len(tokens) or tokens[start:] in boost_of_prefix
    )
    complete = max((end for end in range(len(match) + 1) if match[:end] in ends), default=0)
    return completed + score(match) - score(match[:complete])


def walk(graph: HotwordGraph, sequence: list[int]) -> tuple[list[float], int]:
    """Running bonus after each token of ``sequence`` read from the tables, and the end state."""
    state, total, totals = 0, 0.0, []
    for token in sequence:
        total += float(graph.bonus[state, token])
        state = int(graph.next_state[state, token])
        totals.append(total)
    return totals, state


def final_bonus(graph: HotwordGraph, sequence: list[int]) -> float:
    totals, state = walk(graph, sequence)
    return (totals[-1] if totals else 0.0) + float(graph.take_back[state])


# --- hand-made examples ----------------------------------------------------------------------


def test_docstring_example_earns_token_by_token_and_takes_back():
    graph = HotwordGraph.from_ids([([A, B, C], 1.0)], NUM_CLASSES)
    assert graph.num_states == 4
    assert walk(graph, [A, B, C])[0] == [1.0, 2.0, 3.0]
    assert walk(graph, [A, B, X])[0] == [1.0, 2.0, 0.0]
    totals, state = walk(graph, [A, B])
    assert float(graph.take_back[state]) == -2.0
    assert final_bonus(graph, [A, B]) == 0.0
    assert final_bonus(graph, [A, B, C]) == 3.0


def test_abandoned_match_ends_at_zero_and_a_restart_still_counts():
    graph = HotwordGraph.from_ids([([A, B, C], 1.5)], NUM_CLASSES)
    assert final_bonus(graph, [A, B, X, X]) == 0.0
    assert final_bonus(graph, [A, B, A, B, C]) == pytest.approx(4.5)  # "a b" abandoned, then a b c
    assert final_bonus(graph, [A, A, B, C]) == pytest.approx(4.5)  # the second a restarts it


def test_shared_prefix_takes_the_larger_boost():
    # "a b" boost 1 and "a c" boost 3 share node "a", which takes boost 3.
    graph = HotwordGraph.from_ids([([A, B], 1.0), ([A, C], 3.0)], NUM_CLASSES)
    assert walk(graph, [A, B])[0] == [3.0, 4.0]
    assert walk(graph, [A, C])[0] == [3.0, 6.0]
    assert walk(graph, [A, X])[0] == [3.0, 0.0]


def test_phrase_that_is_a_prefix_of_another_is_kept_when_the_longer_one_fails():
    # "bob" (1 per token) and "bobby" (2 per token): ids b=A, o=B, y=C.
    graph = HotwordGraph.from_ids([([A, B, A], 1.0), ([A, B, A, A, C], 2.0)], NUM_CLASSES)
    # "bob" nodes take boost 2; "bob" is complete at 6, "bobby" completes at 10 more.
    assert walk(graph, [A, B, A, A, C])[0] == [2.0, 4.0, 6.0, 8.0, 16.0]
    assert final_bonus(graph, [A, B, A]) == 6.0
    assert final_bonus(graph, [A, B, A, A]) == 6.0  # "bobb" gives back its pending 2
    assert final_bonus(graph, [A, B, A, A, X]) == 6.0


def test_failure_links_find_a_phrase_inside_a_failed_one():
    # "b c e" starts inside "a b c d"; "c" ends with every "c".
    phrases = [([A, B, C, D], 1.0), ([B, C, E], 1.0), ([C], 1.0)]
    graph = HotwordGraph.from_ids(phrases, NUM_CLASSES)
    # a b c: pending 3 ("a b c" matched so far) and "c" completed (score 1).
    assert walk(graph, [A, B, C])[0] == [1.0, 2.0, 4.0]
    # then e: "a b c d" fails, "b c e" completes (3): only completed phrases remain.
    assert walk(graph, [A, B, C, E])[0][-1] == 4.0
    assert final_bonus(graph, [A, B, C, E]) == 4.0
    assert final_bonus(graph, [A, B, C, D]) == 5.0
    for sequence in ([A, B, C, E], [A, B, C, D], [A, B, C, C], [B, A, B, C, X]):
        assert final_bonus(graph, sequence) == reference_bonus(phrases, sequence)


def test_blank_never_moves_the_state_nor_earns():
    graph = HotwordGraph.from_ids([([A, B, C], 1.0), ([B, D], 2.0)], NUM_CLASSES)
    assert torch.equal(graph.next_state[:, BLANK_ID], torch.arange(graph.num_states))
    assert torch.equal(graph.bonus[:, BLANK_ID], torch.zeros(graph.num_states))
    assert walk(graph, [A, BLANK_ID, B, BLANK_ID, C])[0] == [1.0, 1.0, 2.0, 2.0, 3.0]


def test_tables_have_the_documented_shapes_and_types_and_move_to_a_device():
    graph = HotwordGraph.from_ids([([A, B], 1.0), ([C], 2.0)], NUM_CLASSES)
    assert graph.next_state.dtype == torch.int64 and graph.next_state.shape == (4, NUM_CLASSES)
    assert graph.bonus.dtype == torch.float32 and graph.bonus.shape == (4, NUM_CLASSES)
    assert graph.take_back.dtype == torch.float32 and graph.take_back.shape == (4,)
    assert graph.nbytes == 4 * NUM_CLASSES * 12 + 4 * 4
    moved = graph.to("meta")
    assert {t.device.type for t in (moved.next_state, moved.bonus, moved.take_back)} == {"meta"}
    assert graph.next_state.device.type == "cpu"  # a copy: the original stays


def test_no_phrase_gives_a_graph_that_changes_nothing():
    graph = HotwordGraph.from_ids([], NUM_CLASSES)
    assert graph.num_states == 1
    assert not graph.bonus.any() and not graph.next_state.any() and not graph.take_back.any()


@pytest.mark.parametrize(
    ("phrases", "message"),
    [
        ([([], 1.0)], "phrase 1 has no token"),
        ([([A], 1.0), ([A, 0], 1.0)], "phrase 2: token id 0 is not in [1, 7)"),
        ([([NUM_CLASSES], 1.0)], "token id 7 is not in [1, 7)"),
        ([([A], 0.0)], "must be a positive finite number"),
        ([([A], float("nan"))], "must be a positive finite number"),
    ],
)
def test_from_ids_refuses_bad_phrases(phrases, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        HotwordGraph.from_ids(phrases, NUM_CLASSES)


# --- random phrases and sequences against the reference ---------------------------------------

phrase_lists = st.lists(
    st.tuples(
        st.lists(st.integers(A, D), min_size=1, max_size=4),
        st.sampled_from([0.5, 1.0, 1.5, 3.0]),
    ),
    min_size=1,
    max_size=6,
)
sequences = st.lists(st.integers(BLANK_ID, X), max_size=16)


@settings(max_examples=300, deadline=None)
@given(phrases=phrase_lists, sequence=sequences)
def test_running_bonus_equals_the_brute_force_reference(phrases, sequence):
    graph = HotwordGraph.from_ids(phrases, NUM_CLASSES)
    totals, state = walk(graph, sequence)
    for stop, total in enumerate(totals, start=1):
        assert total == pytest.approx(reference_bonus(phrases, sequence[:stop]), abs=1e-4)
    # At the end only completed phrases count: the pending part is taken back.
    ended = (totals[-1] if totals else 0.0) + float(graph.take_back[state])
    completed_only = reference_bonus(phrases, sequence + [X])  # X ends any partial match
    assert ended == pytest.approx(completed_only, abs=1e-4)
    assert ended >= 0.0


# --- the file reader --------------------------------------------------------------------------


def write(tmp_path, text: str | bytes):
    path = tmp_path / "hotwords.txt"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_reader_takes_boosts_comments_normalisation_and_duplicates(tmp_path):
    path = write(
        tmp_path,
        "\ufeff# names to boost\n"
        "Louis Fourteen :2.5\n"
        "\n"
        "   \t\n"
        "  ZIPFORMER!  \n"
        "Bob's  Café :1e-1\n"
        "louis, FOURTEEN :4\n"  # duplicate of line 2: the larger boost wins, line 2 stays
        "zipformer :0.5\n"  # duplicate of line 5 with a smaller boost: ignored
        "  # an indented comment\n",
    )
    assert read_hotwords(path) == [
        Hotword("louis fourteen", 4.0, 2),
        Hotword("zipformer", HOTWORD_BOOST, 5),
        Hotword("bob's café", 0.1, 6),
    ]
    assert read_hotwords(path, boost=2.0)[1] == Hotword("zipformer", 2.0, 5)


@pytest.mark.parametrize(
    ("lines", "line", "message"),
    [
        ("hello\n:2\n", 2, "is a boost without a phrase"),
        ("hello :abc\n", 1, "the boost 'abc' after ':' must be a positive finite number"),
        ("hello :0\n", 1, "the boost '0'"),
        ("# c\nhello :-1\n", 2, "the boost '-1'"),
        ("hello :nan\n", 1, "the boost 'nan'"),
        ("hello :inf\n", 1, "the boost 'inf'"),
        ("hello :\n", 1, "the boost ''"),
        ("a\nb\nhello : 2\n", 3, "write the boost as ':2', with no space after the colon"),
        ("hello:2\n", 1, "put a space before the boost: 'hello :2'"),
        ("ok\n!!! :2\n", 2, "the phrase '!!!' is empty after normalisation"),
        (b"ok\nhi \xff\xfe there\n", 2, "is not UTF-8 text"),
    ],
)
def test_reader_errors_name_file_and_line(tmp_path, lines, line, message):
    path = write(tmp_path, lines)
    with pytest.raises(HotwordError) as caught:
        read_hotwords(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert message in str(caught.value)
    assert (caught.value.path, caught.value.line) == (str(path), line)
    assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)


def test_reader_errors_for_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(HotwordError, match=r"missing\.txt: cannot read the hotwords file"):
        read_hotwords(tmp_path / "missing.txt")
    with pytest.raises(HotwordError, match=r": is a folder; give the hotwords file"):
        read_hotwords(tmp_path)
    with pytest.raises(ValueError, match="boost=0 must be a positive finite number"):
        read_hotwords(write(tmp_path, "hello\n"), boost=0)


# --- with a real tokenizer -------------------------------------------------------------------

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "with",
    "louis",
    "and",
    "his",
    "dog",
    "near",
    "fourteen",
    "green",
    "trees",
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Tokenizer:
    folder = tmp_path_factory.mktemp("hotwords")
    lines = [
        {"audio_filepath": "x.wav", "duration": 1.0, "text": " ".join(WORDS[i:] + WORDS[:i])}
        for i in range(len(WORDS))
    ]
    manifest = folder / "train.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return Tokenizer.load(train_tokenizer([manifest], folder / "tokenizer.model", 30))


def test_from_phrases_boosts_the_tokenizers_pieces(tokenizer):
    graph = HotwordGraph.from_phrases(tokenizer, ["Louis Fourteen!", "the dog"], boost=2.0)
    assert graph.num_classes == tokenizer.num_classes
    louis = tokenizer.encode("louis fourteen")
    assert len(louis) > 2  # several pieces, so the bonus comes token by token
    totals, state = walk(graph, louis)
    assert totals == pytest.approx([2.0 * (i + 1) for i in range(len(louis))])
    assert float(graph.take_back[state]) == 0.0
    # A sentence with the phrase inside earns exactly the phrase's bonus in the end.
    sentence = tokenizer.encode("near louis fourteen green trees")
    assert final_bonus(graph, sentence) == pytest.approx(2.0 * len(louis))
    assert final_bonus(graph, tokenizer.encode("near louis and the cat")) == pytest.approx(0.0)


def test_load_hotwords_reads_normalises_and_encodes(tmp_path, tokenizer):
    path = write(tmp_path, "# boosted\nTHE DOG :3\nlouis fourteen\n")
    graph = load_hotwords(path, tokenizer)
    dog = tokenizer.encode("the dog")
    louis = tokenizer.encode("louis fourteen")
    assert final_bonus(graph, dog) == pytest.approx(3.0 * len(dog))
    assert final_bonus(graph, louis) == pytest.approx(HOTWORD_BOOST * len(louis))


def test_phrase_the_tokenizer_cannot_spell_names_file_and_line(tmp_path, tokenizer):
    path = write(tmp_path, "the cat\n\nzebra crossing :2\n")
    with pytest.raises(HotwordError) as caught:
        load_hotwords(path, tokenizer)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: the tokenizer cannot spell 'zebra crossing'")
    assert "it never saw 'bz'" in message
    with pytest.raises(HotwordError, match=r"^hotword 2: the tokenizer cannot spell 'z'"):
        HotwordGraph.from_phrases(tokenizer, ["cat", "Z"])
    with pytest.raises(HotwordError, match=r"^hotword 1: '\?!' is empty after normalisation"):
        HotwordGraph.from_phrases(tokenizer, ["?!"])


def test_reference_agrees_with_itself_on_a_hand_count():
    # Guards the reference: "a a" in "a a a" occurs twice; "a" three times.
    phrases = [([A, A], 1.0), ([A], 1.0)]
    assert reference_bonus(phrases, [A, A, A]) == 3 * 1.0 + 2 * 2.0
    assert math.isclose(final_bonus(HotwordGraph.from_ids(phrases, NUM_CLASSES), [A, A, A]), 7.0)
