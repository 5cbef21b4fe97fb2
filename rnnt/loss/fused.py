"""Exact RNN-T loss fused with the joiner: the (B, T, U+1, V) logits never exist at once.

The transducer loss sums over every alignment of U tokens to T encoder frames. The joiner
scores each lattice cell (t, u) over the whole vocabulary, so a batch's logits are
B x T x (U+1) x V floats: 8 x 200 x 61 x 1024 is 400 MB in float32, before the softmax
and its gradient double it. That tensor, not the encoder, is the memory wall of transducer
training.

``fused_rnnt_loss`` never holds it. Its forward walks the *valid* cells of each utterance
(padding is skipped) in chunks of ``chunk_size`` cells, computes the joiner logits of a
chunk, and keeps only three numbers per cell: the log-softmax normaliser and the log-probs
of blank and of the next target. The lattice forward-backward (``rnnt.loss.lattice``) then
gives the loss and the gradient of the loss with respect to those log-probs, which are all
the backward needs: it recomputes each chunk's logits and forms

    d loss / d logits = g_blank * onehot(blank) + g_y * onehot(y) - (g_blank + g_y) * softmax

and pushes it through the output layer and the activation by hand. Peak memory is one chunk
of logits; the price is one extra matrix product per cell. It runs in float32 (float64 for
float64 inputs), also under autocast, and equals ``rnnt_loss`` on the joiner's full logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rnnt.constants import BLANK_ID, JOINER_ACTIVATION, LOSS_CHUNK_SIZE, LOSS_REDUCTION
from rnnt.loss.checks import _check_float, _check_lattice_args
from rnnt.loss.lattice import _add_at, _compute_dtype, _lattice_loss, _no_autocast, _reduce

ACTIVATIONS = ("tanh", "relu", "silu")


def _blocks(
    frame_lengths: list[int], target_lengths: list[int], chunk_size: int
) -> list[tuple[int, int, int, int, int]]:
    """Rectangles (b, t0, t1, u0, u1) covering each utterance's valid T_b x (U_b+1) cells,
    about ``chunk_size`` cells each: whole rows where a row fits, else pieces of one row."""
    blocks = []
    for b, (n_frames, n_tokens) in enumerate(zip(frame_lengths, target_lengths, strict=True)):
        width = n_tokens + 1
        if chunk_size >= width:
            rows = chunk_size // width
            blocks += [(b, t, min(t + rows, n_frames), 0, width) for t in range(0, n_frames, rows)]
        else:
            blocks += [
                (b, t, t + 1, u, min(u + chunk_size, width))
                for t in range(n_frames)
                for u in range(0, width, chunk_size)
            ]
    return blocks


def _joiner_block(enc, pred, weight, bias, block, activation):
    """Pre-activation (t, u, H), hidden (t*u, H) and logits (t*u, V) of one block of cells."""
    b, t0, t1, u0, u1 = block
    pre = enc[b, t0:t1, None, :] + pred[b, None, u0:u1, :]
    if activation == "tanh":
        hidden = torch.tanh(pre)
    elif activation == "relu":
        hidden = torch.relu(pre)
    else:
        hidden = F.silu(pre)
    hidden = hidden.reshape(-1, pre.size(-1))
    logits = hidden @ weight.t() if bias is None else torch.addmm(bias, hidden, weight.t())
    return pre, hidden, logits


def _activation_grad(activation: str, pre: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """d act(pre) / d pre, shaped like ``hidden``."""
    if activation == "tanh":
        return 1.0 - hidden * hidden
    pre = pre.reshape(hidden.shape)
    if activation == "relu":
        return (pre > 0).to(hidden.dtype)
    sig = torch.sigmoid(pre)
    return sig * (1.0 + pre * (1.0 - sig))


class _FusedRNNTLossFunction(torch.autograd.Function):
    """Per-utterance loss from the joiner's inputs; never holds more than one block's logits."""

    @staticmethod
    def forward(ctx, enc, pred, weight, bias, targets, frame_lengths, target_lengths, options):
        blank, activation, chunk_size = options
        dtype = _compute_dtype(enc, pred, weight, bias)
        with _no_autocast(enc.device):
            enc_c, pred_c, weight_c = enc.to(dtype), pred.to(dtype), weight.to(dtype)
            bias_c = None if bias is None else bias.to(dtype)
            batch, frames, columns = enc.size(0), enc.size(1), pred.size(1)
            log_norm = torch.zeros(batch, frames, columns, dtype=dtype, device=enc.device)
            lp_blank = torch.zeros_like(log_norm)
            lp_target = torch.zeros_like(log_norm)
            blocks = _blocks(frame_lengths.tolist(), target_lengths.tolist(), chunk_size)
            for block in blocks:
                b, t0, t1, u0, u1 = block
                _, _, logits = _joiner_block(enc_c, pred_c, weight_c, bias_c, block, activation)
                index = targets[b, None, u0:u1].expand(t1 - t0, u1 - u0).reshape(-1, 1)
                blank_logit = logits[:, blank].clone()
                target_logit = logits.gather(1, index).squeeze(1)
                # logsumexp in place over the block's logits: no second (cells x V) buffer
                peak = logits.amax(dim=1, keepdim=True)
                norm = logits.sub_(peak).exp_().sum(dim=1).log_().add_(peak.squeeze(1))
                shape = (t1 - t0, u1 - u0)
                log_norm[b, t0:t1, u0:u1] = norm.view(shape)
                lp_blank[b, t0:t1, u0:u1] = (blank_logit - norm).view(shape)
                lp_target[b, t0:t1, u0:u1] = (target_logit - norm).view(shape)
            loss, grad_blank, grad_target = _lattice_loss(
                lp_blank, lp_target, frame_lengths, target_lengths
            )
        ctx.save_for_backward(enc, pred, weight, bias, targets, log_norm, grad_blank, grad_target)
        ctx.blocks, ctx.blank, ctx.activation = blocks, blank, activation
        return loss.to(dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        enc, pred, weight, bias, targets, log_norm, grad_blank, grad_target = ctx.saved_tensors
        need_enc, need_pred, need_weight, need_bias = ctx.needs_input_grad[:4]
        dtype = log_norm.dtype
        with _no_autocast(enc.device):
            enc_c, pred_c, weight_c = enc.to(dtype), pred.to(dtype), weight.to(dtype)
            bias_c = None if bias is None else bias.to(dtype)
            scale = grad_loss.view(-1, 1, 1).to(grad_blank.dtype)
            g_blank_all = (grad_blank * scale).to(dtype)
            g_target_all = (grad_target * scale).to(dtype)
            grad_enc = torch.zeros_like(enc_c) if need_enc else None
            grad_pred = torch.zeros_like(pred_c) if need_pred else None
            grad_weight = torch.zeros_like(weight_c) if need_weight else None
            grad_bias = torch.zeros_like(bias_c) if need_bias else None
            for block in ctx.blocks:
                b, t0, t1, u0, u1 = block
                pre, hidden, logits = _joiner_block(
                    enc_c, pred_c, weight_c, bias_c, block, ctx.activation
                )
                g_blank = g_blank_all[b, t0:t1, u0:u1].reshape(-1, 1)
                g_target = g_target_all[b, t0:t1, u0:u1].reshape(-1, 1)
                index = targets[b, None, u0:u1].expand(t1 - t0, u1 - u0).reshape(-1, 1)
                # d loss / d logits, built in place over the recomputed logits
                grad_logits = logits.sub_(log_norm[b, t0:t1, u0:u1].reshape(-1, 1)).exp_()
                grad_logits.mul_((g_blank + g_target).neg_())
                grad_logits[:, ctx.blank : ctx.blank + 1] += g_blank
                _add_at(grad_logits, index.view(-1), g_target.view(-1))
                if need_weight:
                    grad_weight.addmm_(grad_logits.t(), hidden)
                if need_bias:
                    grad_bias += grad_logits.sum(0)
                if need_enc or need_pred:
                    grad_pre = grad_logits @ weight_c
                    grad_pre.mul_(_activation_grad(ctx.activation, pre, hidden))
                    grad_pre = grad_pre.view(pre.shape)
                    if need_enc:
                        grad_enc[b, t0:t1] += grad_pre.sum(1)
                    if need_pred:
                        grad_pred[b, u0:u1] += grad_pre.sum(0)
        grads = [
            None if grad is None else grad.to(x.dtype)
            for grad, x in zip(
                (grad_enc, grad_pred, grad_weight, grad_bias),
                (enc, pred, weight, bias),
                strict=True,
            )
        ]
        return (*grads, None, None, None, None)


def fused_rnnt_loss(
    encoder_proj: torch.Tensor,
    predictor_proj: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    encoder_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = BLANK_ID,
    activation: str = JOINER_ACTIVATION,
    reduction: str = LOSS_REDUCTION,
    chunk_size: int = LOSS_CHUNK_SIZE,
) -> torch.Tensor:
    """Exact RNN-T loss of the joiner ``act(enc[b, t] + pred[b, u]) @ weight.T + bias``,
    without ever materialising the (B, T, U+1, V) logits.

    Args:
        encoder_proj: (B, T, H) encoder output after the joiner's encoder projection.
        predictor_proj: (B, U+1, H) prediction-network output after its projection
            (position 0 is the start-of-sequence state).
        weight: (V, H) output layer weight, V classes including blank.
        bias: (V,) output layer bias, or None.
        targets: (B, U) integer token ids (never blank); positions >= target_lengths ignored.
        encoder_lengths: (B,) valid frames per utterance, in [1, T].
        target_lengths: (B,) valid tokens per utterance, in [0, U].
        blank: index of the blank class.
        activation: joiner activation, "tanh", "relu" or "silu".
        reduction: "mean" (over utterances), "sum" or "none" ((B,) losses).
        chunk_size: lattice cells whose logits (chunk_size x V) are computed at once.

    Returns:
        The loss in float32 (float64 if an input is float64), also under autocast; equal to
        ``rnnt_loss`` on the joiner's full logits. Gradients flow to all four float inputs,
        in their dtypes; padding frames and tokens get exactly zero gradient.
    """
    fn = "fused_rnnt_loss"
    _check_float(fn, "encoder_proj", encoder_proj, 3)
    _check_float(fn, "predictor_proj", predictor_proj, 3)
    _check_float(fn, "weight", weight, 2)
    if bias is not None:
        _check_float(fn, "bias", bias, 1)
    batch, frames, dim = encoder_proj.shape
    num_classes = weight.size(0)
    if predictor_proj.size(0) != batch or predictor_proj.size(2) != dim:
        raise ValueError(
            f"{fn}: predictor_proj has shape {tuple(predictor_proj.shape)}; expected "
            f"(B={batch}, U+1, H={dim}) to match encoder_proj {tuple(encoder_proj.shape)}"
        )
    if weight.size(1) != dim:
        raise ValueError(f"{fn}: weight has shape {tuple(weight.shape)}; expected (V, H={dim})")
    if bias is not None and bias.shape != (num_classes,):
        raise ValueError(f"{fn}: bias has shape {tuple(bias.shape)}; expected (V={num_classes},)")
    if activation not in ACTIVATIONS:
        raise ValueError(f"{fn}: activation={activation!r}; use one of {ACTIVATIONS}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{fn}: chunk_size={chunk_size!r} must be a positive int (cells)")
    targets, encoder_lengths, target_lengths = _check_lattice_args(
        fn, "encoder_lengths", batch, frames, predictor_proj.size(1) - 1, num_classes, targets,
        encoder_lengths, target_lengths, blank, reduction, encoder_proj.device,
    )  # fmt: skip
    losses = _FusedRNNTLossFunction.apply(
        encoder_proj, predictor_proj, weight, bias, targets, encoder_lengths, target_lengths,
        (blank, activation, chunk_size),
    )  # fmt: skip
    return _reduce(losses, reduction)
