"""The masks of the model: the padding mask every module uses, and the attention mask."""

from __future__ import annotations

import torch

from rnnt.models.contexts import context_allows


def padding_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """``(B, max_length)`` bool, True on the valid frames ``t < lengths[b]``."""
    return torch.arange(max_length, device=lengths.device) < lengths.unsqueeze(1)


# The memory-efficient SDPA kernel copies a mask whose rows are not 16-element aligned, at
# every layer: masks are allocated with their key dimension rounded up to this.
_MASK_ALIGNMENT = 16


def attention_mask(
    lengths: torch.Tensor,
    max_length: int,
    context: tuple[int, int] | list[int],
    dtype: torch.dtype = torch.float32,
    chunked: bool = False,
) -> torch.Tensor:
    """Additive attention mask in ``dtype``: 0 where query frame ``i`` may attend to key frame
    ``j``, ``-inf`` elsewhere.

    ``j`` must be a valid frame and within ``context = [left, right]`` of ``i`` (``-1`` =
    unlimited on that side), read in the sliding style or, with ``chunked``, the chunked one
    (:func:`rnnt.models.contexts.context_allows`). No row is all ``-inf`` (softmax would give
    NaN):

    - without a context limit (``[-1, -1]``) the mask is ``(B, 1, 1, T')``, keys only: the
      shape SDPA's memory-efficient kernel takes as it is (a ``(B, 1, T', T')`` mask costs
      ``B x T'^2`` memory and traffic). Padded query frames attend to the valid frames like
      any other (their outputs are discarded); an utterance of no frames attends to its first;
    - with a limit it is ``(B, 1, T', T')``, and padded query frames attend to themselves only.

    ``dtype`` is that of the attention's queries (bf16 under bf16 autocast): SDPA turns a bool
    mask into this at every layer and keeps each copy for backward; one additive mask serves
    all layers. Its key dimension lies in a buffer rounded up to ``_MASK_ALIGNMENT`` frames
    (not in the ONNX export).
    """
    left, right = context
    device = lengths.device
    keys = -(-max_length // _MASK_ALIGNMENT) * _MASK_ALIGNMENT
    if torch.jit.is_tracing():  # the ONNX export: it would freeze the rounding to one length
        keys = max_length
    key_frames = torch.arange(keys, device=device)
    if left < 0 and right < 0:
        allowed = (key_frames < lengths.clamp(min=1).unsqueeze(1))[:, None, None, :]
    else:
        query_frames = key_frames[:max_length]
        in_context = context_allows(query_frames, key_frames, context, chunked)
        # Written for ONNX export too: no in-place `&=` (no exporter for it), no torch.eye (no
        # boolean EyeLike in onnxruntime).
        itself = query_frames.view(-1, 1) == key_frames.view(1, -1)
        valid_keys = padding_mask(lengths, keys).unsqueeze(1)
        padded_queries = ~padding_mask(lengths, max_length).unsqueeze(2)
        allowed = (in_context.unsqueeze(0) & valid_keys) | (itself & padded_queries)
        allowed = allowed.unsqueeze(1)
    mask = torch.full(allowed.shape, float("-inf"), dtype=dtype, device=device)
    return mask.masked_fill(allowed, 0.0)[..., :max_length]


def attention_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype the attention's queries get from ``hidden``: autocast's where it is on."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden.dtype
