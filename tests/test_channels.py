"""Tests for rnnt/data/channels.py: rooms, telephone line, mu-law, clipping, and their wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnt.constants import REVERB_BAND_RT60_SCALE, SAMPLE_RATE, TELEPHONE_SAMPLE_RATE
from rnnt.data.channels import (
    ChannelAugment,
    band_pass,
    gain_and_clip,
    mu_law_decode,
    mu_law_encode,
    reverberate,
    room_impulse_response,
    telephone,
)
from rnnt.data.cuts import cut_epoch, tag_epoch
from tests.test_cuts import make_corpus
from tests.test_dataset import datamodule

ALL_ON = dict(reverb_probability=1.0, telephone_probability=1.0, clipping_probability=1.0)


def _tone(hz: float, seconds: float = 1.0, rate: int = SAMPLE_RATE) -> torch.Tensor:
    return 0.5 * torch.sin(2 * math.pi * hz * torch.arange(round(seconds * rate)) / rate)


def _speech_like(seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    # Noise bursts with gaps: a signal whose level a room could smear.
    generator = torch.Generator().manual_seed(seed)
    samples = round(seconds * SAMPLE_RATE)
    envelope = (torch.arange(samples) // 1600 % 2).float()
    return 0.2 * torch.randn(samples, generator=generator) * envelope


def _db(numerator: torch.Tensor, denominator: torch.Tensor) -> float:
    return 10 * math.log10(float(numerator.double().sum() / denominator.double().sum()))


def _band_energy(waveform: torch.Tensor, low: float, high: float) -> torch.Tensor:
    power = torch.fft.rfft(waveform.double()).abs().square()
    hz = torch.fft.rfftfreq(waveform.numel(), 1 / SAMPLE_RATE, dtype=torch.float64)
    return power[(hz >= low) & (hz < high)]


def _schroeder_rt60(response: np.ndarray) -> float:
    # Decay from -5 to -25 dB of the backward-integrated energy, extrapolated to 60 dB.
    energy = np.cumsum(response[::-1] ** 2)[::-1]
    level = 10 * np.log10(energy / energy[0] + 1e-15)
    return 3 * (np.argmax(level < -25) - np.argmax(level < -5)) / SAMPLE_RATE


def test_room_response_has_the_requested_decay_and_direct_to_reverberant_ratio():
    rt60, volume, distance = 0.5, 100.0, 2.0
    response = room_impulse_response(np.random.default_rng(0), rt60, volume, distance)
    assert response.dtype == torch.float32 and response.numel() == round(rt60 * SAMPLE_RATE)
    reverberant = response.clone()
    reverberant[0] -= 1.0  # the direct path, sample 0, amplitude 1
    critical_m = 0.057 * math.sqrt(volume / rt60)
    assert float(reverberant.double().square().sum()) == pytest.approx((distance / critical_m) ** 2)
    # RT60 holds below 1 kHz; the highest band decays REVERB_BAND_RT60_SCALE[-1] times as fast.
    padded = torch.nn.functional.pad(reverberant, (0, SAMPLE_RATE // 2))
    low = band_pass(padded, SAMPLE_RATE, (100.0, 900.0), 50.0).numpy()
    high = band_pass(padded, SAMPLE_RATE, (4200.0, 7800.0), 50.0).numpy()
    assert _schroeder_rt60(low) == pytest.approx(rt60, rel=0.1)
    assert _schroeder_rt60(high) == pytest.approx(rt60 * REVERB_BAND_RT60_SCALE[-1], rel=0.1)
    again = room_impulse_response(np.random.default_rng(0), rt60, volume, distance)
    assert torch.equal(response, again)


def test_reverberate_keeps_length_level_and_timing():
    response = room_impulse_response(np.random.default_rng(1), 0.8, 50.0, 3.0)
    speech = _speech_like(1.5)
    wet = reverberate(speech, response)
    assert wet.shape == speech.shape and wet.dtype == torch.float32
    assert abs(_db(wet.square(), speech.square())) < 0.01  # the same mean square
    assert not torch.allclose(wet, speech, atol=1e-3)
    # Gaps fill with the tail: the quiet halves hold far more energy than before.
    quiet = (torch.arange(speech.numel()) // 1600 % 2) == 0
    assert wet[quiet].square().sum() > 100 * speech[quiet].square().sum()
    click = torch.zeros(4000)
    click[1000] = 1.0
    echo = reverberate(click, response)  # the response itself, from the click on: no delay
    assert echo[:1000].abs().max() < 1e-6
    assert torch.allclose(echo[1000:] / echo[1000], response[:3000], atol=1e-5)
    assert torch.equal(reverberate(torch.zeros(500), response), torch.zeros(500))


@pytest.mark.parametrize(
    ("hz", "kept"), [(100, False), (250, False), (1000, True), (3000, True), (3500, False)]
)
def test_band_pass_keeps_the_band_only(hz, kept):
    # A Hann window: the edges of a cut-off tone would spread energy over every frequency.
    tone = _tone(hz, rate=TELEPHONE_SAMPLE_RATE) * torch.hann_window(TELEPHONE_SAMPLE_RATE)
    level = _db(band_pass(tone, TELEPHONE_SAMPLE_RATE).square(), tone.square())
    assert (abs(level) < 0.1) if kept else (level < -60)


@pytest.mark.parametrize("bits", [8, 7, 6])
def test_telephone_line_removes_energy_outside_300_to_3400_hz(bits):
    white = 0.1 * torch.randn(SAMPLE_RATE, generator=torch.Generator().manual_seed(0))
    line = telephone(white, bits)
    assert line.shape == white.shape and line.dtype == torch.float32
    in_band = _band_energy(line, 300, 3400)
    assert _db(_band_energy(line, 0, 300), in_band) < -45
    assert _db(_band_energy(line, 3400, SAMPLE_RATE), in_band) < -45
    # What the line carries comes through at its level; the codec's error is the only noise.
    tone = _tone(997)  # at 8 kHz, 1000 Hz would repeat 8 samples: a periodic codec error
    through = telephone(tone, bits)
    assert abs(_db(through.square(), tone.square())) < 0.2
    snr_db = -_db((through - tone)[200:-200].square(), tone[200:-200].square())
    assert snr_db > {8: 30, 7: 24, 6: 18}[bits]


@pytest.mark.parametrize("samples", [160, 8001, 16_000])
def test_telephone_line_keeps_any_length(samples):
    assert telephone(_speech_like()[:samples]).shape == (samples,)


def test_mu_law_codes_are_g711():
    codes = mu_law_encode(torch.tensor([0.0, 1.0, -1.0, 2.0, 0.5]))
    assert codes.dtype == torch.uint8
    assert codes.tolist() == [0xFF, 0x80, 0x00, 0x80, 0x8F]  # +0, +max, -max, saturated
    decoded = mu_law_decode(torch.tensor([0x80, 0x00, 0xFF, 0x7F], dtype=torch.uint8)) * 8159
    assert decoded.tolist() == [8031, -8031, 0, 0]
    with pytest.raises(ValueError, match="mu-law bits must be 5..8"):
        mu_law_decode(codes, bits=4)


def test_mu_law_matches_the_reference_codec_bit_for_bit():
    audioop = pytest.importorskip("audioop", reason="audioop left the standard library in 3.13")
    pcm16 = np.arange(-32768, 32768, dtype=np.int16)
    ours = mu_law_encode(torch.from_numpy((pcm16.astype(np.int64) >> 2) / 8159.0))
    assert ours.numpy().tobytes() == audioop.lin2ulaw(pcm16.tobytes(), 2)
    every_code = torch.arange(256, dtype=torch.uint8)
    reference = np.frombuffer(audioop.ulaw2lin(every_code.numpy().tobytes(), 2), dtype=np.int16)
    assert torch.equal(
        (mu_law_decode(every_code) * 8159 * 4).round().long(),
        torch.from_numpy(reference.astype(np.int64)),
    )


@pytest.mark.parametrize("bits", [8, 7, 6])
def test_mu_law_round_trip_error_is_bounded_by_the_step(bits):
    samples = torch.linspace(-1.0, 1.0, 50_001)
    decoded = mu_law_decode(mu_law_encode(samples), bits)
    error = (decoded - samples).abs().double() * 8159
    # Half a step (biased magnitude / 32 per dropped bit), plus rounding to 14 bits.
    bound = (samples.abs().double() * 8159 + 33.5) / 32 * 2 ** (8 - bits) + 0.5
    assert (error <= bound + 1e-6).all()
    assert (decoded[1:] >= decoded[:-1]).all()  # monotone


def test_gain_and_clip_bounds_the_peak():
    tone = _tone(440)
    clipped = gain_and_clip(tone, gain_db=20.0, level=0.3)
    assert float(clipped.abs().max()) == pytest.approx(0.3)
    small = (tone * 10).abs() < 0.3
    assert torch.allclose(clipped[small], tone[small] * 10, atol=1e-6)
    assert torch.allclose(gain_and_clip(tone, gain_db=-6.0, level=0.9), tone * 10 ** (-6 / 20))


def test_channels_are_a_function_of_seed_epoch_and_id():
    speech = _speech_like()
    first, second = ChannelAugment(**ALL_ON, seed=7), ChannelAugment(**ALL_ON, seed=7)
    out = first(speech, "a:1", epoch=3)
    assert out.shape == speech.shape and out.dtype == torch.float32
    assert torch.equal(out, second(speech.clone(), "a:1", epoch=3))
    assert not torch.equal(out, first(speech, "a:1", epoch=4))
    assert not torch.equal(out, first(speech, "a:2", epoch=3))
    assert not torch.equal(out, ChannelAugment(**ALL_ON, seed=8)(speech, "a:1", epoch=3))


def test_zero_probabilities_leave_the_waveform_untouched():
    speech = _speech_like()
    off = ChannelAugment()
    assert not off.enabled
    assert off(speech, "a:1", epoch=0) is speech
    louder = off(speech, "a:1", epoch=0, add_noise=lambda samples: samples * 2)
    assert torch.equal(louder, speech * 2)  # noise alone still applies


def test_each_probability_is_a_share_of_utterances():
    speech = _speech_like(0.05)
    half = ChannelAugment(clipping_probability=0.5)
    changed = sum(half(speech, f"u:{i}", epoch=0) is not speech for i in range(400))
    assert 160 < changed < 240


def test_nothing_before_the_start_epoch():
    speech = _speech_like(0.2)
    late = ChannelAugment(**ALL_ON, start_epoch=2)
    assert late(speech, "a:1", epoch=0) is speech and late(speech, "a:1", epoch=1) is speech
    assert not torch.equal(late(speech, "a:1", epoch=2), speech)


def test_reverb_comes_before_noise_and_clipping_after_it():
    speech = _speech_like(0.2)
    seen = []

    def add_noise(samples):
        seen.append(samples)
        return samples + 5.0

    chain = ChannelAugment(reverb_probability=1.0, clipping_probability=1.0)
    out = chain(speech, "a:1", epoch=0, add_noise=add_noise)
    assert not torch.equal(seen[0], speech)  # reverberated before the noise
    assert float(out.abs().max()) < 1.0  # clipped after the noise


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), num_utterances=12)


def _audio(loader) -> dict[str, torch.Tensor]:
    # Utterance id -> its unpadded audio, over one pass of the loader.
    return {
        utterance_id: audio[:length]
        for batch in loader
        for utterance_id, audio, length in zip(
            batch["ids"], batch["audio"], batch["host_audio_lengths"], strict=True
        )
    }


def test_datamodule_applies_the_channels_to_training_only_from_the_start_epoch(corpus):
    plain = dict(noise_path=None, speed_perturb=[])
    module = datamodule(corpus, **plain, **ALL_ON, channels_start_epoch=1, num_workers=1)
    val, loader = module.val_dataloader(), module.train_dataloader()
    try:
        clean = _audio(val)  # validation never augments
        epoch0 = _audio(loader)
        assert epoch0.keys() == clean.keys()
        assert all(torch.equal(epoch0[i], clean[i]) for i in clean)  # warm-up on clean audio
        loader.sampler.set_epoch(1)
        epoch1 = _audio(loader)  # the same worker process, the next epoch
        assert epoch1.keys() == clean.keys()
        assert not any(torch.equal(epoch1[i], clean[i]) for i in clean)
    finally:
        # Persistent workers ignore SIGTERM (rnnt.data.loader.ignore_stop_signals): left alive,
        # they would keep multiprocessing's exit handler, and so pytest, waiting for ever.
        for used in (val, loader):
            if getattr(used, "_iterator", None) is not None:
                used._iterator._shutdown_workers()
    # In the main process the audio is the same: the draws depend on (seed, epoch, id) only.
    in_process = datamodule(corpus, **plain, **ALL_ON, channels_start_epoch=1).train_dataloader()
    in_process.sampler.set_epoch(1)
    assert all(torch.equal(audio, epoch1[i]) for i, audio in _audio(in_process).items())


def test_epoch_tag_rides_on_the_cut(corpus):
    record = datamodule(corpus, noise_path=None)._splits["val"].records[0]
    cut = record.to_cut()
    tagged = tag_epoch(cut, 5)
    assert cut_epoch(tagged) == 5 and cut_epoch(cut) == 0
    assert tagged.id == cut.id and tagged.custom["num_tokens"] == cut.custom["num_tokens"]
