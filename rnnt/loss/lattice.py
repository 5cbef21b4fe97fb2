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


def _add_at(rows: torch.Tensor, columns: torch.Tensor, values: torch.Tensor) -> None:
    """rows[n, columns[n]] += values[n], in place. One column per row, so a plain index_put
    does it, deterministic on every device (scatter_add_ is not, on CUDA)."""
    row_index = torch.arange(rows.size(0), device=rows.device)
    rows[row_index, columns] += values
