"""Log-mel front end and SpecAugment, computed on the device inside the model.

The features are Kaldi ``fbank`` features (povey window, pre-emphasis 0.97, DC-offset removal,
power spectrum, ``snip_edges=False``, no dither, log floored at float epsilon), computed by
lhotse's torch implementation. These are the settings of kaldi-native-fbank, so an exported
model fed by sherpa-onnx sees the same features it was trained on. Waveforms are float in
``[-1, 1]`` (not scaled to 16-bit integers).
"""

from __future__ import annotations

import torch
from lhotse.features.kaldi.layers import Wav2LogFilterBank
from torch import nn

from rnnt.constants import (
    DITHER,
    FEATURE_NORM_EPS,
    FEATURE_NORM_MOMENTUM,
    FREQ_MASK_WIDTH,
    FREQ_MASKS,
    HOP_LENGTH_S,
    MEL_HIGH_FREQ_HZ,
    MEL_LOW_FREQ_HZ,
    N_MELS,
    SAMPLE_RATE,
    TIME_MASK_RATIO,
    TIME_MASKS_MAX,
    TIME_MASKS_PER_SECOND,
    WIN_LENGTH_S,
)
from rnnt.models.masks import padding_mask


class LogMelFrontend(nn.Module):
    """Padded 16 kHz waveforms to log-mel frames, batched and padding-invariant.

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
        low_freq_hz: float = MEL_LOW_FREQ_HZ,
        high_freq_hz: float = MEL_HIGH_FREQ_HZ,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.win_length = int(win_length_s * sample_rate)
        self.hop_length = int(hop_length_s * sample_rate)
        self.fbank = Wav2LogFilterBank(
            sampling_rate=sample_rate,
            frame_length=win_length_s,
            frame_shift=hop_length_s,
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

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Frames of an unpadded utterance of ``num_samples`` samples (Kaldi, snip_edges=False)."""
        return torch.div(num_samples + self.hop_length // 2, self.hop_length, rounding_mode="floor")

    def forward(
        self, audio: torch.Tensor, audio_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel features of a padded batch.

        Args:
            audio: ``(B, S)`` waveforms at ``sample_rate`` Hz, float in ``[-1, 1]``, padded.
            audio_lengths: ``(B,)`` valid samples of each waveform.

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


class FeatureNormalizer(nn.Module):
    """Global mean and variance normalisation of log-mel bins, estimated while training.

    Raw log-mel values sit far from zero (about -8 ± 5 for speech at ordinary levels), which
    slows the first layers' learning; per-utterance normalisation would need the whole
    utterance, which streaming does not have. So each bin is normalised with running
    statistics of the training set (a global CMVN learned online, like a batch norm without
    affine that never uses batch statistics directly): updated from the valid frames of each
    training batch, frozen in eval mode, saved with the weights. Being a per-frame affine
    map, it keeps features padding-invariant and streaming-friendly.
    """

    def __init__(self, n_mels: int = N_MELS, momentum: float = FEATURE_NORM_MOMENTUM) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("var", torch.ones(n_mels))
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _update(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> None:
        valid = padding_mask(feature_lengths, features.size(1)).unsqueeze(-1)
        count = valid.sum().clamp(min=1)
        mean = (features * valid).sum(dim=(0, 1)) / count
        var = (((features - mean) ** 2) * valid).sum(dim=(0, 1)) / count
        # A cumulative average at first, so early batches are not dominated by the zero init.
        weight = max(self.momentum, 1.0 / float(self.batches_seen + 1))
        self.mean.lerp_(mean, weight)
        self.var.lerp_(var, weight)
        self.batches_seen += 1

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, F)`` log-mel frames to normalised frames; 0 stays 0 past each length."""
        if self.training:
            self._update(features.float(), feature_lengths)
        normalised = (features - self.mean) * torch.rsqrt(self.var + FEATURE_NORM_EPS)
        valid = padding_mask(feature_lengths, features.size(1)).unsqueeze(-1)
        return normalised.masked_fill(~valid, 0.0)


class SpecAugment(nn.Module):
    """Frequency and time masking of log-mel features, in training mode only.

    Each utterance gets ``freq_masks`` bands of up to ``freq_mask_width`` bins and
    ``min(time_masks_max, floor(time_masks_per_second * seconds))`` time spans of up to
    ``time_mask_ratio`` of its own frames; masked values are set to the utterance's mean
    feature value. All masks of the batch are drawn at once (no loop over utterances).
    """

    def __init__(
        self,
        freq_masks: int = FREQ_MASKS,
        freq_mask_width: int = FREQ_MASK_WIDTH,
        time_masks_max: int = TIME_MASKS_MAX,
        time_mask_ratio: float = TIME_MASK_RATIO,
        time_masks_per_second: float = TIME_MASKS_PER_SECOND,
        hop_length_s: float = HOP_LENGTH_S,
    ) -> None:
        super().__init__()
        self.freq_masks = freq_masks
        self.freq_mask_width = freq_mask_width
        self.time_masks_max = time_masks_max
        self.time_mask_ratio = time_mask_ratio
        self.time_masks_per_second = time_masks_per_second
        self.hop_length_s = hop_length_s

    @staticmethod
    def _spans(
        extent: torch.Tensor,
        max_width: torch.Tensor,
        count: torch.Tensor,
        max_count: int,
        size: int,
    ) -> torch.Tensor:
        """``(B, size)`` bool: the union of ``count[b]`` random spans of row ``b``, each of
        width uniform in ``[0, max_width[b]]`` and lying inside ``[0, extent[b])``.

        ``max_count`` spans are drawn for every row and those past the row's own count are
        given width 0, so that the whole batch is drawn at once.
        """
        batch = extent.size(0)
        device = extent.device
        if max_count <= 0 or size == 0:
            return torch.zeros(batch, size, dtype=torch.bool, device=device)
        draw = torch.rand(batch, max_count, 2, device=device)
        width = (draw[..., 0] * (max_width.unsqueeze(1) + 1)).long()
        width = torch.minimum(width, extent.unsqueeze(1))
        width = width * (torch.arange(max_count, device=device) < count.unsqueeze(1))
        start = (draw[..., 1] * (extent.unsqueeze(1) - width + 1)).long()
        axis = torch.arange(size, device=device).view(1, 1, size)
        inside = (axis >= start.unsqueeze(-1)) & (axis < (start + width).unsqueeze(-1))
        return inside.any(dim=1)

    def masks(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, F)`` bool, True where a value is masked (never on padded frames)."""
        batch, num_frames, num_bins = features.shape
        device = features.device
        lengths = feature_lengths.to(device=device, dtype=torch.long)
        bins = torch.full((batch,), num_bins, device=device, dtype=torch.long)
        freq = self._spans(
            extent=bins,
            max_width=torch.full_like(bins, self.freq_mask_width),
            count=torch.full_like(bins, self.freq_masks),
            max_count=self.freq_masks,
            size=num_bins,
        )
        seconds = lengths.float() * self.hop_length_s
        time_count = (seconds * self.time_masks_per_second).floor().long()
        time = self._spans(
            extent=lengths,
            max_width=(lengths.float() * self.time_mask_ratio).floor().long(),
            count=time_count.clamp(max=self.time_masks_max),
            max_count=self.time_masks_max,
            size=num_frames,
        )
        valid = padding_mask(lengths.to(device), num_frames)
        return (freq.unsqueeze(1) | time.unsqueeze(2)) & valid.unsqueeze(2)

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> torch.Tensor:
        """Masked copy of ``features (B, T, F)`` in training mode; ``features`` itself in eval.

        Args:
            features: ``(B, T, F)`` log-mel frames, padded.
            feature_lengths: ``(B,)`` valid frames.
        """
        if not self.training:
            return features
        masked = self.masks(features, feature_lengths)
        valid = padding_mask(feature_lengths.to(features.device), features.size(1)).unsqueeze(-1)
        count = (feature_lengths.to(features.device).clamp(min=1) * features.size(2)).view(-1, 1, 1)
        mean = (features * valid).sum(dim=(1, 2), keepdim=True) / count
        return torch.where(masked, mean.to(features.dtype), features)
