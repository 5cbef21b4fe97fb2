"""Exact RNN-T loss fused with the joiner: the (B, T, U+1, V) logits never exist at once.

The transducer loss sums over every alignment of U tokens to T encoder frames. The joiner
scores each lattice cell (t, u) over the whole vocabulary, so a batch's logits are
B x T x (U+1) x V floats: 8 x 200 x 61 x 1024 is 400 MB in float32, before the softmax
and its gradient double it. That tensor, not the encoder, is the memory wall of transducer
training.

``fused_rnnt_loss`` never holds it. Its forward walks the batch's lattice in chunks of
B x Tc x (U+1) cells, Tc frames chosen so that a chunk fits a memory budget in bytes
(``chunk_frames``), computes the joiner logits of a chunk, and keeps three numbers per cell:
the log-softmax normaliser and the logits of blank and of the next target. A chunk spans the
whole batch, so the ops per call grow with T / Tc, never with the number of utterances (18 a
chunk, against 47 per utterance piece before). The lattice forward-backward
(``rnnt.loss.lattice``) then gives the loss and the gradient with respect to the log-probs,
which is all the backward needs: it recomputes each chunk's logits and forms

    d loss / d logits = g_blank * onehot(blank) + g_y * onehot(y) - (g_blank + g_y) * softmax

and pushes it through the output layer and the activation by hand. Padding cells cost their
arithmetic but get exactly zero gradient. Peak memory is one chunk; the price is one extra
matrix product per cell.

Dtypes: the joiner's matrix products run in autocast's dtype where autocast is on (bf16 on a
GPU under ``bf16-mixed``), everything else (log-sum-exp, lattice, gradient sums) in float32,
or float64 for float64 inputs (gradcheck). The loss equals ``rnnt_loss`` on the joiner's full
logits to float tolerance, and is within 1e-3 (loss) and 1e-2 (gradients, relative) of its
float32 value under bf16 autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rnnt.constants import (
    BLANK_ID,
    JOINER_ACTIVATION,
    LOSS_CHUNK_BYTES_CPU,
    LOSS_CHUNK_BYTES_GPU,
    LOSS_REDUCTION,
)
from rnnt.loss.checks import _check_float, _check_lattice_args
from rnnt.loss.lattice import (
    _autocast_available,
    _compute_dtype,
    _lattice_loss,
    _no_autocast,
    _reduce,
)

ACTIVATIONS = ("tanh", "relu", "silu")
aten = torch.ops.aten


def default_chunk_bytes(device: torch.device) -> int:
    """The fused loss's chunk budget on ``device``: small on a CPU, larger on accelerators."""
    return LOSS_CHUNK_BYTES_CPU if device.type == "cpu" else LOSS_CHUNK_BYTES_GPU


