"""Exact RNN-T loss, plain and fused with the joiner.

The transducer loss sums over every alignment of U tokens to T encoder frames. The joiner
scores each lattice cell (t, u) over the whole vocabulary, so a batch's logits are
B x T x (U+1) x V floats: 8 x 200 x 61 x 1024 is 400 MB in float32, before the softmax
and its gradient double it. That tensor, not the encoder, is the memory wall of transducer
training.

``fused_rnnt_loss`` never holds it. Its forward walks the *valid* cells of each utterance
(padding is skipped) in chunks of ``chunk_size`` cells, computes the joiner logits of a
chunk, and keeps only three numbers per cell: the log-softmax normaliser and the log-probs
of blank and of the next target. The lattice forward-backward then gives the loss and the
gradient of the loss with respect to those log-probs, which are all the backward needs: it
recomputes each chunk's logits and forms

    d loss / d logits = g_blank * onehot(blank) + g_y * onehot(y) - (g_blank + g_y) * softmax

and pushes it through the output layer and the activation by hand. Peak memory is one chunk
of logits; the price is one extra matrix product per cell.

``rnnt_loss`` is the same loss on given logits (torchaudio's contract, log-softmax inside),
sharing the lattice code. Both run in float32 (float64 for float64 inputs), also under
autocast. ``reference_rnnt_loss`` is a slow, obviously-correct loop for tests.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from rnnt.constants import BLANK_ID, JOINER_ACTIVATION, LOSS_CHUNK_SIZE, LOSS_REDUCTION

__all__ = ["fused_rnnt_loss", "reference_rnnt_loss", "rnnt_loss"]

REDUCTIONS = ("mean", "sum", "none")
ACTIVATIONS = ("tanh", "relu", "silu")

# A finite stand-in for log(0): far below any path's log-probability, yet it keeps
# logcumsumexp and the sums around it free of (-inf) - (-inf) = NaN on every torch version.
_LOG_ZERO = -1.0e30


# --- the lattice: one forward-backward shared by both losses ------------------------------


def _lattice_occupancy(
    step_i: torch.Tensor, step_j: torch.Tensor, len_i: torch.Tensor, len_j: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward-backward over a B x I x J grid of monotone paths from (0, 0) to (I_b-1, J_b-1).

    ``step_i[b, i, j]`` is the log-weight of the edge (i, j) -> (i+1, j), ``step_j[b, i, j]``
    that of (i, j) -> (i, j+1); entries outside utterance b's grid are ignored. Returns the
    occupancy (d log Z / d weight) of both edge kinds, (B, I, J) each, and log Z, (B,).

    The outer loop runs over I; inside a row the recursion along j is a linear recurrence in
    the log domain, solved at once with a prefix sum and a logcumsumexp.
    """
    batch, size_i, size_j = step_i.shape
    i = torch.arange(size_i, device=step_i.device).view(1, size_i, 1)
    j = torch.arange(size_j, device=step_i.device).view(1, 1, size_j)
    len_i = len_i.view(batch, 1, 1)
    len_j = len_j.view(batch, 1, 1)
    row_inside = i < len_i
    step_i_ok = (i + 1 < len_i) & (j < len_j)
    step_j_ok = row_inside & (j + 1 < len_j)
    # Zero (not -inf) outside the grid keeps the prefix sums finite; those cells are never
    # read by a cell inside the grid, and their occupancy is masked below.
    step_i = torch.where(step_i_ok, step_i, 0.0)
    step_j = torch.where(step_j_ok, step_j, 0.0)
    prefix = F.pad(step_j[..., :-1], (1, 0)).cumsum(-1)  # prefix[..., j] = sum_{l<j} step_j

    alpha = torch.empty_like(step_i)
    entering = torch.full((batch, size_j), _LOG_ZERO, dtype=step_i.dtype, device=step_i.device)
    entering[:, 0] = 0.0
    for row in range(size_i):
        if row > 0:
            entering = alpha[:, row - 1] + step_i[:, row - 1]
        alpha[:, row] = prefix[:, row] + torch.logcumsumexp(entering - prefix[:, row], dim=-1)

    # beta (to the last node, inclusive) runs right to left; working on j-flipped copies
    # turns its suffix sums into prefix sums.
    step_i_rev = step_i.flip(-1)
    prefix_rev = prefix.flip(-1)
    is_end_rev = ((i == len_i - 1) & (j == len_j - 1)).flip(-1)
    beta_rev = torch.empty_like(step_i)
    below = torch.full((batch, size_j), _LOG_ZERO, dtype=step_i.dtype, device=step_i.device)
    for row in reversed(range(size_i)):
        leaving = torch.where(is_end_rev[:, row], 0.0, step_i_rev[:, row] + below)
        below = torch.logcumsumexp(leaving + prefix_rev[:, row], dim=-1) - prefix_rev[:, row]
        below = torch.where(row_inside[:, row], below, _LOG_ZERO)
        beta_rev[:, row] = below
    beta = beta_rev.flip(-1)

    log_z = alpha.gather(1, (len_i - 1).expand(batch, 1, size_j))
    log_z = log_z.squeeze(1).gather(1, (len_j - 1).view(batch, 1)).view(batch)
    log_z_cell = log_z.view(batch, 1, 1)
    beta_below = F.pad(beta[:, 1:], (0, 0, 0, 1), value=_LOG_ZERO)
    beta_right = F.pad(beta[:, :, 1:], (0, 1), value=_LOG_ZERO)
    occ_i = torch.where(step_i_ok, torch.exp(alpha + step_i + beta_below - log_z_cell), 0.0)
    occ_j = torch.where(step_j_ok, torch.exp(alpha + step_j + beta_right - log_z_cell), 0.0)
    return occ_i, occ_j, log_z


