"""The lattice core both RNN-T losses share: one forward-backward over T x (U+1) cells.

Given the log-probabilities of blank and of the next target at every cell (t, u) of each
utterance's lattice, ``_lattice_loss`` returns the loss and its gradient with respect to
those log-probabilities; the plain and the fused loss only differ in how they get the
log-probabilities and push that gradient back to the logits. Alongside it sit the small
numeric helpers both losses' autograd functions use: the compute dtype (float32, float64 for
float64 inputs), autocast off, the reduction over utterances and a deterministic scatter-add.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

# A finite stand-in for log(0): far below any path's log-probability, yet it keeps
# logcumsumexp and the sums around it free of (-inf) - (-inf) = NaN on every torch version.
_LOG_ZERO = -1.0e30


def _reversal_index(
    len_i: torch.Tensor, len_j: torch.Tensor, size_i: int, size_j: int, shift_i: int = 0
) -> torch.Tensor:
    """Flat indices (B, I, J) into a (B, I*J) grid of cell (len_i-1-i+shift_i, len_j-1-j):
    each utterance's grid turned by 180 degrees (its own corner to corner), clamped inside."""
    i = torch.arange(size_i, device=len_i.device).view(1, size_i, 1)
    j = torch.arange(size_j, device=len_i.device).view(1, 1, size_j)
    source_i = (len_i.view(-1, 1, 1) - 1 - i + shift_i).clamp(0, size_i - 1)
    source_j = (len_j.view(-1, 1, 1) - 1 - j).clamp(0, size_j - 1)
    return source_i * size_j + source_j


def _lattice_occupancy(
    step_i: torch.Tensor, step_j: torch.Tensor, len_i: torch.Tensor, len_j: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward-backward over a B x I x J grid of monotone paths from (0, 0) to (I_b-1, J_b-1).

    ``step_i[b, i, j]`` is the log-weight of the edge (i, j) -> (i+1, j), ``step_j[b, i, j]``
    that of (i, j) -> (i, j+1); entries outside utterance b's grid are ignored. Returns the
    occupancy (d log Z / d weight) of both edge kinds, (B, I, J) each, and log Z, (B,).

    One loop over I of two ops a row computes alpha and beta together: beta is the alpha of
    each utterance's grid turned by 180 degrees, stacked under the original along the batch.
    Inside a row the recursion along j is a linear recurrence in the log domain; relative to
    the row's prefix sums of ``step_j`` it is one logcumsumexp:

        a[i] = logcumsumexp(a[i-1] + d[i]),   alpha[i] = a[i] + prefix[i],
        d[i] = prefix[i-1] + step_i[i-1] - prefix[i]   (d[0] = -prefix[0]).
    """
    batch, size_i, size_j = step_i.shape
    i = torch.arange(size_i, device=step_i.device).view(1, size_i, 1)
    j = torch.arange(size_j, device=step_i.device).view(1, 1, size_j)
    len_i = len_i.view(batch, 1, 1)
    len_j = len_j.view(batch, 1, 1)
    step_i_ok = (i + 1 < len_i) & (j < len_j)
    step_j_ok = (i < len_i) & (j + 1 < len_j)
    # The turned grid: its edge (i, j) -> (i+1, j) is the original's edge into the cell
    # turned from (i, j), leaving the cell turned from (i+1, j).
    flat = (batch, size_i * size_j)
    turn = _reversal_index(len_i, len_j, size_i, size_j)
    turn_i = _reversal_index(len_i, len_j, size_i, size_j, shift_i=-1)
    turn_j = turn - 1  # the cell left of the turned one; its edge points right
    turned_i = step_i.reshape(flat).gather(1, turn_i.view(flat)).view_as(step_i)
    turned_j = step_j.reshape(flat).gather(1, turn_j.clamp(min=0).view(flat)).view_as(step_j)
    # Zero (not -inf) outside the grid keeps the prefix sums finite; those cells are never
    # read by a cell inside the grid, and their occupancy is masked below.
    ok_i, ok_j = torch.cat([step_i_ok, step_i_ok]), torch.cat([step_j_ok, step_j_ok])
    steps_i = torch.where(ok_i, torch.cat([step_i, turned_i]), 0.0)
    steps_j = torch.where(ok_j, torch.cat([step_j, turned_j]), 0.0)
    prefix = F.pad(steps_j[..., :-1], (1, 0)).cumsum(-1)  # prefix[..., j] = sum_{l<j} step_j
    entering = F.pad((prefix + steps_i)[:, :-1], (0, 0, 1, 0))  # prefix[i-1] + step_i[i-1]
    rows = (entering - prefix).unbind(1)
    reduced = torch.full_like(prefix[:, 0], _LOG_ZERO)
    reduced[:, 0] = 0.0  # entering row 0: every path starts at (0, 0)
    alphas = []
    for row in rows:
        reduced = torch.logcumsumexp(reduced + row, dim=-1)
        alphas.append(reduced)
    both = (torch.stack(alphas, dim=1) + prefix).view(2, batch, size_i * size_j)
    alpha = both[0].view_as(step_i)
    turned_alpha = both[1]
    beta = turned_alpha.gather(1, turn.view(flat)).view_as(step_i)
    beta_below = turned_alpha.gather(1, turn_i.view(flat)).view_as(step_i)  # beta[i+1, j]
    beta_right = turned_alpha.gather(1, turn_j.clamp(min=0).view(flat)).view_as(step_i)
    log_z = beta[:, 0, 0]
    log_z_cell = log_z.view(batch, 1, 1)
    occ_i = torch.where(step_i_ok, torch.exp(alpha + step_i + beta_below - log_z_cell), 0.0)
    occ_j = torch.where(step_j_ok, torch.exp(alpha + step_j + beta_right - log_z_cell), 0.0)
    return occ_i, occ_j, log_z


def _lattice_loss(
    lp_blank: torch.Tensor,
    lp_target: torch.Tensor,
    frame_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RNN-T loss per utterance and its gradients w.r.t. the lattice log-probs, in their dtype
    (float32, or float64 for float64 inputs).

    lp_blank (B, T, U+1): log p(blank | t, u); lp_target (B, T, U+1): log p(y_{u+1} | t, u),
    last column unused. Returns loss (B,), d loss / d lp_blank (B, T, U+1) and
    d loss / d lp_target (B, T, U+1), both zero outside each utterance's lattice.
    """
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


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 where any input is float64 (gradcheck), float32 otherwise (bf16/fp16 too)."""
    if any(x is not None and x.dtype == torch.float64 for x in tensors):
        return torch.float64
    return torch.float32


def _autocast_available(device: torch.device) -> bool:
    """Whether autocast exists for the device type (not for "meta", which op counts use)."""
    return torch.amp.autocast_mode.is_autocast_available(device.type)


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if not _autocast_available(device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def _reduce(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def _add_at(rows: torch.Tensor, columns: torch.Tensor, values: torch.Tensor) -> None:
    """rows[n, columns[n]] += values[n], in place. One column per row, so a plain index_put
    does it, deterministic on every device (scatter_add_ is not, on CUDA)."""
    row_index = torch.arange(rows.size(0), device=rows.device)
    rows[row_index, columns] += values
