"""Worker side of the data pipeline: a batch of cuts -> loaded, noised, tokenized, padded.

``TransducerDataset`` runs in the data-loader workers: loads each cut's audio as 16 kHz mono
(``rnnt.data.audio``), tokenizes and checks the targets, adds background noise and channel
effects (training: reverb, gain and clipping, telephone line, ``rnnt.data.channels``), and
pads with ``collate``. Unreadable audio and invalid targets are skipped with a warning and a
running count: the training step's loss trusts the batches and checks nothing itself (its
checks would read device values on the host, a sync on a GPU).

Batches are dicts: ``audio`` (B, S) float32 at 16 kHz, ``audio_lengths`` (B,) int64 samples,
``targets`` (B, U) int64 padded with 0, ``target_lengths`` (B,) int64, ``texts`` list of B
normalised transcripts, ``ids`` list of B utterance ids (``"{manifest name}:{line}"``),
``counted`` (B,) bool: False for DDP stand-ins and sampler copies (see ``TransducerDataset``).
``host_audio_lengths``, ``host_target_lengths`` (lists of B ints) and ``host_counted`` (list of
B bools) repeat those values as Python objects: Lightning moves tensors to the device, never
lists, so the step reads them on the host without waiting for the device.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import re

import numpy as np
import torch
from lhotse import CutSet
from lhotse.cut import Cut
from torch.utils.data import Dataset

from rnnt.constants import BLANK_ID, DDP_PLACEHOLDER_SECONDS, MIN_AUDIO_DURATION_S, SAMPLE_RATE
from rnnt.data.audio import describe_error, load_mono
from rnnt.data.augment import BackgroundNoise
from rnnt.data.channels import ChannelAugment
from rnnt.data.cuts import cut_epoch
from rnnt.data.lazy_cuts import audio_path, is_deferred, resolve_cut
from rnnt.data.records import Unusable
from rnnt.data.tokenizer import Tokenizer

logger = logging.getLogger(__name__)
_SAMPLER_COPY = re.compile(r"_dup\d+$")  # lhotse.dataset.sampling.base.mark_as_duplicate


class TransducerDataset(Dataset):
    """Maps a ``CutSet`` (one batch chosen by the sampler) to a padded batch dict.

    Runs in data-loader workers. A cut whose audio cannot be loaded (missing, corrupt,
    truncated, non-finite samples) or that gives no feature frame, or whose token ids are not
    all in ``[0, V)`` and other than blank (``target_problem``), is skipped with a warning
    naming it and counted in ``num_skipped`` (shared by all workers). When every cut of a
    batch fails: with one process (``world_size == 1``) the result is ``None`` and ``SkippingDataLoader`` (``rnnt.data.loader``) moves on
    to the next batch; under DDP every rank must run the same number of steps (each step is
    a collective), so this worker's last good batch stands in (or, before it has one,
    ``DDP_PLACEHOLDER_SECONDS`` of silence), marked as not counted.

    ``counted`` (B,) bool marks the utterances that count: False for stand-ins and for the
    copies lhotse's sampler adds under DDP so that every rank gets a batch at the end of the
    data (ids ending in ``_dup<N>``). Validation and test score counted utterances only, so
    their figures are the same with any number of ranks; a step with nothing counted trains
    with a zero loss (its gradients are zero but still exchanged).

    ``noise`` and ``channels`` (training only) augment each waveform: reverb, then noise, then
    gain and clipping and the telephone line (``ChannelAugment``, with the epoch the sampler
    tagged on the cut, ``rnnt.data.cuts.tag_epoch``).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        noise: BackgroundNoise | None = None,
        channels: ChannelAugment | None = None,
        world_size: int = 1,
    ) -> None:
        self.tokenizer = tokenizer
        self.noise = noise
        self.channels = channels
        self.world_size = world_size
        self._skipped = multiprocessing.Value("q", 0)
        self._rng: np.random.Generator | None = None
        self._rng_pid = -1
        self._last_good: dict | None = None

    @property
    def num_skipped(self) -> int:
        """Utterances skipped so far (unreadable audio, invalid targets), over all workers."""
        return int(self._skipped.value) if self._skipped is not None else 0

    def _generator(self) -> np.random.Generator:
        # torch seeds each worker differently (base seed + worker id); follow it per process.
        if self._rng is None or self._rng_pid != os.getpid():
            self._rng = np.random.default_rng(torch.initial_seed())
            self._rng_pid = os.getpid()
        return self._rng

    def __getitem__(self, cuts: CutSet) -> dict | None:
        waveforms, token_ids, texts, ids = [], [], [], []
        for cut in cuts:
            try:
                waveform = load_mono(resolve_cut(cut) if is_deferred(cut) else cut)
            except Unusable as unusable:  # a lazily read line's file: missing, wrong duration
                self._count_skip(cut, unusable.why)
                continue
            except Exception as error:  # any decoder failure: one bad file must not stop a run
                why = f"{type(error).__name__}: {describe_error(error)}"
                self._count_skip(cut, f"cannot load audio {audio_path(cut)} ({why})")
                continue
            text = cut.supervisions[0].text
            tokens = self.tokenizer.encode(text)
            problem = target_problem(tokens, self.tokenizer.num_classes, waveform.numel())
            if problem is not None:
                self._count_skip(cut, problem)
                continue
            waveform = self._augment(waveform, cut)
            waveforms.append(waveform)
            token_ids.append(torch.tensor(tokens, dtype=torch.int64))
            texts.append(text)
            ids.append(cut.id)
        if not waveforms:
            return self._fallback(cuts)
        batch = collate(waveforms, token_ids, texts, ids)
        counted = [not is_sampler_copy(cut_id) for cut_id in ids]
        batch["counted"] = torch.tensor(counted)
        batch["host_counted"] = counted
        if self.world_size > 1:
            self._last_good = batch
        return batch

    def _augment(self, waveform: torch.Tensor, cut: Cut) -> torch.Tensor:
        add_noise = None
        if self.noise is not None:
            add_noise = functools.partial(self.noise, rng=self._generator())
        if self.channels is not None:
            return self.channels(waveform, cut.id, cut_epoch(cut), add_noise)
        return waveform if add_noise is None else add_noise(waveform)

    def _count_skip(self, cut: Cut, reason: str) -> None:
        total = 0
        if self._skipped is not None:
            with self._skipped.get_lock():
                self._skipped.value += 1
                total = self._skipped.value
        logger.warning("skipping utterance %s: %s; %d skipped so far", cut.id, reason, total)

    def _fallback(self, cuts: CutSet) -> dict | None:
        logger.warning("every utterance of a batch failed to load (%s)", ", ".join(cuts.ids))
        if self.world_size == 1:
            return None
        if self._last_good is None:
            silence = torch.zeros(round(DDP_PLACEHOLDER_SECONDS * SAMPLE_RATE))
            one_token = torch.ones(1, dtype=torch.int64)  # any non-blank id
            stand_in = collate([silence], [one_token], [""], ["<placeholder>"])
        else:
            stand_in = {
                key: value.clone() if isinstance(value, torch.Tensor) else list(value)
                for key, value in self._last_good.items()
            }
        stand_in["counted"] = torch.zeros(len(stand_in["texts"]), dtype=torch.bool)
        stand_in["host_counted"] = [False] * len(stand_in["texts"])
        return stand_in

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        # A shared counter may only travel to a process being started (the workers).
        if multiprocessing.context.get_spawning_popen() is None:
            state["_skipped"] = None
        return state


