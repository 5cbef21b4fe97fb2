"""Exact RNN-T loss on given joiner logits (torchaudio's contract), with its autograd.

``rnnt_loss`` takes the full (B, T, U+1, V) logits, log-softmax inside, and runs the shared
lattice forward-backward (``rnnt.loss.lattice``) in float32 (float64 for float64 logits),
also under autocast. Its backward forms the gradient with respect to the logits directly,

    d loss / d logits = g_blank * onehot(blank) + g_y * onehot(y) - (g_blank + g_y) * softmax

from the lattice gradients, saving only the logits (an input) and (B, T, U+1) tensors.
"""

from __future__ import annotations

import torch

from rnnt.constants import BLANK_ID
from rnnt.loss.checks import _check_float, _check_lattice_args
from rnnt.loss.lattice import _add_at, _compute_dtype, _lattice_loss, _no_autocast, _reduce


class _RNNTLossFunction(torch.autograd.Function):
    """Per-utterance loss from full logits; saves the logits (an input) and small tensors."""

    @staticmethod
    def forward(ctx, logits, targets, frame_lengths, target_lengths, blank):
        dtype = _compute_dtype(logits)
        with _no_autocast(logits.device):
            scores = logits.to(dtype)
            log_norm = torch.logsumexp(scores, dim=-1)  # (B, T, U+1)
            index = targets[:, None, :, None].expand(*scores.shape[:3], 1)
            lp_target = scores.gather(-1, index).squeeze(-1) - log_norm
            lp_blank = scores[..., blank] - log_norm
            loss, grad_blank, grad_target = _lattice_loss(
                lp_blank, lp_target, frame_lengths, target_lengths
            )
        ctx.save_for_backward(logits, log_norm, grad_blank, grad_target, index)
        ctx.blank = blank
        return loss.to(dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        logits, log_norm, grad_blank, grad_target, index = ctx.saved_tensors
        dtype = log_norm.dtype
        with _no_autocast(logits.device):
            scale = grad_loss.view(-1, 1, 1).to(grad_blank.dtype)
            g_blank = (grad_blank * scale).to(dtype)
            g_target = (grad_target * scale).to(dtype)
            grad = torch.sub(logits.to(dtype), log_norm.unsqueeze(-1)).exp_()  # softmax
            grad.mul_((g_blank + g_target).neg_().unsqueeze(-1))
            grad[..., ctx.blank] += g_blank
            _add_at(grad.view(-1, grad.size(-1)), index.reshape(-1), g_target.reshape(-1))
        return grad.to(logits.dtype), None, None, None, None


def rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = BLANK_ID,
    reduction: str = "mean",
    validate: bool = True,
) -> torch.Tensor:
    """Exact RNN-T loss (negative log-likelihood) on unnormalised joiner logits.

    Same contract as ``torchaudio.functional.rnnt_loss`` (with ``clamp=-1``):

    Args:
        logits: (B, T, U+1, V) joiner outputs; log-softmax is taken inside, in float32
            (float64 for float64 logits) whatever the autocast state. Padding must be finite.
        targets: (B, U) integer token ids (never blank); positions >= target_lengths ignored.
        logit_lengths: (B,) valid frames per utterance, in [1, T].
        target_lengths: (B,) valid tokens per utterance, in [0, U].
        blank: index of the blank class.
        reduction: "mean" (over utterances), "sum" or "none" ((B,) losses).
        validate: check the values of the lengths and targets (a host read: a GPU sync).

    Returns:
        The loss in float32 (float64 for float64 logits); gradients flow to ``logits`` only,
        in its dtype, and are exactly zero on padding.
    """
    fn = "rnnt_loss"
    _check_float(fn, "logits", logits, 4)
    batch, frames, columns, num_classes = logits.shape
    targets, logit_lengths, target_lengths = _check_lattice_args(
        fn, "logit_lengths", batch, frames, columns - 1, num_classes, targets,
        logit_lengths, target_lengths, blank, reduction, logits.device, validate,
    )  # fmt: skip
    losses = _RNNTLossFunction.apply(logits, targets, logit_lengths, target_lengths, blank)
    return _reduce(losses, reduction)
