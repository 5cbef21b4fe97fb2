"""Log-mel front end, computed on the device inside the model: batched and streaming.

The features are Kaldi-style log filter-bank energies computed by lhotse's torch
implementation: povey window, pre-emphasis 0.97, 25 ms windows every 10 ms with
``snip_edges=False``, power spectrum, no dither, log floored at float epsilon; waveforms are
float in ``[-1, 1]`` (not scaled to 16-bit integers). The mel filters and the DC offset depend
on ``style`` (``TransducerConfig.frontend_style``):

- ``"sherpa"`` (the default): Slaney mel filters (librosa's default scale), each scaled to unit
  area, from 0 Hz to 400 Hz below Nyquist, and no DC-offset removal. This is what sherpa-onnx
  (2.0.x) computes with kaldi-native-fbank for a NeMo transducer, the model type ``rnnt
  export`` writes, whatever the model's metadata says; so an exported model is fed exactly the
  features it was trained on.
- ``"kaldi"``: Kaldi's own fbank, HTK mel filters from 20 Hz, DC offset removed per frame. The
  features of checkpoints written before the option existed; their exports map sherpa-onnx's
  features onto these approximately (``rnnt.export``).

``LogMelFrontend`` computes the features of a padded batch, ``LogMelStream`` the same
features for audio that arrives in pieces.
"""

from __future__ import annotations

import torch
from lhotse.features.kaldi.layers import Wav2LogFilterBank
from torch import nn

from rnnt.constants import (
    DITHER,
    FRONTEND_STYLE,
    FRONTEND_STYLES,
    HOP_LENGTH_S,
    MEL_HIGH_FREQ_HZ,
    MEL_LOW_FREQ_HZ,
    N_MELS,
    PREEMPHASIS,
    SAMPLE_RATE,
    SHERPA_MEL_LOW_FREQ_HZ,
    WIN_LENGTH_S,
    WINDOW_TYPE,
)
from rnnt.models.masks import padding_mask
from rnnt.models.mel import slaney_mel_banks


def check_frontend_style(style: str) -> None:
    """Raise a ``ValueError`` naming ``frontend_style`` unless ``style`` is a known style."""
    if style not in FRONTEND_STYLES:
        raise ValueError(
            f"frontend_style={style!r} is not a front end style; choose one of "
            f"{', '.join(repr(name) for name in FRONTEND_STYLES)} (rnnt/models/features.py)."
        )


