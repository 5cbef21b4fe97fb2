"""What a step would cost a GPU, counted on any device: dispatched ops and host reads.

A CPU shows GPU costs only indirectly. Every aten op that computes (not a view) is one kernel
launch on a GPU, 5-10 us of launch time before any arithmetic; every read of a device value
on the host (``item``, ``tolist``, ``bool``, ``int``, a boolean-mask index, ``nonzero``)
stalls the host until the GPU queue drains. ``count_ops`` counts both while a block runs:

    with count_ops() as counts:
        loss = fused_rnnt_loss(...)
        loss.backward()
    counts.kernels, counts.views, counts.host_reads, counts.by_op

Views (``view``, ``select``, ``slice``, ``expand``, ``transpose``, ...) launch nothing and
are counted apart. Host reads are counted whatever the tensor's device, so a CPU test sees
every read that would be a sync on a GPU; reads of CPU tensors that would stay on the host
there (the loader's lengths) are not tensors in a well-built step, so they do not appear.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# Ops whose output size depends on tensor values: the host must read them before it can go on.
_SYNCING_OPS = {
    aten._local_scalar_dense.default,  # item(), bool(), int(), float()
    aten.nonzero.default,
    aten.masked_select.default,
    aten.is_nonzero.default,
}
_SYNCING_PACKETS = {aten.unique_consecutive, aten._unique2, aten.repeat_interleave}


@dataclass
class OpCounts:
    """Counts gathered by :func:`count_ops`; ``by_op`` maps an op name to its calls."""

    kernels: int = 0
    views: int = 0
    host_reads: int = 0
    by_op: collections.Counter = field(default_factory=collections.Counter)
    reads_by_kind: collections.Counter = field(default_factory=collections.Counter)

    @property
    def dispatched(self) -> int:
        """Every op the dispatcher saw: kernels and views."""
        return self.kernels + self.views


def _is_view(func: torch._ops.OpOverload) -> bool:
    # A view returns an alias of an input without writing to it (schema `Tensor(a)`).
    return any(
        ret.alias_info is not None and not ret.alias_info.is_write for ret in func._schema.returns
    )


def _masks_by_bool(func: torch._ops.OpOverload, args: tuple) -> bool:
    # x[mask] and x[mask] = v: the number of selected elements is read on the host.
    if func.overloadpacket not in (aten.index, aten.index_put, aten.index_put_):
        return False
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())


class _Counter(TorchDispatchMode):
    def __init__(self, counts: OpCounts) -> None:
        super().__init__()
        self.counts = counts
        self.reading = False  # inside a wrapped Python-level read, counted there

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        counts = self.counts
        name = func.overloadpacket.__name__
        counts.by_op[name] += 1
        if _is_view(func):
            counts.views += 1
        else:
            counts.kernels += 1
        if self.reading:
            pass
        elif func in _SYNCING_OPS or func.overloadpacket in _SYNCING_PACKETS:
            counts.host_reads += 1
            counts.reads_by_kind[name] += 1
        elif _masks_by_bool(func, args):
            counts.host_reads += 1
            counts.reads_by_kind["bool_mask_index"] += 1
        return func(*args, **(kwargs or {}))


# Python-level reads of a tensor's value. On CPU some never reach the dispatcher (``tolist``;
# ``item`` and ``int`` of inference tensors), so each is wrapped and counted once; the
# ``_local_scalar_dense`` it may dispatch inside is not counted again.
_READ_METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def count_ops() -> Iterator[OpCounts]:
    """Count dispatched ops and host reads of tensor values inside the block.

    ``Tensor.item``, ``tolist``, ``__bool__``, ``__int__``, ``__float__`` and ``__index__``
    are wrapped for the block's duration and counted as host reads under their own names
    (``reads_by_kind``); ops that read values inside kernels (``nonzero``, a boolean mask)
    are counted at the dispatcher.
    """
    counts = OpCounts()
    mode = _Counter(counts)
    originals = {name: getattr(torch.Tensor, name) for name in _READ_METHODS}

    def wrap(name: str, original):  # noqa: ANN001, ANN202 - mirrors the wrapped method
        def read(self, *args, **kwargs):  # noqa: ANN001, ANN202
            if mode.reading:
                return original(self, *args, **kwargs)
            counts.host_reads += 1
            counts.reads_by_kind[name.strip("_")] += 1
            mode.reading = True
            try:
                return original(self, *args, **kwargs)
            finally:
                mode.reading = False

        return read

    for name, original in originals.items():
        setattr(torch.Tensor, name, wrap(name, original))
    try:
        with mode:
            yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
