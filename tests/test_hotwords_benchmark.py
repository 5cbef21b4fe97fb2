"""What benchmarks/hotwords.py stands on: names the demo grammar never says in carriers it does
say, its recall rule, its check of the training text, and its sequence log-likelihoods.

The benchmark needs a trained model for its figures; these check its premises without one.
"""

from __future__ import annotations

import re

import pytest
import torch

from benchmarks.hotwords import (
    NAMES,
    TEMPLATES,
    call_sentences,
    check_names_unseen,
    contains,
    encode,
    log_likelihoods,
)
from rnnt.corpus import grammar, vocabulary
from rnnt.data.tokenizer import Tokenizer
from rnnt.models.transducer import Transducer, config_from_preset
from tests.tiny import TINY_MODEL


def _grammar_words() -> set[str]:
    """Every word the demo grammar can say: its templates' words and its slots' word lists."""
    words: set[str] = set()
    for templates in grammar._TEMPLATES.values():
        for template in templates:
            words.update(re.sub(r"\{\w+\}", " ", template).split())
    for value in vars(vocabulary).values():
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            words.update(word for phrase in value for word in phrase.split())
    return words


def test_names_are_words_the_demo_grammar_never_says():
    said = _grammar_words()
    assert "emma" in said and "call" in said  # the collection sees names and carriers
    assert [word for name in NAMES for word in name.split() if word in said] == []


def test_carrier_words_are_words_the_demo_grammar_says():
    said = _grammar_words()
    carriers = {word for t in TEMPLATES for word in t.replace("{name}", " ").split()}
    assert sorted(carriers - said) == []


def test_every_name_is_in_every_template_once():
    calls = call_sentences(NAMES)
    assert len(calls) == len(NAMES) * len(TEMPLATES)
    assert all(sum(contains(text, n) for n in NAMES) == 1 for text, _ in calls)


def test_recall_needs_the_whole_name_in_a_row():
    assert contains("call nathan parker now", "nathan parker")
    assert contains("kevin", "kevin")
    assert not contains("call jessicated", "jessica")
    assert not contains("call nathan and parker", "nathan parker")


def test_a_name_in_the_training_text_is_refused_naming_file_and_line(tmp_path):
    manifest = tmp_path / "train.jsonl"
    lines = ['{"text": "call emma"}', "", '{"text": "Did Kevin call"}']
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=rf"^{re.escape(str(manifest))}:3: .*'kevin'"):
        check_names_unseen(NAMES, manifest)
    manifest.write_text('{"text": "call emma"}\n', encoding="utf-8")
    check_names_unseen(NAMES, manifest)  # no name: no error


def test_log_likelihoods_in_a_batch_equal_one_at_a_time(tiny_corpus):
    tokenizer = Tokenizer.load(tiny_corpus / "tokenizer.model")
    torch.manual_seed(0)
    model = Transducer(config_from_preset("tiny", tokenizer.num_classes, **TINY_MODEL)).eval()
    waveforms = [0.1 * torch.randn(16_000), 0.1 * torch.randn(9_000), 0.1 * torch.randn(12_000)]
    texts = ["call emma", "", "turn on the lights"]  # an empty hypothesis too
    together = log_likelihoods(model, tokenizer, encode(model, waveforms, 1e9), texts)
    alone = [
        log_likelihoods(model, tokenizer, encode(model, [w], 1e9), [t])[0]
        for w, t in zip(waveforms, texts, strict=True)
    ]
    assert all(score < 0 for score in together)
    torch.testing.assert_close(torch.tensor(together), torch.tensor(alone), rtol=1e-4, atol=1e-4)
