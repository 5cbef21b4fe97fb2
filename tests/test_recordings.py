"""Human recordings from Debian packages (rnnt/corpus/recordings/): each source read from small
fixtures built here in the package's real layout, label checks, composition of word clips into
grammar sentences, 16 kHz audio, the FLAC files and records; and, where installed, the real
packages (skipped with the reason elsewhere)."""

from __future__ import annotations

import io
import json
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from rnnt.constants import SAMPLE_RATE
from rnnt.corpus.grammar import ALLOWED_CHARACTERS
from rnnt.corpus.recordings import (
    asterisk,
    audio,
    compose,
    human,
    klettres,
    ktuberling,
    labels,
    warzone2100,
)
from rnnt.corpus.recordings.record import LabelError, Recording
from rnnt.corpus.resample import resample
from rnnt.corpus.spoken_numbers import number_words

# --- fixtures in each package's layout -----------------------------------------------------------


def _clip(seconds: float, rate: int, silence_s: float = 0.15, channels: int = 1) -> np.ndarray:
    """A voiced-like burst (220 Hz and harmonics, 10 ms ramps) between two silences."""
    time = np.arange(round(seconds * rate)) / rate
    burst = sum(np.sin(2 * np.pi * 220 * k * time) / k for k in (1, 2, 3)) * 0.3
    ramp = np.minimum(1.0, np.minimum(time, time[::-1]) / 0.01)
    silence = np.zeros(round(silence_s * rate))
    mono = np.concatenate([silence, burst * ramp, silence]).astype(np.float32)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


def _write(path: Path, samples: np.ndarray, rate: int, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, rate, **kwargs)


def _ogg_bytes(seconds: float, rate: int = 11025) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, _clip(seconds, rate), rate, format="OGG", subtype="VORBIS")
    return buffer.getvalue()


# Asterisk: 8 kHz WAVs named the PBX's way, and core-sounds-en.txt (one bad label: h-40).
ASTERISK_LABELS = {
    "digits/h-2": "second",
    "digits/h-40": "fourtieth",
    "digits/a-m": "A.M.",
    "digits/p-m": "P.M.",
    "digits/oclock": "o'clock",
    "digits/oh": "oh",
    "digits/mon-2": "March",
    "digits/hundred": "hundred",
    "vm-and": "and",
    "auth-thankyou": "Thank you.",
    "letters/a": "a",
    **{f"digits/{n}": number_words(n) for n in (*range(20), *range(20, 100, 10))},
}


@pytest.fixture
def asterisk_root(tmp_path) -> Path:
    root = tmp_path / "en_US_f_Allison"
    for name in [*ASTERISK_LABELS, "digits/day-2"]:  # day-2 has no label line
        _write(root / f"{name}.wav", _clip(0.4, 8000), 8000, subtype="PCM_16")
    lines = ["; Core Asterisk Sounds in English", ""]
    lines += [f"{name}: {text}" for name, text in ASTERISK_LABELS.items()]
    (root / asterisk.LABELS_FILE).write_text("\n".join(lines) + "\n")
    return root


WARZONE_CONFIG = """audio_module
{
/*Power*/
	audio	"pcv343.ogg"	oneshot	100 1800  /*Power Low*/
	audio	"pcv463.ogg"	oneshot	100 1800  /*10 Minutes Remaining*/
	audio	"pcv397.ogg"	oneshot	100 1800  /*LZ 1*/
	audio	"rotlsr.ogg"	oneshot 100 1800	/*Rotary Laser*/
/*Nine*/
	audio	"9.ogg"		oneshot	100 1800
	audio	"pcv999.ogg"	oneshot	100 1800  /*Power Low*/
	audio	"v-eloc2.ogg"   oneshot	100 1800  /*Enemy located*/
	audio	"pcv400.ogg"	oneshot	100 1800  /*Unit Destroyed By Something Far Too Long For It*/
}
"""
WARZONE_MEMBERS = {
    "audio/memressp/power/pcv343.ogg": 0.6,
    "audio/memressp/missmesg/pcv463.ogg": 1.2,
    "audio/memressp/status/pcv397.ogg": 0.8,
    "audio/sfx/weapons/rotlsr.ogg": 0.5,
    "audio/memressp/cmndrvoc/9.ogg": 0.3,
    "audio/vtoltalk/v-eloc2.ogg": 0.7,
    "audio/memressp/combat/pcv400.ogg": 0.3,
}