def _lattice_loss(
    lp_blank: torch.Tensor,
    lp_target: torch.Tensor,
    frame_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RNN-T loss per utterance and its gradients w.r.t. the lattice log-probs, in float64.

    lp_blank (B, T, U+1): log p(blank | t, u); lp_target (B, T, U+1): log p(y_{u+1} | t, u),
    last column unused. Returns loss (B,), d loss / d lp_blank (B, T, U+1) and
    d loss / d lp_target (B, T, U+1), both zero outside each utterance's lattice.
    """
    lp_blank = lp_blank.double()
    lp_target = lp_target.double()
    batch, frames, columns = lp_blank.shape
    # Loop over the shorter side: the other is solved in one logcumsumexp per step.
    if frames <= columns:
        occ_blank, occ_target, log_z = _lattice_occupancy(
            lp_blank, lp_target, frame_lengths, target_lengths + 1
        )
    else:
        occ_target, occ_blank, log_z = _lattice_occupancy(
            lp_target.transpose(1, 2).contiguous(),
            lp_blank.transpose(1, 2).contiguous(),
            target_lengths + 1,
            frame_lengths,
        )
        occ_target, occ_blank = occ_target.transpose(1, 2), occ_blank.transpose(1, 2)
    utterance = torch.arange(batch, device=lp_blank.device)
    last = (utterance, frame_lengths - 1, target_lengths)
    loss = -(log_z + lp_blank[last])  # the final blank leaves the lattice
    grad_blank = -occ_blank.contiguous()
    grad_blank[last] -= 1.0
    return loss, grad_blank, -occ_target.contiguous()


# --- shared plumbing -----------------------------------------------------------------------


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 where any input is float64 (gradcheck), float32 otherwise (bf16/fp16 too)."""
    if any(x is not None and x.dtype == torch.float64 for x in tensors):
        return torch.float64
    return torch.float32


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type=device.type, enabled=False)