def collate(
    waveforms: list[torch.Tensor], token_ids: list[torch.Tensor], texts: list[str], ids: list[str]
) -> dict:
    """Pad B waveforms (S_b,) and B token sequences (U_b,) into the batch dict (zeros pad).

    The lengths come twice: as int64 tensors, which go to the device with the batch, and as
    lists of ints (``host_audio_lengths``, ``host_target_lengths``), which stay on the host.
    """
    audio_lengths = [w.numel() for w in waveforms]
    target_lengths = [t.numel() for t in token_ids]
    audio = torch.zeros(len(waveforms), max(audio_lengths), dtype=torch.float32)
    targets = torch.zeros(len(token_ids), max(target_lengths), dtype=torch.int64)
    for row, (waveform, tokens) in enumerate(zip(waveforms, token_ids, strict=True)):
        audio[row, : waveform.numel()] = waveform
        targets[row, : tokens.numel()] = tokens
    return {
        "audio": audio,
        "audio_lengths": torch.tensor(audio_lengths, dtype=torch.int64),
        "targets": targets,
        "target_lengths": torch.tensor(target_lengths, dtype=torch.int64),
        "texts": texts,
        "ids": ids,
        "host_audio_lengths": audio_lengths,
        "host_target_lengths": target_lengths,
    }


def target_problem(token_ids: list[int], num_classes: int, num_samples: int) -> str | None:
    """Why an utterance cannot be a training target, or None if it can.

    The transducer loss needs every token id in ``[0, V)`` and other than blank, and at least
    one encoder frame: audio of ``MIN_AUDIO_DURATION_S`` or more. A mismatched tokenizer or a
    corrupt piece gives the first; audio shortened by speed perturbation, the second.
    """
    for position, token in enumerate(token_ids):
        if token == BLANK_ID or not 0 <= token < num_classes:
            return (
                f"target token id {token} at position {position} must be in [0, V={num_classes}) "
                f"and not blank ({BLANK_ID}); is the tokenizer the model's?"
            )
    if num_samples < MIN_AUDIO_DURATION_S * SAMPLE_RATE:
        return (
            f"{num_samples} samples of audio is shorter than {MIN_AUDIO_DURATION_S:g} s "
            "(not one feature frame)"
        )
    return None


def is_sampler_copy(cut_id: str) -> bool:
    """True for a copy lhotse's sampler made to give every DDP rank a batch at the end.

    lhotse appends ``_dup<N>`` to the id of such a copy; our ids end in the manifest line
    number (``name:line``), so no original id has that ending.
    """
    return _SAMPLER_COPY.search(cut_id) is not None