@pytest.fixture
def warzone_root(tmp_path) -> Path:
    root = tmp_path / "warzone2100"
    root.mkdir()
    with zipfile.ZipFile(root / warzone2100.ARCHIVE, "w") as archive:
        archive.writestr(warzone2100.CONFIG, WARZONE_CONFIG)
        for member, seconds in WARZONE_MEMBERS.items():
            archive.writestr(member, _ogg_bytes(seconds))
    return root


@pytest.fixture
def ktuberling_root(tmp_path) -> Path:
    root = tmp_path / "sounds"
    sounds = {
        "ball": "en/ball.ogg",
        "egypt_palmtree": "en/egypt_palmtree.ogg",
        "pizzeria_brocolli": "en/pizzeria_broccolli.ogg",
        "moon_ufo": "en/moon_ufo.ogg",
    }
    for file in sounds.values():
        _write(root / file, _clip(0.5, 44100), 44100, format="OGG", subtype="VORBIS")
    entries = "\n".join(f'  <sound name="{name}" file="{file}" />' for name, file in sounds.items())
    (root / ktuberling.THEME).write_text(f'<language code="en">\n{entries}\n</language>\n')
    return root


@pytest.fixture
def klettres_root(tmp_path) -> Path:
    root = tmp_path / "klettres"
    for file in ("en_GB/alpha/a.ogg", "en_GB/syllab/dog.ogg", "en_GB/syllab/th.ogg"):
        _write(root / file, _clip(0.4, 44100), 44100, format="OGG", subtype="VORBIS")
    (root / "en_GB" / "sounds.xml").write_text(
        '<klettres><language code="en_GB"><alphabet>'
        '<sound name="A" file="en_GB/alpha/a.ogg" /></alphabet><syllables>'
        '<sound name="DOG" file="en_GB/syllab/dog.ogg" />'
        '<sound name="TH" file="en_GB/syllab/th.ogg" /></syllables></language></klettres>'
    )
    return root


def _reasons(found) -> dict[str, str]:
    """``{file name or cfg line: reason}`` of a source's skips."""
    return {Path(skip.where.split(":")[-1]).name: skip.reason for skip in found.skipped}


# --- labels --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "text"),
    [
        ("Warning! System Failure Imminent", "warning system failure imminent"),
        ("10 Minutes Remaining", "ten minutes remaining"),
        ("Cleanse & Destroy", "cleanse and destroy"),
        ("A.M.", "a m"),
        ("Fire-At-Will", "fire at will"),
        ("I\u2019m sorry.", "i'm sorry"),
        ("o'clock", "o'clock"),
        ("...to exit the menu.", "to exit the menu"),
    ],
)
def test_normalise_gives_grammar_transcripts(label, text):
    assert labels.normalise(label) == text
    assert set(text) <= ALLOWED_CHARACTERS


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        ("Enemy LZ Detected", "acronym"),
        ("Enemy VTOLs Detected", "acronym"),
        ("[ascending tones]", "note"),
        ("a 28.8 kilobit modem", "number"),
        ("press * to cancel", "characters"),
        ("Ça va", "characters"),
        ("...", "empty"),
    ],
)
def test_normalise_refuses_what_it_cannot_read(label, reason):
    with pytest.raises(LabelError) as error:
        labels.normalise(label)
    assert error.value.reason == reason
    assert repr(label) in error.value.detail or label in error.value.detail


def test_check_rate_refuses_a_label_that_does_not_fit_its_audio():
    labels.check_rate("power low", 0.8)  # 8 letters in 0.8 s
    with pytest.raises(LabelError, match=r"40 letters in 0\.50 s") as error:
        labels.check_rate("x" * 40, 0.5)
    assert error.value.reason == "rate"