class LogMelFrontend(nn.Module):
    """Padded 16 kHz waveforms to log-mel frames, batched and padding-invariant.

    ``style`` picks the mel filters and DC-offset handling (module docstring): ``"sherpa"``
    computes what sherpa-onnx feeds an exported model, ``"kaldi"`` Kaldi's fbank.

    The valid frames of an utterance are exactly those the filterbank gives for the unpadded
    utterance: Kaldi's ``snip_edges=False`` framing reflects the signal at its end, so the
    samples after each utterance are overwritten with its own reflection before framing,
    instead of letting the last frames read the zeros of the batch padding. Frames past an
    utterance's length are set to 0.
    """

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        n_mels: int = N_MELS,
        win_length_s: float = WIN_LENGTH_S,
        hop_length_s: float = HOP_LENGTH_S,
        dither: float = DITHER,
        high_freq_hz: float = MEL_HIGH_FREQ_HZ,
        style: str = FRONTEND_STYLE,
    ) -> None:
        super().__init__()
        check_frontend_style(style)
        self.style = style
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.win_length = int(win_length_s * sample_rate)
        self.hop_length = int(hop_length_s * sample_rate)
        sherpa = style == "sherpa"
        low_freq_hz = SHERPA_MEL_LOW_FREQ_HZ if sherpa else MEL_LOW_FREQ_HZ
        self.fbank = Wav2LogFilterBank(
            sampling_rate=sample_rate,
            frame_length=win_length_s,
            frame_shift=hop_length_s,
            remove_dc_offset=not sherpa,
            preemph_coeff=PREEMPHASIS,
            window_type=WINDOW_TYPE,
            dither=dither,
            snip_edges=False,
            low_freq=low_freq_hz,
            high_freq=high_freq_hz,
            num_filters=n_mels,
        )
        # lhotse stores its window and mel matrix as frozen nn.Parameters; as non-persistent
        # buffers they stay out of the parameter count, the optimizer and the checkpoint (they
        # are rebuilt from the constants) while still following .to(device).
        for module in self.fbank.modules():
            for name, parameter in list(module._parameters.items()):
                del module._parameters[name]
                module.register_buffer(name, parameter.detach(), persistent=False)
        if sherpa:  # lhotse builds HTK filters only; _fb is its (K, n_mels) mel matrix
            banks = slaney_mel_banks(
                n_mels, self.fbank.fft_length, sample_rate, low_freq_hz, high_freq_hz
            )
            self.fbank.register_buffer("_fb", banks, persistent=False)

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Frames of an unpadded utterance of ``num_samples`` samples (Kaldi, snip_edges=False)."""
        return torch.div(num_samples + self.hop_length // 2, self.hop_length, rounding_mode="floor")

    def forward(
        self,
        audio: torch.Tensor,
        audio_lengths: torch.Tensor,
        max_audio_length: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel features of a padded batch.

        Args:
            audio: ``(B, S)`` waveforms at ``sample_rate`` Hz, float in ``[-1, 1]``, padded.
            audio_lengths: ``(B,)`` valid samples of each waveform.
            max_audio_length: ``max(audio_lengths)`` where the caller knows it on the host
                (the data loader does); otherwise it is read from ``audio_lengths``, which on
                a GPU waits for the device.

        Returns:
            ``features (B, T, n_mels)`` float32 log-mel energies, 0 past each utterance, and
            ``feature_lengths (B,)`` int64 valid frames, ``T = max(feature_lengths)``.
        """
        if audio.dim() != 2:
            raise ValueError(
                f"LogMelFrontend expects audio of shape (B, S), got {tuple(audio.shape)}; "
                "batch mono waveforms with padding."
            )
        audio_lengths = audio_lengths.to(device=audio.device, dtype=torch.long)
        feature_lengths = self.num_frames(audio_lengths)
        if max_audio_length is not None:  # num_frames() on the host
            num_frames = (max_audio_length + self.hop_length // 2) // self.hop_length
        else:
            num_frames = int(feature_lengths.max()) if audio.size(0) > 0 else 0
        with torch.autocast(device_type=audio.device.type, enabled=False):
            audio = audio.float()
            # Kaldi reflects index S + j to S - 1 - j; a window reaches at most win_length
            # samples past the end, so that many reflected samples per utterance suffice.
            positions = torch.arange(audio.size(1) + self.win_length, device=audio.device)
            lengths = audio_lengths.unsqueeze(1)
            index = torch.where(positions < lengths, positions, 2 * lengths - 1 - positions)
            index = index.clamp(0, max(audio.size(1) - 1, 0))
            extended = audio.gather(1, index)
            # The frames of the extended signal start where those of the batch do; its extra
            # trailing frames are cut.
            features = self.fbank(extended)[:, :num_frames]
            valid = padding_mask(feature_lengths, num_frames)
            features = features.masked_fill(~valid.unsqueeze(-1), 0.0)
        return features, feature_lengths


class LogMelStream:
    """The features of :class:`LogMelFrontend` for audio that arrives in pieces.

    Kaldi's ``snip_edges=False`` framing puts frame ``i``'s window on samples
    ``i * hop - pad .. i * hop - pad + win - 1`` (``pad = (win - hop) // 2``) and reflects the
    signal at both ends. The start's reflection reads the first samples, known once they have
    arrived; the end's is known only at :meth:`flush`. So :meth:`pop` gives frames whose
    windows lie inside the samples received, :meth:`flush` the rest with the end reflection,
    and the frames of the whole stream equal ``frontend(audio)``'s frames. Only the samples
    that later frames can still read are kept.

    Usage: :meth:`push` samples, :meth:`pop` up to :attr:`frames_ready` frames, ... then
    :meth:`flush` once at the end.
    """

    def __init__(self, frontend: LogMelFrontend) -> None:
        self.frontend = frontend
        self.device = next(frontend.buffers()).device
        self.hop_length = frontend.hop_length
        self.win_length = frontend.win_length
        self.left_pad = (frontend.win_length - frontend.hop_length) // 2
        self._samples = torch.zeros(0, device=self.device)  # audio from _offset on
        self._offset = 0
        self._received = 0
        self._next_frame = 0
        self._flushed = False

    @property
    def lookahead_samples(self) -> int:
        """Samples a frame's window reaches past the end of its hop (Kaldi framing: 120)."""
        return self.win_length - self.left_pad - self.hop_length

    @property
    def frames_ready(self) -> int:
        """Frames :meth:`pop` can give now: their windows lie inside the samples received."""
        reach = self.win_length - self.left_pad  # frame i reads samples < i * hop + reach
        if self._flushed or self._received < reach:
            return 0
        return (self._received - reach) // self.hop_length + 1 - self._next_frame

    def push(self, samples: torch.Tensor) -> None:
        """Append ``samples (S,)`` float, 16 kHz, ``[-1, 1]``; any length, 0 included."""
        if self._flushed:
            raise ValueError("LogMelStream.push after flush(); start a new stream.")
        if samples.dim() != 1:
            raise ValueError(
                f"LogMelStream.push expects mono samples of shape (S,), got {tuple(samples.shape)}."
            )
        samples = samples.to(device=self.device, dtype=torch.float32)
        self._samples = torch.cat((self._samples, samples))
        self._received += samples.numel()

    def pop(self, count: int) -> torch.Tensor:
        """The next ``count`` frames ``(count, F)`` (``count <= frames_ready``)."""
        if not 0 <= count <= self.frames_ready:
            raise ValueError(f"LogMelStream.pop({count}): only {self.frames_ready} frames ready.")
        return self._frames(self._next_frame + count, audio_length=None)

    def flush(self) -> torch.Tensor:
        """All remaining frames ``(T_rest, F)`` of the stream, its end now known."""
        if self._flushed:
            return torch.zeros(0, self.frontend.n_mels, device=self.device)
        self._flushed = True
        total = int(self.frontend.num_frames(torch.tensor(self._received)))
        return self._frames(total, audio_length=self._received)

    def _frames(self, stop: int, audio_length: int | None) -> torch.Tensor:
        """Frames ``_next_frame .. stop - 1``; ``audio_length`` given once the end is known."""
        first, hop = self._next_frame, self.hop_length
        count = stop - first
        if count <= 0:
            return torch.zeros(0, self.frontend.n_mels, device=self.device)
        # The filterbank frames a signal with its own start reflection, so it is given the
        # samples from one frame earlier and that first frame (and its trailing extra frame)
        # is dropped: every kept frame then reads only real or reflected-by-us samples.
        positions = torch.arange(
            hop * (first - 1),
            hop * (stop - 1) + self.win_length - self.left_pad,
            device=self.device,
        )
        index = torch.where(positions < 0, -1 - positions, positions)  # start reflection
        if audio_length is not None:  # end reflection, clamped like LogMelFrontend.forward
            reflected = (2 * audio_length - 1 - index).clamp(0, max(audio_length - 1, 0))
            index = torch.where(index >= audio_length, reflected, index)
        # Only the dropped frame may point outside the kept samples.
        index = index.clamp(self._offset, self._offset + self._samples.numel() - 1)
        signal = self._samples[index - self._offset]
        with torch.autocast(device_type=self.device.type, enabled=False):
            features = self._filterbank(signal)[1 : 1 + count]
        self._next_frame = stop
        keep_from = max(0, hop * stop - self.left_pad)
        if keep_from > self._offset:
            self._samples = self._samples[keep_from - self._offset :]
            self._offset = keep_from
        return features

    def _filterbank(self, signal: torch.Tensor) -> torch.Tensor:
        """``(S,)`` samples to the filterbank's ``(T, F)`` frames (its own framing)."""
        return self.frontend.fbank(signal.unsqueeze(0))[0]
