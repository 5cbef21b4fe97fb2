"""The scoring of benchmarks/timestamps.py: its known word boundaries, word alignment, timing
errors and AUC, and that its whole-file words are those ``transcribe_windows`` gives users.

The benchmark needs a trained model for its figures; these check, without one, that what it
scores against and with is right.
"""

from __future__ import annotations

import random

import pytest
import torch
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.functional.text import word_error_rate

from benchmarks.timestamps import (
    align_words,
    check_against_transcribe_windows,
    rank_auc,
    speak_words,
    timestamp_accuracy,
    whole_files,
    word_errors,
)
from rnnt.constants import SAMPLE_RATE
from rnnt.timestamps import Alignment, WordTiming, frame_seconds
from tests.test_decoding import _model
from tests.test_timestamps import _Pieces


def test_spoken_words_truth_marks_where_speech_begins_and_ends():
    text = "turn on the lights"
    gap_ms = (150.0, 500.0)
    audio, truth = speak_words(text, seed=7, gap_ms=gap_ms)
    assert len(truth) == len(text.split())
    inside = torch.zeros(audio.numel(), dtype=torch.bool)
    for start, end in truth:
        first, last = round(start * SAMPLE_RATE), round(end * SAMPLE_RATE) - 1
        assert audio[first] != 0 and audio[last] != 0, "a word's edges are its speech"
        inside[first : last + 1] = True
    assert torch.all(audio[~inside] == 0), "all audio outside the words is silence"
    gaps_ms = [1000 * (b[0] - a[1]) for a, b in zip(truth, truth[1:], strict=False)]
    assert all(gap_ms[0] - 1 <= gap <= gap_ms[1] + 1 for gap in gaps_ms), gaps_ms
    again, same_truth = speak_words(text, seed=7, gap_ms=gap_ms)
    assert same_truth == truth and torch.equal(again, audio), "a function of the seed"


def test_align_words_errors_equal_the_word_error_rate():
    rng = random.Random(0)
    vocabulary = ["one", "two", "three", "four"]
    for _ in range(200):
        reference = [rng.choice(vocabulary) for _ in range(rng.randint(1, 7))]
        hypothesis = [rng.choice(vocabulary) for _ in range(rng.randint(0, 7))]
        expected = word_error_rate(" ".join(hypothesis), " ".join(reference)) * len(reference)
        assert word_errors(reference, hypothesis) == round(float(expected))
        pairs = align_words(reference, hypothesis)
        assert [r for r, _ in pairs if r is not None] == list(range(len(reference)))
        assert [h for _, h in pairs if h is not None] == list(range(len(hypothesis)))


def test_align_words_pairs_a_substitution_not_a_deletion_and_insertion():
    pairs = align_words(["set", "an", "alarm"], ["set", "and", "alarm"])
    assert pairs == [(0, 0), (1, 1), (2, 2)]
    assert align_words(["a", "b"], ["a"]) == [(0, 0), (1, None)]
    assert align_words(["a"], ["x", "a"]) == [(None, 0), (0, 1)]


def test_rank_auc_equals_the_roc_auc_with_ties():
    rng = random.Random(1)
    correct = [rng.choice([0.1, 0.5, 0.5, 0.9, 1.0]) for _ in range(40)]
    wrong = [rng.choice([0.1, 0.2, 0.5, 0.9]) for _ in range(25)]
    scores = torch.tensor(correct + wrong)
    labels = torch.tensor([1] * len(correct) + [0] * len(wrong))
    assert rank_auc(correct, wrong) == pytest.approx(float(binary_auroc(scores, labels)), abs=1e-6)
    assert rank_auc([0.9, 0.8], [0.1]) == 1.0
    assert rank_auc([0.5], [0.5]) == 0.5
    assert rank_auc([0.5], []) is None


def test_timestamp_accuracy_scores_only_correct_words_and_splits_the_first():
    truths = [[(0.2, 0.5), (1.0, 1.4), (2.0, 2.3)]]
    words = [
        WordTiming("set", 0.25, 0.45, 1.0),  # first word: start +50 ms, end -50 ms: within
        WordTiming("and", 1.0, 1.4, 1.0),  # a substitution: not scored
        WordTiming("alarm", 2.0, 2.1, 1.0),  # start exact, end -200 ms: outside
    ]
    result = timestamp_accuracy(["set an alarm"], truths, [words])
    assert result["words_scored"] == 2
    assert result["within_80ms"] == {"start": 1.0, "end": 0.5, "both": 0.5}
    assert result["end_error_ms"]["mean"] == pytest.approx(-125.0)
    first, later = result["by_position"]["first_word"], result["by_position"]["later_words"]
    assert (first["words"], first["both_within"], first["start_error_ms_median"]) == (1, 1.0, 50.0)
    assert (later["words"], later["both_within"], later["end_error_ms_median"]) == (1, 0.0, -200.0)
    assert result["matched_without_overlap"] == 0
    late = [WordTiming("set", 0.6, 0.9, 1.0)]  # paired with "set" but after its sound
    assert timestamp_accuracy(["set"], [[(0.2, 0.5)]], [late])["matched_without_overlap"] == 1


def test_whole_file_words_are_those_transcribe_windows_gives(monkeypatch):
    # One alignment per utterance, each word's pieces emitted just after its true start, given
    # to both the benchmark and transcribe_windows: the words must agree, and be snapped.
    tokenizer = _Pieces(["<blk>", "\u2581turn", "\u2581on", "\u2581the", "\u2581light", "s"])
    model = _model()
    seconds = frame_seconds(model)
    spoken = [speak_words("turn on the lights", seed, (150.0, 500.0)) for seed in (1, 2)]
    alignments = {}
    for audio, truth in spoken:
        frames = [int(start / seconds) + 1 for start, _ in truth]
        alignments[audio.numel()] = Alignment([1, 2, 3, 4, 5], [*frames, frames[-1] + 1], [0.0] * 5)

    def fixed_alignments(model, audio, lengths, *args, **kwargs):
        return [alignments[int(length)] for length in lengths]

    monkeypatch.setattr("benchmarks.timestamps.transcribe_alignments", fixed_alignments)
    monkeypatch.setattr("rnnt.transcribe_audio.transcribe_alignments", fixed_alignments)
    waveforms = [audio for audio, _ in spoken]
    for beam_size in (1, 3):
        check_against_transcribe_windows(model, tokenizer, beam_size, waveforms)
    decoded = whole_files(model, tokenizer, 1)(waveforms)
    for (_, emitted, snapped), (_, truth) in zip(decoded, spoken, strict=True):
        assert [w.word for w in snapped] == ["turn", "on", "the", "lights"]
        true_edges = [edge for word in truth for edge in word]
        assert all(w.end < end - 0.1 for w, (_, end) in zip(emitted, truth, strict=True))
        snapped_edges = [edge for w in snapped for edge in (w.start, w.end)]
        assert snapped_edges == pytest.approx(true_edges, abs=0.02), "on the words' own audio"
    monkeypatch.setattr("rnnt.timestamps.snap_to_speech", lambda words, stretches: words)
    with pytest.raises(AssertionError, match="transcribe_windows gave"):
        check_against_transcribe_windows(model, tokenizer, 1, waveforms)