# --- the sources ---------------------------------------------------------------------------------


def test_asterisk_checks_each_label_against_its_file_name(asterisk_root):
    found = asterisk.find(asterisk_root)
    texts = {Path(r.path).relative_to(asterisk_root).as_posix(): r.text for r in found}
    assert texts["digits/h-2.wav"] == "second"
    assert texts["digits/a-m.wav"] == "a m"
    assert texts["digits/oclock.wav"] == "o'clock"
    assert texts["digits/mon-2.wav"] == "march"
    assert texts["digits/14.wav"] == "fourteen"
    assert texts["vm-and.wav"] == "and"
    assert {r.voice for r in found} == {"asterisk:allison"}
    reasons = _reasons(found)
    assert reasons == {
        "h-40.wav": "label_mismatch",
        "auth-thankyou.wav": "label_mismatch",
        "a.wav": "not_words",
        "day-2.wav": "no_label",
    }
    bad = next(skip for skip in found.skipped if skip.where.endswith("h-40.wav"))
    assert "'fourtieth'" in bad.detail and "'fortieth'" in bad.detail
    assert len(found) == len(ASTERISK_LABELS) - 3


def test_asterisk_reads_gzipped_labels_outside_the_sounds(asterisk_root, tmp_path):
    import gzip

    labels_path = tmp_path / "doc" / "core-sounds-en.txt.gz"
    labels_path.parent.mkdir()
    labels_path.write_bytes(gzip.compress((asterisk_root / asterisk.LABELS_FILE).read_bytes()))
    (asterisk_root / asterisk.LABELS_FILE).unlink()
    assert len(asterisk.find(asterisk_root, labels=labels_path)) == len(ASTERISK_LABELS) - 3


def test_asterisk_missing_names_the_package_to_install(asterisk_root, tmp_path):
    assert asterisk.missing(asterisk_root) is None
    assert asterisk.missing(tmp_path / "none") == (
        f"asterisk-core-sounds-en-wav is not installed (no {tmp_path / 'none' / 'digits'}): "
        "make voices, or apt install asterisk-core-sounds-en-wav"
    )
    reason = asterisk.missing(asterisk_root, labels=tmp_path / "absent.txt")
    assert "apt install asterisk-core-sounds-en" in reason and "core-sounds-en.txt" in reason
    found = asterisk.find(tmp_path / "none")
    assert list(found) == [] and found.skip_counts() == {"missing": 1}


def test_warzone_attaches_each_comment_to_its_own_line(warzone_root):
    found = warzone2100.find(warzone_root)
    by_member = {r.member: (r.text, r.speaker) for r in found}
    assert by_member == {
        "audio/memressp/power/pcv343.ogg": ("power low", "announcer"),
        "audio/memressp/missmesg/pcv463.ogg": ("ten minutes remaining", "announcer"),
        "audio/vtoltalk/v-eloc2.ogg": ("enemy located", "vtol-pilot-2"),
    }
    assert all(r.path == str(warzone_root / "base.wz") for r in found)
    details = {skip.reason: skip.detail for skip in found.skipped}
    assert found.skip_counts() == {
        "acronym": 1,
        "not_speech": 1,
        "no_label": 1,  # 9.ogg: the "/*Nine*/" line above it is not its label
        "no_file": 1,
        "rate": 1,
    }
    assert details["no_label"].startswith("audio/audio.cfg:9: 9.ogg")
    assert "audio/sfx/weapons/rotlsr.ogg" in details["not_speech"]
    assert details["rate"].startswith("audio/audio.cfg:12:")


def test_warzone_refuses_a_file_listed_twice_with_two_comments():
    config = 'audio "a.ogg" oneshot 100 1800 /*One*/\n\taudio "a.ogg" oneshot 100 1800 /*Two*/\n'
    assert warzone2100.parse_config(config) == {"a.ogg": (1, warzone2100.AMBIGUOUS)}


