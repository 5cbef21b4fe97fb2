"""The synthesized demo corpus (rnnt/corpus/synth.py, voices.py) and its eSpeak NG engine
(rnnt/corpus/engines/espeak.py). The corpus uses whichever engines are installed; the other
engines have their own tests in tests/test_engines.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile

from rnnt.constants import (
    DEMO_HELDOUT_ACCENTS,
    DEMO_HELDOUT_VARIANTS,
    DEMO_NOISE_KINDS,
    DEMO_NOISE_SECONDS_RANGE,
    DEMO_VARIANTS,
    SAMPLE_RATE,
)
from rnnt.corpus import voices
from rnnt.corpus.engines import ENGINES, espeak
from rnnt.corpus.grammar import ALLOWED_CHARACTERS, CATEGORIES
from rnnt.corpus.resample import resample
from rnnt.corpus.synth import synthesize_demo_corpus
from rnnt.data.manifest import read_manifest

TRAIN_HOURS = 0.01  # 36 s of speech
SEED = 11


def _make(folder, num_workers):
    return synthesize_demo_corpus(
        folder,
        train_hours=TRAIN_HOURS,
        val_utterances=5,
        test_utterances=6,
        unseen_utterances=4,
        recordings=False,  # tests/test_recordings.py checks them in the corpus
        seed=SEED,
        num_workers=num_workers,
        progress=False,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    return folder, _make(folder, num_workers=1)


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_corpus_layout_and_sizes(corpus):
    folder, paths = corpus
    heldout = json.loads((folder / "corpus.json").read_text())["voices"]["heldout_split"]
    splits = ("train", "val", "test", heldout)
    assert {name: paths[name] for name in splits} == {
        split: folder / f"{split}.jsonl" for split in splits
    }
    train = read_manifest(paths["train"])
    total = sum(u.duration for u in train)
    # Utterances are added until the target is reached, and not one more.
    assert total >= TRAIN_HOURS * 3600 > total - train[-1].duration
    assert len(read_manifest(paths["val"])) == 5 and len(read_manifest(paths["test"])) == 6
    raw = _lines(paths["train"])
    assert raw[0]["audio_filepath"] == "audio/train/train-000000.flac"  # relative: corpus moves
    assert raw[0]["category"] in CATEGORIES and raw[0]["engine"] in ENGINES and raw[0]["voice"]
    info = json.loads((folder / "corpus.json").read_text())
    assert info["splits"]["train"]["utterances"] == len(train)


def test_audio_is_16k_mono_flac_matching_manifest(corpus):
    folder, paths = corpus
    for split in ("train", "val", "test", "test_unseen_engine", "test_unseen_voice"):
        for utterance in read_manifest(paths[split]) if split in paths else []:
            info = soundfile.info(utterance.audio_filepath)
            assert (info.format, info.samplerate, info.channels) == ("FLAC", SAMPLE_RATE, 1)
            assert info.frames / SAMPLE_RATE == utterance.duration
            audio, _ = soundfile.read(utterance.audio_filepath)
            peak = np.abs(audio).max()
            assert 0.2 < peak < 0.95  # levelled, not clipped
            # Short silent margins at both ends, then speech.
            assert audio[0] == 0.0 and audio[-1] == 0.0
            assert np.abs(audio[: int(0.4 * SAMPLE_RATE)]).max() > 0.0


def test_transcripts_use_only_allowed_characters(corpus):
    _, paths = corpus
    for split in ("train", "val", "test"):
        for utterance in read_manifest(paths[split]):
            assert utterance.text and set(utterance.text) <= ALLOWED_CHARACTERS, utterance.text


def test_splits_have_disjoint_sentences(corpus):
    _, paths = corpus
    texts = {
        split: [u.text for u in read_manifest(paths[split])] for split in ("train", "val", "test")
    }
    for split, values in texts.items():
        assert len(set(values)) == len(values), f"repeated sentence within {split}"
    assert not set(texts["train"]) & set(texts["val"])
    assert not set(texts["train"]) & set(texts["test"])
    assert not set(texts["val"]) & set(texts["test"])


def test_test_split_has_voices_never_heard_in_training(corpus):
    _, paths = corpus
    records = {split: _lines(paths[split]) for split in ("train", "val", "test")}
    for split in ("train", "val"):
        for record in records[split]:
            assert record["unseen_voice"] is False
            if record["engine"] == "espeak":
                accent, variant = record["voice"].split("+")
                assert variant in DEMO_VARIANTS and accent not in DEMO_HELDOUT_ACCENTS
    unseen = [r for r in records["test"] if r["unseen_voice"]]
    espeak_test = [r for r in records["test"] if r["engine"] == "espeak"]
    # DEMO_TEST_HELDOUT_FRACTION (a half) of the eSpeak test utterances, by index.
    assert len(unseen) == sum(voices.is_heldout(int(r["id"][-6:])) for r in espeak_test)
    assert all(r["engine"] == "espeak" for r in unseen)
    assert all(r["voice"].split("+")[1] in DEMO_HELDOUT_VARIANTS for r in unseen)
    seen_voices = {(r["engine"], r["voice"]) for split in ("train", "val") for r in records[split]}
    assert not {(r["engine"], r["voice"]) for r in unseen} & seen_voices


def test_heldout_split_shares_no_sentence_engine_or_speaker_with_training(corpus):
    folder, paths = corpus
    info = json.loads((folder / "corpus.json").read_text())["voices"]
    heldout = _lines(paths[info["heldout_split"]])
    train = _lines(paths["train"]) + _lines(paths["val"])
    assert heldout and all(r["unseen_voice"] for r in heldout)
    assert not {r["text"] for r in heldout} & {r["text"] for r in train}
    heard = {voices.speaker(r["engine"], r["voice"]) for r in train}
    assert not {voices.speaker(r["engine"], r["voice"]) for r in heldout} & heard
    if info["heldout_split"] == voices.UNSEEN_ENGINE_SPLIT:
        assert {r["engine"] for r in heldout} == {info["heldout_engine"]}
        assert info["heldout_engine"] not in {r["engine"] for r in train}
    else:  # only eSpeak's held-out voices
        assert all(r["voice"].split("+")[1] in DEMO_HELDOUT_VARIANTS for r in heldout)


def _fake_engines(monkeypatch, installed: dict[str, list[str]]):
    """Pretend that exactly these engines (with these voices) are installed."""

    class Fake:
        def __init__(self, names):
            self.names = names

        def missing(self):
            return None

        def voice_names(self):
            return self.names

    real = voices.engine
    fakes = {name: Fake(names) for name, names in installed.items() if name != "espeak"}
    monkeypatch.setattr(voices, "engine", lambda name: fakes.get(name) or real(name))
    monkeypatch.setattr(
        voices,
        "survey",
        lambda names: {n: None if n in installed else f"{n} is not installed" for n in names},
    )


def test_cast_holds_out_the_preferred_engine_and_its_speakers(monkeypatch):
    _fake_engines(
        monkeypatch,
        {
            "espeak": [],
            "piper": ["joe"],
            "flite": ["awb", "kal", "kal16", "rms", "slt"],
            "festival": ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"],
        },
    )
    cast = voices.cast_voices()
    assert cast.heldout_split == "test_unseen_engine" and cast.heldout_engine == "festival"
    assert cast.engines == ("espeak", "piper", "flite")
    assert cast.voices["flite"] == ("awb", "rms")  # kal and slt are festival's speakers too


def test_cast_without_an_engine_to_hold_out_holds_out_espeak_voices(monkeypatch):
    _fake_engines(monkeypatch, {"espeak": [], "piper": ["joe"]})
    cast = voices.cast_voices()
    assert cast.heldout_split == "test_unseen_voice" and cast.heldout_engine is None
    assert cast.skipped == {
        "flite": "flite is not installed",
        "festival": "festival is not installed",
    }
    rng = np.random.default_rng(0)
    voice, unseen = voices.draw_voice(rng, cast, "test_unseen_voice", 0)
    assert unseen and voice.engine == "espeak" and voice.name.split("+")[1] in DEMO_HELDOUT_VARIANTS


def test_cast_needs_espeak():
    with pytest.raises(ValueError, match="needs the espeak engine"):
        voices.cast_voices(["piper"])


def test_noise_files_exist(corpus):
    _, paths = corpus
    files = sorted(paths["noise"].glob("*.flac"))
    assert len(files) == len(DEMO_NOISE_KINDS)
    assert {path.name.split("-")[0] for path in files} == set(DEMO_NOISE_KINDS)
    for path in files:
        audio, rate = soundfile.read(path)
        assert rate == SAMPLE_RATE and audio.ndim == 1
        low, high = DEMO_NOISE_SECONDS_RANGE
        assert low <= len(audio) / rate <= high
        assert np.sqrt(np.mean(audio**2)) > 0.01  # not silent


def test_same_seed_gives_identical_corpus_whatever_the_workers(corpus, tmp_path):
    folder, _ = corpus
    again = tmp_path / "again"
    _make(again, num_workers=2)  # a process pool, where the fixture ran in this process
    made = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    assert made == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for relative in made:
        assert (folder / relative).read_bytes() == (again / relative).read_bytes(), relative


def test_rerun_in_same_folder_replaces_stale_files(tmp_path):
    folder = tmp_path / "demo"
    stale = folder / "audio" / "train" / "train-999999.flac"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    synthesize_demo_corpus(
        folder,
        train_hours=0.002,
        val_utterances=1,
        test_utterances=2,
        unseen_utterances=1,
        engines=["espeak"],
        recordings=False,
        seed=3,
        num_workers=1,
        progress=False,
    )
    assert not stale.exists()
    assert len(list((folder / "audio" / "train").glob("*.flac"))) == len(
        read_manifest(folder / "train.jsonl")
    )


def test_espeak_output_depends_only_on_arguments():
    voice = espeak.Voice("en-us+m3", rate_wpm=160, pitch=40, intonation=60, word_gap=1)
    other = espeak.Voice("en+f2", rate_wpm=190)
    first, rate = espeak.synthesize("set an alarm for seven", voice, seed=5)
    espeak.synthesize("call mum", other, seed=1)  # a different history in between
    second, _ = espeak.synthesize("set an alarm for seven", voice, seed=5)
    assert rate == 22050 and first.dtype == np.int16 and len(first) > rate // 2
    np.testing.assert_array_equal(first, second)


def test_espeak_warns_when_it_cannot_reset(monkeypatch):
    import ctypes

    monkeypatch.setattr(espeak, "_checked_unload", False)
    held = ctypes.CDLL(espeak._library_path())  # another user of the library keeps it loaded
    try:
        with pytest.warns(RuntimeWarning, match="not exactly reproducible"):
            espeak.synthesize("hello", espeak.Voice("en"), seed=0)
    finally:
        import _ctypes

        _ctypes.dlclose(held._handle)


def test_unknown_voice_is_named():
    with pytest.raises(
        ValueError, match=r"unknown eSpeak NG voices \['en-us\+nonsense', 'xx-yy'\]"
    ):
        espeak.check_voices(["en-us+m3", "en-us+nonsense", "xx-yy"])


@pytest.mark.parametrize("frequency", [200.0, 1000.0, 4000.0, 7000.0])
def test_resample_reproduces_tones_below_nyquist(frequency):
    seconds = np.arange(22050 + 123) / 22050
    resampled = resample(np.sin(2 * np.pi * frequency * seconds), 22050, SAMPLE_RATE)
    assert len(resampled) == math.ceil(len(seconds) * SAMPLE_RATE / 22050)
    expected = np.sin(2 * np.pi * frequency * np.arange(len(resampled)) / SAMPLE_RATE)
    inner = slice(400, -400)  # away from the ends, where the tone starts and stops abruptly
    np.testing.assert_allclose(resampled[inner], expected[inner], atol=1e-4)


def test_resample_removes_what_the_new_rate_cannot_hold():
    seconds = np.arange(22050) / 22050
    resampled = resample(np.sin(2 * np.pi * 9000.0 * seconds), 22050, SAMPLE_RATE)
    assert np.sqrt(np.mean(resampled[400:-400] ** 2)) < 1e-4  # 9 kHz > 8 kHz: no alias


def test_resample_upsamples_and_keeps_dc():
    seconds = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = np.sin(2 * np.pi * 440.0 * seconds)
    up = resample(tone, SAMPLE_RATE, 44100)
    expected = np.sin(2 * np.pi * 440.0 * np.arange(len(up)) / 44100)
    np.testing.assert_allclose(up[1000:-1000], expected[1000:-1000], atol=1e-4)
    np.testing.assert_allclose(
        resample(np.ones(5000), 22050, SAMPLE_RATE)[300:-300], 1.0, atol=1e-4
    )