def chunk_frames(
    batch: int, frames: int, columns: int, num_classes: int, dim: int,
    chunk_bytes: int, matmul_dtype: torch.dtype, dtype: torch.dtype,
) -> int:  # fmt: skip
    """Frames Tc of a chunk of B x Tc x (U+1) lattice cells that fits in ``chunk_bytes``.

    A cell holds V logits in the matmul dtype, their copy in the loss dtype where the two
    differ (bf16 under autocast), the log-sum-exp's V-wide temporary, and the joiner's
    hidden vector and its gradient (2 x H in the matmul dtype).
    """
    mm_bytes = torch.empty((), dtype=matmul_dtype).element_size()
    loss_bytes = torch.empty((), dtype=dtype).element_size()
    logits = mm_bytes + (loss_bytes if matmul_dtype != dtype else 0) + loss_bytes
    cell_bytes = num_classes * logits + 2 * dim * mm_bytes
    return max(1, min(frames, chunk_bytes // max(1, batch * columns * cell_bytes)))


def _hidden(enc, pred, t0, t1, activation):
    """Pre-activation and hidden (cells, H) of frames [t0, t1) for every (b, u): the cells in
    (b, t, u) order. For tanh and relu the pre-activation is not kept (None)."""
    pre = (enc[:, t0:t1, None, :] + pred[:, None, :, :]).view(-1, enc.size(-1))
    if activation == "tanh":
        return None, pre.tanh_()
    if activation == "relu":
        return None, pre.relu_()
    return pre, F.silu(pre)


def _hidden_grad(activation, grad_hidden, pre, hidden):
    """d loss / d pre from d loss / d hidden: one fused op per activation."""
    if activation == "tanh":
        return aten.tanh_backward(grad_hidden, hidden)
    if activation == "relu":
        return aten.threshold_backward(grad_hidden, hidden, 0)
    return aten.silu_backward(grad_hidden, pre)


def _logits(hidden, weight, bias):
    return hidden @ weight.t() if bias is None else torch.addmm(bias, hidden, weight.t())


def _cast(x: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return x if x is None or x.dtype == dtype else x.to(dtype)


def _chunk_major(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """(B, T, U+1, k) to (T/Tc, B, Tc, U+1, k), zero-padded to whole chunks, contiguous:
    chunk n's cells in the (b, t, u) order of its logits, a view of one slice."""
    batch, frames = x.shape[:2]
    count = -(-frames // chunk)
    x = F.pad(x, (0, 0, 0, 0, 0, count * chunk - frames))
    return x.view(batch, count, chunk, *x.shape[2:]).transpose(0, 1).contiguous()


class _FusedRNNTLossFunction(torch.autograd.Function):
    """Per-utterance loss from the joiner's inputs, computed B x Tc x (U+1) cells at a time:
    the number of ops per call grows with T / Tc, not with the number of utterances."""

    @staticmethod
    def forward(ctx, enc, pred, weight, bias, targets, frame_lengths, target_lengths, options):
        blank, activation, chunk, matmul_dtype, dtype = options
        with _no_autocast(enc.device):
            enc_m, pred_m = _cast(enc, matmul_dtype), _cast(pred, matmul_dtype)
            weight_m, bias_m = _cast(weight, matmul_dtype), _cast(bias, matmul_dtype)
            batch, frames, columns = enc.size(0), enc.size(1), pred.size(1)
            # (blank, next target) class of every cell of a chunk, (B, Tc, U+1, 2)
            index = torch.stack([torch.full_like(targets, blank), targets], dim=-1)
            index = index[:, None].expand(batch, chunk, columns, 2).contiguous()
            norms, picked = [], []
            for t0 in range(0, frames, chunk):
                t1 = min(t0 + chunk, frames)
                _, hidden = _hidden(enc_m, pred_m, t0, t1, activation)
                logits = _cast(_logits(hidden, weight_m, bias_m), dtype)
                shape = (batch, t1 - t0, columns, -1)
                norms.append(torch.logsumexp(logits, dim=1).view(shape))
                picked.append(logits.gather(1, index[:, : t1 - t0].reshape(-1, 2)).view(shape))
            # (B, T, U+1, 3): the normaliser and the logits of blank and of the next target
            per_cell = torch.cat([_cat(norms, dim=1), _cat(picked, dim=1)], dim=-1)
            log_probs = per_cell[..., 1:] - per_cell[..., :1]
            loss, grad_blank, grad_target = _lattice_loss(
                log_probs[..., 0], log_probs[..., 1], frame_lengths, target_lengths
            )
        ctx.save_for_backward(enc, pred, weight, bias, index, per_cell, grad_blank, grad_target)
        ctx.options = options
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        enc, pred, weight, bias, index, per_cell, grad_blank, grad_target = ctx.saved_tensors
        _, activation, chunk, matmul_dtype, _ = ctx.options
        need_enc, need_pred, need_weight, need_bias = ctx.needs_input_grad[:4]
        dtype = per_cell.dtype
        with _no_autocast(enc.device):
            enc_m, pred_m = _cast(enc, matmul_dtype), _cast(pred, matmul_dtype)
            weight_m, bias_m = _cast(weight, matmul_dtype), _cast(bias, matmul_dtype)
            batch, frames, columns = enc.size(0), enc.size(1), pred.size(1)
            # d loss / d logits = sparse at (blank, y) + dense * softmax, with
            # dense = -(g_blank + g_target); per cell: [log_norm, dense, g_blank, g_target]
            sparse = torch.stack([grad_blank, grad_target], dim=-1)
            sparse = sparse * grad_loss.view(-1, 1, 1, 1)
            dense = sparse.sum(-1, keepdim=True).neg_()
            cells = _chunk_major(torch.cat([per_cell[..., :1], dense, sparse], dim=-1), chunk)
            grad_weight = torch.zeros_like(weight, dtype=dtype) if need_weight else None
            grad_bias = torch.zeros_like(bias, dtype=dtype) if need_bias else None
            ones = enc.new_ones(batch * chunk * columns, dtype=dtype) if need_bias else None
            grad_pred = torch.zeros_like(pred, dtype=dtype) if need_pred else None
            # grad_pred[b] += ones(Tc) @ grad_pre[b]: the sum over frames, accumulated in place
            frame_ones = enc.new_ones(batch, 1, chunk, dtype=matmul_dtype)
            enc_parts = []
            for n, t0 in enumerate(range(0, frames, chunk)):
                t1 = min(t0 + chunk, frames)
                pre, hidden = _hidden(enc_m, pred_m, t0, t1, activation)
                chunk_cells = cells[n, :, : t1 - t0].reshape(-1, 4)
                grad = _cast(_logits(hidden, weight_m, bias_m), dtype)  # new buffer in bf16
                grad.sub_(chunk_cells[:, :1]).exp_().mul_(chunk_cells[:, 1:2])
                grad.scatter_add_(1, index[:, : t1 - t0].reshape(-1, 2), chunk_cells[:, 2:])
                grad_m = _cast(grad, matmul_dtype)
                if need_weight:
                    if matmul_dtype == dtype:
                        grad_weight.addmm_(grad.t(), hidden)
                    else:  # each chunk's product in bf16, their sum in float32
                        grad_weight += grad_m.t() @ hidden
                if need_bias:
                    grad_bias.addmv_(grad.t(), ones[: grad.size(0)])
                if need_enc or need_pred:
                    grad_pre = _hidden_grad(activation, grad_m @ weight_m, pre, hidden)
                    grad_pre = grad_pre.view(batch, t1 - t0, columns, -1)
                    if need_enc:
                        enc_parts.append(grad_pre.sum(2, dtype=dtype))
                    if need_pred and matmul_dtype == dtype:
                        grad_pred.view(batch, 1, -1).baddbmm_(
                            frame_ones[..., : t1 - t0], grad_pre.view(batch, t1 - t0, -1)
                        )
                    elif need_pred:  # a bf16 chunk, summed in float32
                        grad_pred += grad_pre.sum(1, dtype=dtype)
            grad_enc = _cat(enc_parts, dim=1) if need_enc else None
        grads = [
            None if grad is None else _cast(grad, x.dtype)
            for grad, x in zip(
                (grad_enc, grad_pred, grad_weight, grad_bias),
                (enc, pred, weight, bias),
                strict=True,
            )
        ]
        return (*grads, None, None, None, None)


def _cat(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def _matmul_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The joiner matmuls' dtype: autocast's (bf16 on a GPU) where it is on, else ``dtype``."""
    if dtype == torch.float64 or not _autocast_available(device):
        return dtype
    enabled = torch.is_autocast_enabled(device.type)
    return torch.get_autocast_dtype(device.type) if enabled else dtype


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
    chunk_bytes: int | None = None,
    validate: bool = True,
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
        chunk_bytes: memory budget of one chunk of B x Tc x (U+1) cells, bytes; Tc is the
            most frames that fit (at least 1; see ``chunk_frames``). None: the device's
            default (``default_chunk_bytes``).
        validate: check the values of the lengths and targets (they are read on the host:
            a sync on a GPU); a training step's batches were checked by the dataset.

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
    if chunk_bytes is None:
        chunk_bytes = default_chunk_bytes(encoder_proj.device)
    if not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise ValueError(f"{fn}: chunk_bytes={chunk_bytes!r} must be a positive int (bytes)")
    targets, encoder_lengths, target_lengths = _check_lattice_args(
        fn, "encoder_lengths", batch, frames, predictor_proj.size(1) - 1, num_classes, targets,
        encoder_lengths, target_lengths, blank, reduction, encoder_proj.device, validate,
    )  # fmt: skip
    dtype = _compute_dtype(encoder_proj, predictor_proj, weight, bias)
    matmul_dtype = _matmul_dtype(encoder_proj.device, dtype)
    chunk = chunk_frames(
        batch, frames, predictor_proj.size(1), num_classes, dim, chunk_bytes, matmul_dtype, dtype
    )
    losses = _FusedRNNTLossFunction.apply(
        encoder_proj, predictor_proj, weight, bias, targets, encoder_lengths, target_lengths,
        (blank, activation, chunk, matmul_dtype, dtype),
    )  # fmt: skip
    return _reduce(losses, reduction)