def test_warzone_missing_says_why(warzone_root, tmp_path):
    assert warzone2100.missing(warzone_root) is None
    assert warzone2100.missing(tmp_path) == (
        f"warzone2100-data is not installed (no {tmp_path / 'base.wz'}): make voices, or "
        "apt install warzone2100-data"
    )
    (tmp_path / "base.wz").write_bytes(b"not a zip")
    assert "is not the warzone2100-data layout" in warzone2100.missing(tmp_path)


def test_ktuberling_checks_names_against_files(ktuberling_root, tmp_path):
    found = ktuberling.find(ktuberling_root)
    assert [r.text for r in found] == ["ball", "palm tree"]
    assert _reasons(found) == {
        "pizzeria_broccolli.ogg": "label_mismatch",
        "moon_ufo.ogg": "reading",
    }
    assert "ktuberling-data is not installed" in ktuberling.missing(tmp_path)


def test_klettres_uses_words_only(klettres_root, tmp_path):
    found = klettres.find(klettres_root)
    assert [(r.text, r.voice) for r in found] == [("dog", "klettres:en_GB")]
    assert _reasons(found) == {"a.ogg": "not_words", "th.ogg": "not_words"}
    assert "klettres-data is not installed" in klettres.missing(tmp_path)


# --- audio ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (11025, 1), (44100, 2)])
def test_speech_is_trimmed_float32_mono_at_16k(tmp_path, rate, channels):
    path = tmp_path / "clip.wav"
    _write(path, _clip(0.3, rate, silence_s=0.2, channels=channels), rate)
    recording = Recording(str(path), None, "x", "s", "test", "none", "word")
    speech = audio.speech(recording)
    assert speech.dtype == np.float32 and speech.ndim == 1
    # 0.3 s of sound plus a 0.03 s pad each side, to a 10 ms frame.
    assert abs(len(speech) / SAMPLE_RATE - 0.36) <= 0.011
    raw, raw_rate = audio.read(str(path))
    assert np.array_equal(speech, resample(audio.trim_silence(raw, raw_rate), rate, SAMPLE_RATE))
    spectrum = np.abs(np.fft.rfft(speech))
    assert np.argmax(spectrum) * SAMPLE_RATE / len(speech) == pytest.approx(220, abs=5)


def test_trim_ignores_a_noise_floor():
    rng = np.random.default_rng(0)
    clip = _clip(0.3, 16000, silence_s=0.5)
    noisy = clip + 0.01 * rng.standard_normal(len(clip)).astype(np.float32)  # -32 dB
    assert abs(len(audio.trim_silence(noisy, 16000)) / 16000 - 0.36) <= 0.021
    assert len(audio.trim_silence(np.zeros(1600, np.float32), 16000)) == 0


def test_read_takes_a_zip_member(warzone_root):
    samples, rate = audio.read(str(warzone_root / "base.wz"), "audio/memressp/power/pcv343.ogg")
    assert rate == 11025 and samples.ndim == 1
    assert abs(len(samples) / rate - 0.9) < 0.01


# --- composition ---------------------------------------------------------------------------------


def _words(*texts: str) -> list[Recording]:
    return [Recording(f"/clips/{t}.wav", None, t, "s", "test", "none", "word") for t in texts]


WORD_CLIPS = _words(
    *(number_words(n) for n in (*range(20), *range(20, 100, 10))),
    "hundred",
    "thousand",
    "and",
    "oh",
    "a m",
    "p m",
    "o'clock",
)


def test_cover_takes_the_longest_clip():
    table = compose.clip_table(_words("five", "p", "m", "p m"))
    assert compose.cover("five p m", table) == ["five", "p m"]
    assert compose.cover("five past", table) is None


def test_compose_says_every_word_with_a_clip_and_is_deterministic():
    composed = compose.compose(WORD_CLIPS, random.Random(5), 12)
    assert len(composed) == 12 and len({c.text for c in composed}) == 12
    for sentence in composed:
        assert " ".join(clip.text for clip in sentence.clips) == sentence.text
        assert sentence.category == "number"
    assert composed == compose.compose(WORD_CLIPS, random.Random(5), 12)
    assert composed != compose.compose(WORD_CLIPS, random.Random(6), 12)
    avoided = compose.compose(WORD_CLIPS, random.Random(5), 12, avoid={composed[0].text})
    assert composed[0].text not in {c.text for c in avoided}
    assert compose.compose([], random.Random(5), 3) == []