def _reduce(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def _check_lattice_args(
    fn: str,
    frames_name: str,
    batch: int,
    frames: int,
    tokens: int,
    num_classes: int,
    targets: torch.Tensor,
    frame_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int,
    reduction: str,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate targets and lengths; return them as int64 on ``device``, targets (B, U+1)
    with every padding position (and an extra last column) set to blank."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction={reduction!r}; use one of {REDUCTIONS}")
    if not 0 <= blank < num_classes:
        raise ValueError(f"{fn}: blank={blank} is outside [0, V={num_classes})")
    for name, tensor, dims in (
        ("targets", targets, 2),
        (frames_name, frame_lengths, 1),
        ("target_lengths", target_lengths, 1),
    ):
        if not isinstance(tensor, torch.Tensor) or tensor.dtype.is_floating_point:
            raise ValueError(f"{fn}: {name} must be an integer tensor, got {_describe(tensor)}")
        if tensor.dim() != dims or tensor.size(0) != batch:
            want = f"(B={batch}, U={tokens})" if dims == 2 else f"(B={batch},)"
            raise ValueError(f"{fn}: {name} has shape {tuple(tensor.shape)}; expected {want}")
    if targets.size(1) != tokens:
        raise ValueError(
            f"{fn}: targets has {targets.size(1)} columns but the lattice has U+1={tokens + 1} "
            f"token positions; targets must be (B, U) for U+1 = the U axis of the scores"
        )
    frame_list = frame_lengths.tolist()
    target_list = target_lengths.tolist()
    for b, (n_frames, n_tokens) in enumerate(zip(frame_list, target_list, strict=True)):
        if not 1 <= n_frames <= frames:
            raise ValueError(
                f"{fn}: {frames_name}[{b}] = {n_frames} is outside [1, T={frames}]; every "
                f"utterance needs at least one frame and at most the padded T"
            )
        if not 0 <= n_tokens <= tokens:
            raise ValueError(
                f"{fn}: target_lengths[{b}] = {n_tokens} is outside [0, U={tokens}] "
                f"(U = targets.size(1))"
            )
    frame_lengths = frame_lengths.to(device=device, dtype=torch.long)
    target_lengths = target_lengths.to(device=device, dtype=torch.long)
    targets = targets.to(device=device, dtype=torch.long)
    inside = torch.arange(tokens, device=device) < target_lengths[:, None]
    bad = inside & ((targets < 0) | (targets >= num_classes) | (targets == blank))
    if bool(bad.any()):
        b, u = (int(x) for x in bad.nonzero()[0])
        raise ValueError(
            f"{fn}: targets[{b}, {u}] = {int(targets[b, u])} must be a token id in "
            f"[0, V={num_classes}) other than blank={blank} (tokenizer id i is model id i + 1)"
        )
    targets = F.pad(torch.where(inside, targets, blank), (0, 1), value=blank)
    return targets, frame_lengths, target_lengths


def _add_at(rows: torch.Tensor, columns: torch.Tensor, values: torch.Tensor) -> None:
    """rows[n, columns[n]] += values[n], in place. One column per row, so a plain index_put
    does it, deterministic on every device (scatter_add_ is not, on CUDA)."""
    row_index = torch.arange(rows.size(0), device=rows.device)
    rows[row_index, columns] += values


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def _check_float(fn: str, name: str, x: torch.Tensor | None, dims: int) -> None:
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.dim() != dims:
        raise ValueError(f"{fn}: {name} must be a {dims}-D floating tensor, got {_describe(x)}")


# --- loss on given logits -------------------------------------------------------------------


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

    Returns:
        The loss in float32 (float64 for float64 logits); gradients flow to ``logits`` only,
        in its dtype, and are exactly zero on padding.
    """
    fn = "rnnt_loss"
    _check_float(fn, "logits", logits, 4)
    batch, frames, columns, num_classes = logits.shape
    targets, logit_lengths, target_lengths = _check_lattice_args(
        fn, "logit_lengths", batch, frames, columns - 1, num_classes, targets,
        logit_lengths, target_lengths, blank, reduction, logits.device,
    )  # fmt: skip
    losses = _RNNTLossFunction.apply(logits, targets, logit_lengths, target_lengths, blank)
    return _reduce(losses, reduction)


# --- loss fused with the joiner ---------------------------------------------------------------


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


# --- plain reference -------------------------------------------------------------------------


def reference_rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = BLANK_ID,
    reduction: str = "mean",
) -> torch.Tensor:
    """Textbook alpha recursion, one cell at a time, differentiated by autograd.

    Same arguments as ``rnnt_loss``; slow (Python loops over B, T, U), for tests only.
    """
    log_probs = logits.to(_compute_dtype(logits)).log_softmax(dim=-1)
    losses = []
    for b in range(logits.size(0)):
        n_frames, n_tokens = int(logit_lengths[b]), int(target_lengths[b])
        lp = log_probs[b]
        alpha: dict[tuple[int, int], torch.Tensor] = {(0, 0): lp.new_zeros(())}
        for t in range(n_frames):
            for u in range(n_tokens + 1):
                terms = []
                if t > 0:
                    terms.append(alpha[t - 1, u] + lp[t - 1, u, blank])
                if u > 0:
                    terms.append(alpha[t, u - 1] + lp[t, u - 1, int(targets[b, u - 1])])
                if terms:
                    alpha[t, u] = torch.logsumexp(torch.stack(terms), dim=0)
        losses.append(-(alpha[n_frames - 1, n_tokens] + lp[n_frames - 1, n_tokens, blank]))
    return _reduce(torch.stack(losses), reduction)
