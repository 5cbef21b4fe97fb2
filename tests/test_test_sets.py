"""Several test sets (``rnnt.test_sets``): their names, the checks before scoring, the table.

The end-to-end runs, ``rnnt test`` on two sets against each scored alone and a missing set,
are in ``tests/test_lightning_cli.py`` (they share its trained run).
"""

from __future__ import annotations

import pytest

from rnnt.data.datamodule import TransducerDataModule
from rnnt.test_sets import ScoredSet, check_test_manifests, format_scores, set_names


def test_a_set_is_named_by_its_file_stem():
    assert set_names(["data/test-clean.jsonl", "data/test-other.json", "cuts_dev.jsonl.gz"]) == [
        "test-clean",
        "test-other",
        "cuts_dev",
    ]


def test_sets_of_the_same_file_name_are_told_apart_by_their_folders(tmp_path):
    manifests = [tmp_path / "mls" / "dev" / "test.jsonl", tmp_path / "cv" / "dev" / "test.jsonl"]
    assert set_names(manifests) == ["mls/dev/test", "cv/dev/test"]


def test_the_table_has_a_row_per_set_in_order():
    scores = [
        ScoredSet("test-clean", "a.jsonl", 2620, 52576, 0.02104, 3.5),
        ScoredSet("test-other", "b.jsonl", 2939, 52343, 0.05, None),
    ]
    assert format_scores(scores).splitlines() == [
        "test set    utterances     words       WER      loss",
        "test-clean        2620     52576    2.10 %    3.5000",
        "test-other        2939     52343    5.00 %       n/a",
    ]


def test_a_folder_or_a_file_named_twice_is_refused_naming_it(tmp_path):
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("")
    with pytest.raises(FileNotFoundError, match=f"^--data.test_manifest: {tmp_path} is a folder"):
        check_test_manifests([manifest, tmp_path])
    twice = tmp_path / "." / "test.jsonl"
    with pytest.raises(ValueError, match="names the same file twice: .*test.jsonl, .*test.jsonl$"):
        check_test_manifests([manifest, twice])


def test_the_datamodule_tests_on_the_first_of_several_manifests_until_told_otherwise():
    module = TransducerDataModule(test_manifest=["a.jsonl", "b.jsonl"])
    assert module.test_manifests == ["a.jsonl", "b.jsonl"] and module.test_manifest == "a.jsonl"
    module.use_test_manifest("b.jsonl")
    assert module.test_manifest == "b.jsonl" and module.test_manifests == ["a.jsonl", "b.jsonl"]
    assert TransducerDataModule(test_manifest="c.jsonl").test_manifests == ["c.jsonl"]