def test_compose_slot_sentences_are_digits_and_times():
    composed = compose.compose(WORD_CLIPS, random.Random(2), 30, sentences=compose.slot_sentence)
    assert {c.category for c in composed} == {"digits", "time"}
    assert all(" ".join(clip.text for clip in c.clips) == c.text for c in composed)


def test_join_puts_pauses_between_pieces():
    pieces = [np.ones(100, np.float32), np.ones(50, np.float32)]
    joined = compose.join(pieces, np.random.default_rng(0), pause_s=(0.01, 0.01), rate=1000)
    assert joined.tolist() == [1.0] * 100 + [0.0] * 10 + [1.0] * 50


# --- utterances and splits -----------------------------------------------------------------------


def test_human_utterances_train_writes_16k_flac_records(tmp_path, warzone_root, ktuberling_root):
    roots = {"warzone2100": warzone_root, "ktuberling": ktuberling_root, "klettres": tmp_path}
    out = tmp_path / "corpus"
    records = human.human_utterances(human.RECORDINGS_TRAIN_SOURCES, 3, out, "train", roots=roots)
    assert [r["text"] for r in records] == [
        "power low",
        "ten minutes remaining",
        "enemy located",
        "ball",
        "palm tree",
    ]
    assert records[0]["id"] == "train-warzone2100-00000"
    assert records[2]["voice"] == "warzone2100:vtol-pilot-2"
    for record in records:
        assert record["engine"] == "human" and record["source"] in ("warzone2100", "ktuberling")
        info = soundfile.info(record["audio_filepath"])
        assert (info.samplerate, info.channels, info.subtype, info.format) == (
            SAMPLE_RATE,
            1,
            "PCM_16",
            "FLAC",
        )
        assert record["duration"] == pytest.approx(info.frames / SAMPLE_RATE)
    first = Path(records[0]["audio_filepath"]).read_bytes()
    (out / "audio" / "train" / "human-old-00099.flac").write_bytes(b"stale")
    again = human.human_utterances(human.RECORDINGS_TRAIN_SOURCES, 3, out, "train", roots=roots)
    assert again == records and Path(again[0]["audio_filepath"]).read_bytes() == first
    assert sorted(p.name for p in (out / "audio" / "train").iterdir()) == sorted(
        Path(r["audio_filepath"]).name for r in records
    )


def test_human_utterances_test_split_composes_sentences(tmp_path, asterisk_root):
    records = human.human_utterances(
        ["asterisk"], 4, tmp_path, "test_human", count=5, roots={"asterisk": asterisk_root}
    )
    assert len(records) == 5
    assert {r["voice"] for r in records} == {"asterisk:allison"}
    assert {r["category"] for r in records} <= {"number", "digits", "time"}
    assert records[0]["id"] == "test_human-asterisk-00000"
    for record in records:
        assert set(record["text"]) <= ALLOWED_CHARACTERS
        speech_words = len(record["text"].split())
        assert record["duration"] > 0.2 * speech_words  # each clip is 0.4 s of sound
    again = human.human_utterances(
        ["asterisk"], 4, tmp_path, "test_human", count=5, roots={"asterisk": asterisk_root}
    )
    assert again == records


def test_test_human_speakers_are_never_in_training(tmp_path):
    with pytest.raises(ValueError, match=r"\['asterisk'\] are not train sources"):
        human.human_utterances(["asterisk"], 1, tmp_path, "train")
    with pytest.raises(ValueError, match="must never be heard in training"):
        human.check_sources(["asterisk", "warzone2100"], ["asterisk"])
    with pytest.raises(ValueError, match="asterisk:allison"):
        human.check_disjoint_voices(
            [{"voice": "asterisk:allison"}], [{"voice": "asterisk:allison"}]
        )
    human.check_sources()  # the constants themselves


