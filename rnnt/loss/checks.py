"""Argument checks of the RNN-T losses: errors that name the function, argument and fix.

Both losses validate their float inputs' ranks and dtypes, the reduction and blank, the
shapes and ranges of the targets and lengths, and that every target inside its length is a
non-blank class id; then they move the integer tensors to the inputs' device as int64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum", "none")


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
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate targets and lengths; return them as int64 on ``device``, targets (B, U+1)
    with every padding position (and an extra last column) set to blank.

    Shapes and dtypes are always checked. ``validate=False`` skips the checks of the
    values (lengths in range, targets non-blank ids): they read the tensors on the host, a
    sync on a GPU, and a training step's batches were checked by the dataset already."""
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
    if validate:
        _check_lengths(fn, frames_name, frames, tokens, frame_lengths, target_lengths)
    frame_lengths = frame_lengths.to(device=device, dtype=torch.long)
    target_lengths = target_lengths.to(device=device, dtype=torch.long)
    targets = targets.to(device=device, dtype=torch.long)
    inside = torch.arange(tokens, device=device) < target_lengths[:, None]
    if validate:
        bad = inside & ((targets < 0) | (targets >= num_classes) | (targets == blank))
        if bool(bad.any()):
            b, u = (int(x) for x in bad.nonzero()[0])
            raise ValueError(
                f"{fn}: targets[{b}, {u}] = {int(targets[b, u])} must be a token id in "
                f"[0, V={num_classes}) other than blank={blank} (tokenizer id i is model id i + 1)"
            )
    targets = F.pad(torch.where(inside, targets, blank), (0, 1), value=blank)
    return targets, frame_lengths, target_lengths


def _check_lengths(
    fn: str,
    frames_name: str,
    frames: int,
    tokens: int,
    frame_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
) -> None:
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


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def _check_float(fn: str, name: str, x: torch.Tensor | None, dims: int) -> None:
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.dim() != dims:
        raise ValueError(f"{fn}: {name} must be a {dims}-D floating tensor, got {_describe(x)}")
