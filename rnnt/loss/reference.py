"""A slow, obviously-correct RNN-T loss for tests: the textbook alpha recursion.

One lattice cell at a time in Python loops, differentiated by autograd; the exact losses
(``rnnt_loss``, ``fused_rnnt_loss``) are checked against it.
"""

from __future__ import annotations

import torch

from rnnt.constants import BLANK_ID
from rnnt.loss.lattice import _compute_dtype, _reduce


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