def test_a_missing_source_is_skipped_with_its_reason(tmp_path, caplog):
    records = human.human_utterances(
        ["ktuberling"], 1, tmp_path, "train", roots={"ktuberling": tmp_path / "none"}
    )
    assert records == []
    assert "ktuberling-data is not installed" in caplog.text
    summary = human.survey(["ktuberling"], roots={"ktuberling": tmp_path / "none"})
    assert summary["ktuberling"]["missing"].startswith("ktuberling-data is not installed")
    assert summary["ktuberling"]["licence"].startswith("GPL-2+")


# --- the real packages, where installed ----------------------------------------------------------


@pytest.mark.parametrize("name", list(human.SOURCES))
def test_installed_package(name):
    module = human.SOURCES[name]
    reason = module.missing()
    if reason is not None:
        pytest.skip(reason)
    found = module.find()
    assert len(found) > 10
    assert all(set(r.text) <= ALLOWED_CHARACTERS and r.text for r in found)
    texts = {r.text for r in found}
    expected = {
        "asterisk": {"five", "o'clock", "a m", "twentieth", "hundred", "and"},
        "warzone2100": {"power low", "ten minutes remaining", "enemy located"},
        "ktuberling": {"ball", "palm tree"},
        "klettres": {"dog"},
    }[name]
    assert expected <= texts
    if name == "asterisk":  # its labels file spells the ordinal of forty "fourtieth"
        assert "label_mismatch" in found.skip_counts()
        assert "fortieth" not in texts


# --- in the demo corpus (rnnt/corpus/synth.py) ----------------------------------------------------


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _installed_only(monkeypatch, tmp_path, **roots: Path) -> None:
    """Point every source at a fixture or, where none is given, at an empty folder."""
    for name, module in human.SOURCES.items():
        monkeypatch.setattr(module, "DEFAULT_ROOT", roots.get(name, tmp_path / "absent" / name))


def _tiny_corpus(folder: Path, **options) -> dict[str, Path]:
    """A demo corpus of a few eSpeak utterances plus the recordings the fixtures installed."""
    from rnnt.corpus.synth import synthesize_demo_corpus

    return synthesize_demo_corpus(
        folder,
        train_hours=0.002,
        val_utterances=1,
        test_utterances=1,
        unseen_utterances=1,
        engines=["espeak"],
        num_workers=1,
        progress=False,
        **options,
    )


def test_demo_corpus_trains_on_some_voices_and_tests_on_another(
    monkeypatch, tmp_path, asterisk_root, warzone_root
):
    _installed_only(monkeypatch, tmp_path, asterisk=asterisk_root, warzone2100=warzone_root)
    paths = _tiny_corpus(tmp_path / "corpus", human_training=True)
    train = _lines(paths["train"])
    human_train = [r for r in train if r["engine"] == "human"]
    test_human = _lines(paths["test_human"])
    assert human_train and test_human
    assert not {r["text"] for r in test_human} & {r["text"] for r in train}
    assert {r["voice"] for r in test_human} == {"asterisk:allison"}
    assert not {r["voice"] for r in human_train} & {"asterisk:allison"}
    info = json.loads((tmp_path / "corpus" / "corpus.json").read_text())
    assert info["splits"]["test_human"]["utterances"] == len(test_human)
    assert "missing" in info["recordings"]["ktuberling"]


def test_demo_corpus_can_test_on_recordings_without_training_on_them(
    monkeypatch, tmp_path, asterisk_root, warzone_root
):
    _installed_only(monkeypatch, tmp_path, asterisk=asterisk_root, warzone2100=warzone_root)
    paths = _tiny_corpus(tmp_path / "corpus", human_training=False)
    assert not [r for r in _lines(paths["train"]) if r["engine"] == "human"]
    assert _lines(paths["test_human"])


def test_demo_corpus_with_recordings_demanded_but_none_installed_says_so(monkeypatch, tmp_path):
    _installed_only(monkeypatch, tmp_path)
    with pytest.raises(RuntimeError, match="no human recordings are installed.*make voices"):
        _tiny_corpus(tmp_path / "corpus", recordings=True)
