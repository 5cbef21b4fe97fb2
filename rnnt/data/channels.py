"""Channel augmentation for training: simulated rooms, a telephone line, gain and clipping.

Every function takes and returns a 16 kHz mono float32 waveform ``(S,)`` and keeps S.
``ChannelAugment`` chains them per utterance in the data-loader workers, after speed
perturbation (applied to the cut before the sampler) and around background noise::

    reverb -> background noise -> gain and clipping -> telephone

Clipping comes before the telephone line, as on a real call: a microphone preamp or converter
overloads at capture, and the line then band-limits the clipped signal (clipping after it would
add harmonics above 3400 Hz that no telephone line carries).

Randomness is a function of (seed, epoch, utterance id, transform), hashed, so an utterance gets
the same channel in the same epoch on any worker, any rank, in any run; each transform draws
from its own stream, so changing one probability leaves the others' draws as they were. The
epoch reaches the workers on the cut (``rnnt.data.cuts.tag_epoch``, ``cut_epoch``); before ``start_epoch`` the
chain is off (a warm-up on clean audio).

Rooms are a statistical model, not a geometric one: a direct path, sparse early reflections
whose density grows as t^2 up to the mixing time (sqrt(V) ms), then a Gaussian tail; the
reverberant part decays exponentially with its own RT60 in three bands (highs die first), and
its energy against the direct path follows the diffuse-field critical distance
0.057 sqrt(V / RT60) m. About 1 ms per response, reproducible from one numpy Generator, no
dependency beyond torch and numpy.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from rnnt.constants import (
    CHANNELS_START_EPOCH,
    CLIPPING_LEVEL_RANGE,
    CLIPPING_PROBABILITY,
    GAIN_RANGE_DB,
    REVERB_BAND_EDGES_HZ,
    REVERB_BAND_RT60_SCALE,
    REVERB_DISTANCE_RANGE_M,
    REVERB_PROBABILITY,
    REVERB_ROOM_VOLUME_RANGE_M3,
    REVERB_RT60_RANGE_S,
    SAMPLE_RATE,
    SEED,
    SPEED_OF_SOUND,
    TELEPHONE_BAND_EDGE_HZ,
    TELEPHONE_BAND_HZ,
    TELEPHONE_CODEC_BITS,
    TELEPHONE_PROBABILITY,
    TELEPHONE_SAMPLE_RATE,
)
from rnnt.data.augment import resample

_DECAY_60_DB = 3.0 * math.log(10.0)  # an amplitude envelope exp(-this) is 60 dB down
_MU_LAW_MAX = 8159  # G.711 mu-law: the largest 14-bit magnitude it encodes
_MU_LAW_BIAS = 33


def room_impulse_response(
    rng: np.random.Generator,
    rt60_s: float,
    volume_m3: float,
    distance_m: float,
    sample_rate: int = SAMPLE_RATE,
) -> torch.Tensor:
    """A random room impulse response (L,), direct path first, at ``sample_rate`` Hz.

    Args:
        rng: the source of every random choice (reflection times, signs, tail noise).
        rt60_s: reverberation time below 1 kHz, seconds (the 60 dB decay); the higher bands
            decay faster (``REVERB_BAND_RT60_SCALE``).
        volume_m3: room volume, m^3: sets the mixing time and the critical distance.
        distance_m: talker to microphone, metres: sets the direct-to-reverberant ratio.

    Returns:
        (L,) float32, L = the samples until the slowest band has decayed by 60 dB; sample 0
        is the direct path with amplitude 1.
    """
    length = max(2, math.ceil(rt60_s * max(REVERB_BAND_RT60_SCALE) * sample_rate))
    seconds = np.arange(length) / sample_rate  # after the direct path
    # Diffuse-field theory: reverberant / direct energy = (distance / critical distance)^2.
    reverberant_energy = (distance_m / (0.057 * math.sqrt(volume_m3 / rt60_s))) ** 2
    decay = 2.0 * _DECAY_60_DB / (rt60_s * sample_rate)  # energy decay per sample
    density = 4.0 * math.pi * SPEED_OF_SOUND**3 / volume_m3  # reflections / s / (s from emission)^2
    direct_s = distance_m / SPEED_OF_SOUND
    mixing = min(length - 1, max(1, round(math.sqrt(volume_m3) / 1000.0 * sample_rate)))
    # Early reflections up to the mixing time (sqrt(V) ms): sparse, at times with density
    # ~ t^2, each carrying the diffuse energy of its share of time, but none louder than a
    # lossless path of its length (spherical spreading, direct_s / t).
    start, end = direct_s, direct_s + mixing / sample_rate
    count = rng.poisson(density / 3.0 * (end**3 - start**3))
    times = np.cbrt(start**3 + rng.random(count) * (end**3 - start**3))
    positions = np.clip(np.round((times - direct_s) * sample_rate).astype(int), 1, mixing)
    share = np.maximum(sample_rate / (density * times**2), 1.0)  # samples per reflection
    first = reverberant_energy * (1.0 - math.exp(-decay))  # diffuse energy of sample 0
    amplitudes = np.minimum(np.sqrt(first * np.exp(-decay * positions) * share), direct_s / times)
    response = np.zeros(length)
    np.add.at(response, positions, rng.choice([-1.0, 1.0], size=count) * amplitudes)
    # The late tail: Gaussian noise split into bands, each decaying with its own RT60.
    spectrum = np.fft.rfft(rng.standard_normal(length))
    band_of = np.searchsorted(REVERB_BAND_EDGES_HZ, np.fft.rfftfreq(length, 1.0 / sample_rate))
    tail = np.zeros(length)
    for band, scale in enumerate(REVERB_BAND_RT60_SCALE):
        part = np.fft.irfft(np.where(band_of == band, spectrum, 0.0), n=length)
        tail += part * np.exp(-_DECAY_60_DB * seconds / (rt60_s * scale))
    tail[:mixing] = 0.0
    tail_energy = float(np.square(tail).sum())
    missing = reverberant_energy - float(np.square(response).sum())
    if tail_energy > 0 and missing > 0:
        response += tail * math.sqrt(missing / tail_energy)
    response[0] = 1.0
    return torch.from_numpy(response.astype(np.float32))


def reverberate(waveform: torch.Tensor, impulse_response: torch.Tensor) -> torch.Tensor:
    """(S,) waveform convolved (FFT) with an (L,) impulse response, cut back to (S,).

    The output starts with the direct path (no delay) and has the input's mean square; the
    tail that rings past the last sample is dropped. Silent input comes back unchanged.
    """
    num_samples = waveform.numel()
    size = 1 << (num_samples + impulse_response.numel() - 2).bit_length()
    spectrum = torch.fft.rfft(waveform.double(), n=size) * torch.fft.rfft(
        impulse_response.double(), n=size
    )
    wet = torch.fft.irfft(spectrum, n=size)[:num_samples]
    power_in = waveform.double().square().mean()
    power_out = wet.square().mean()
    if power_in <= 0 or power_out <= 0:
        return waveform.clone()
    return (wet * torch.sqrt(power_in / power_out)).to(waveform.dtype)


def band_pass(
    waveform: torch.Tensor,
    sample_rate: int,
    band_hz: Sequence[float] = TELEPHONE_BAND_HZ,
    edge_hz: float = TELEPHONE_BAND_EDGE_HZ,
) -> torch.Tensor:
    """(S,) waveform with nothing outside ``band_hz`` = [low, high] Hz (zero-phase, by FFT).

    The gain is 1 from ``low + edge_hz`` to ``high - edge_hz``, falls as a raised cosine to 0
    at ``low`` and ``high``, and is 0 outside. Zero padding keeps the ends from wrapping.
    """
    num_samples = waveform.numel()
    size = 1 << (num_samples + sample_rate // 10 - 1).bit_length()
    frequencies = torch.fft.rfftfreq(size, 1.0 / sample_rate, dtype=torch.float64)
    low, high = band_hz
    rise = ((frequencies - low) / edge_hz).clamp(0.0, 1.0)
    fall = ((high - frequencies) / edge_hz).clamp(0.0, 1.0)
    gain = (0.5 - 0.5 * torch.cos(math.pi * rise)) * (0.5 - 0.5 * torch.cos(math.pi * fall))
    spectrum = torch.fft.rfft(waveform.double(), n=size) * gain
    return torch.fft.irfft(spectrum, n=size)[:num_samples].to(waveform.dtype)


def mu_law_encode(waveform: torch.Tensor) -> torch.Tensor:
    """G.711 mu-law: (S,) float samples, full scale +-1.0, -> (S,) uint8 codes.

    Samples are scaled to 14-bit integers (+-8159; beyond it they saturate, as a line does),
    biased by 33, and coded as sign, 3-bit segment and 4-bit step, all bits inverted.
    """
    linear = torch.round(waveform.double().clamp(-1.0, 1.0) * _MU_LAW_MAX).long()
    magnitude = linear.abs().clamp(max=_MU_LAW_MAX - 1) + _MU_LAW_BIAS  # 33 .. 8191
    segment = (torch.floor(torch.log2(magnitude.double())).long() - 5).clamp(0, 7)
    step = (magnitude >> (segment + 1)) & 0xF
    sign = (linear < 0).long()
    return (~((sign << 7) | (segment << 4) | step) & 0xFF).to(torch.uint8)


def mu_law_decode(codes: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """G.711 mu-law codes (S,) uint8 -> (S,) float32 samples, full scale +-1.0.

    ``bits`` < 8 keeps only the top ``bits - 4`` of each code's 4 step bits (a coarser line,
    8 kHz x bits bit/s) and decodes to the middle of the wider step.
    """
    if not 5 <= bits <= 8:
        raise ValueError(f"mu-law bits must be 5..8 (sign, segment, 1-4 step bits), got {bits}")
    code = (~codes.long()) & 0xFF
    sign = 1.0 - 2.0 * ((code >> 7) & 1).double()
    segment = (code >> 4) & 0x7
    dropped = 8 - bits
    step = ((code & 0xF) >> dropped << dropped).double() + ((1 << dropped) - 1) / 2.0
    magnitude = (2.0 * step + _MU_LAW_BIAS) * torch.pow(2.0, segment.double()) - _MU_LAW_BIAS
    return (sign * magnitude / _MU_LAW_MAX).float()


def telephone(
    waveform: torch.Tensor, bits: int = 8, sample_rate: int = SAMPLE_RATE
) -> torch.Tensor:
    """(S,) waveform through a telephone line: 8 kHz, 300-3400 Hz, G.711 mu-law, back to (S,).

    Band-pass both before the codec (the sending filter) and after the return to
    ``sample_rate`` (the receiving filter, which also removes what the resampler leaves above
    4 kHz). ``bits``: mu-law code bits (``mu_law_decode``); 8 is plain 64 kbit/s G.711.
    """
    narrow = band_pass(
        resample(waveform, sample_rate, TELEPHONE_SAMPLE_RATE), TELEPHONE_SAMPLE_RATE
    )
    narrow = mu_law_decode(mu_law_encode(narrow), bits)
    wide = band_pass(resample(narrow, TELEPHONE_SAMPLE_RATE, sample_rate), sample_rate)
    num_samples = waveform.numel()
    wide = torch.nn.functional.pad(wide[:num_samples], (0, max(0, num_samples - wide.numel())))
    return wide.to(waveform.dtype)


def gain_and_clip(waveform: torch.Tensor, gain_db: float, level: float) -> torch.Tensor:
    """(S,) waveform times ``gain_db`` dB, hard-clipped to [-level, level] (full scale 1.0)."""
    return (waveform * 10.0 ** (gain_db / 20.0)).clamp(-level, level)


def _uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


class ChannelAugment:
    """Reverb, telephone line, gain and clipping for a training utterance, each with a chance.

    Args:
        reverb_probability, telephone_probability, clipping_probability: the chance, per
            utterance and epoch, that each transform applies; 0.0 turns it off.
        start_epoch: epochs before this one get none of them.
        seed: with the epoch and the utterance id, decides every random choice.
    """

    STAGES = ("reverb", "clipping", "telephone")  # hashed into each transform's own stream

    def __init__(
        self,
        reverb_probability: float = REVERB_PROBABILITY,
        telephone_probability: float = TELEPHONE_PROBABILITY,
        clipping_probability: float = CLIPPING_PROBABILITY,
        start_epoch: int = CHANNELS_START_EPOCH,
        seed: int = SEED,
    ) -> None:
        self.probabilities = {
            "reverb": float(reverb_probability),
            "clipping": float(clipping_probability),
            "telephone": float(telephone_probability),
        }
        for name, probability in self.probabilities.items():
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"{name} probability must be in [0, 1], got {probability}")
        self.start_epoch = int(start_epoch)
        self.seed = int(seed)

    @property
    def enabled(self) -> bool:
        """Whether any transform has a chance above 0."""
        return any(probability > 0 for probability in self.probabilities.values())

    def generator(self, stage: str, utterance_id: str, epoch: int) -> np.random.Generator:
        """The random stream of one transform for one utterance in one epoch."""
        digest = hashlib.blake2b(utterance_id.encode(), digest_size=16).digest()
        words = [self.seed, int(epoch), self.STAGES.index(stage), int.from_bytes(digest, "big")]
        return np.random.default_rng(words)

    def __call__(
        self,
        waveform: torch.Tensor,
        utterance_id: str,
        epoch: int,
        add_noise: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(S,) waveform -> (S,): reverb, ``add_noise`` (if given), clipping, telephone.

        Transforms that do not apply leave the tensor as it is (the same object).
        """
        active = self.enabled and epoch >= self.start_epoch
        if active and (rng := self._chosen("reverb", utterance_id, epoch)) is not None:
            volume = math.exp(_uniform(rng, np.log(REVERB_ROOM_VOLUME_RANGE_M3)))
            response = room_impulse_response(
                rng,
                rt60_s=_uniform(rng, REVERB_RT60_RANGE_S),
                volume_m3=volume,
                distance_m=_uniform(rng, REVERB_DISTANCE_RANGE_M),
            )
            waveform = reverberate(waveform, response)
        if add_noise is not None:
            waveform = add_noise(waveform)
        if active and (rng := self._chosen("clipping", utterance_id, epoch)) is not None:
            gain_db = _uniform(rng, GAIN_RANGE_DB)
            waveform = gain_and_clip(waveform, gain_db, _uniform(rng, CLIPPING_LEVEL_RANGE))
        if active and (rng := self._chosen("telephone", utterance_id, epoch)) is not None:
            bits = int(rng.choice(TELEPHONE_CODEC_BITS))
            waveform = telephone(waveform, bits)
        return waveform

    def _chosen(self, stage: str, utterance_id: str, epoch: int) -> np.random.Generator | None:
        # The stage's stream if this utterance gets it this epoch, else None.
        probability = self.probabilities[stage]
        if probability == 0.0:
            return None
        rng = self.generator(stage, utterance_id, epoch)
        return rng if rng.random() < probability else None
