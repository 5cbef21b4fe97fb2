"""The optimizer side of a training step, decided on the device: nothing here waits for it.

A GPU runs ahead of the host only while the host never reads a device value: each read
(``item``, ``bool``, ``tolist``) drains the queue and leaves the GPU idle while the host
catches up. So the parts of a step that used to ask the host live here, answered on the device:

- ``adamw``: ``torch.optim.AdamW`` with ``fused=True`` (one kernel for every parameter, its
  step counts on the device) where the parameters' device has the fused kernel, foreach
  elsewhere.
- ``NonFiniteGuard``: whether a step's loss was NaN or infinite on any rank, as a device flag
  (one all-reduce under DDP, no host read) that a fused AdamW takes as ``found_inf`` and then
  leaves parameters, moments and step counts untouched. It counts skipped steps on the
  device; ``check`` reads the counts (one host read) when the trainer logs, warns, and raises
  ``NonFiniteLossError`` after too many in a row.
- ``total_grad_norm``: the gradients' 2-norm in one fused computation, not one per parameter;
  ``clip_gradients`` clips with that same norm, which the module also logs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

log = logging.getLogger(__name__)
# Slots of NonFiniteGuard's device state: the current run of skipped steps, the longest run
# since the last check, steps skipped since then; of the last skipped step: its number, its
# run, whether this rank's loss was the non-finite one, and this rank's loss.
_RUN, _PEAK, _SKIPPED, _LAST_STEP, _LAST_RUN, _LOCAL, _VALUE = range(7)


class NonFiniteLossError(RuntimeError):
    """Raised when too many steps in a row had a loss that was NaN or infinite."""


def _fused_devices() -> set[str]:
    try:  # the list torch's optimizers check `fused=True` against
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # pragma: no cover - torch moved it
        return {"cuda", "cpu"}
    return set(_get_fused_kernels_supported_devices())


def adamw(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
    weight_decay: float,
    allow_fused: bool = True,
    **options,
) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over the trainable parameters, fused where they all allow it.

    Weight decay applies to weight matrices only: norms, biases and embeddings are not
    weights to shrink. The fused kernel updates every parameter in one launch and keeps its
    step counts on the device; it also takes ``found_inf`` (``NonFiniteGuard``) to skip a
    step on the device. It needs floating parameters on a device that has it (CUDA and CPU
    since torch 2.4). ``allow_fused=False`` (float16 training, whose gradient scaler would
    unscale inside the fused step, after clipping) gives the foreach kernels.
    """
    decay, no_decay = [], []
    for name, parameter in named_parameters:
        if parameter.requires_grad:
            shrink = parameter.ndim >= 2 and "embedding" not in name
            (decay if shrink else no_decay).append(parameter)
    devices = _fused_devices()
    params = decay + no_decay
    fused = allow_fused and bool(params)
    fused = fused and all(p.is_floating_point() and p.device.type in devices for p in params)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, fused=fused or None, **options)


def is_fused(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every parameter group of ``optimizer`` runs a fused kernel."""
    return all(group.get("fused") for group in optimizer.param_groups)


def total_grad_norm(parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor | None:
    """2-norm of all gradients together (0-dim, on their device), or None without any.

    ``torch.nn.utils.get_total_norm`` (torch >= 2.6) or one ``_foreach_norm`` and a stack:
    a few kernels whatever the number of parameters.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    if hasattr(torch.nn.utils, "get_total_norm"):
        return torch.nn.utils.get_total_norm(grads, 2.0)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2)), 2)


def clip_gradients(
    parameters: Iterable[torch.nn.Parameter], max_value: float, by_value: bool, measure: bool
) -> torch.Tensor | None:
    """Clip gradients to a total 2-norm of ``max_value`` (each value to ``[-max_value,
    max_value]`` with ``by_value``; nothing for 0), with one norm computation for both the
    clipping and the caller's log. Returns the norm before clipping when clipping by norm or
    ``measure``, else None. Reads nothing on the host."""
    params = [p for p in parameters if p.grad is not None]
    by_norm = max_value > 0 and not by_value
    norm = total_grad_norm(params) if params and (by_norm or measure) else None
    if norm is not None and by_norm:
        if hasattr(torch.nn.utils, "clip_grads_with_norm_"):  # torch >= 2.6
            torch.nn.utils.clip_grads_with_norm_(params, max_value, norm)
        else:
            torch.nn.utils.clip_grad_norm_(params, max_value)
    elif params and by_value and max_value > 0:
        torch.nn.utils.clip_grad_value_(params, max_value)
    return norm


def _world_size() -> int:
    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized():
        return distributed.get_world_size()
    return 1


class NonFiniteGuard:
    """Skips the update of a step whose loss is NaN or infinite on any rank, on the device.

    ``update(loss, step)`` each step gives ``found_inf``: a 0-dim float32 device tensor, 1.0
    when any rank's loss was non-finite. Every rank gets the same flag (an all-reduce of it,
    without Lightning's barrier, which would block the host), so every rank skips the same
    steps and DDP never waits for a rank that stepped alone. A fused AdamW given the flag
    skips the update on the device (``TransducerModule.on_before_optimizer_step``); the step
    still runs backward on the non-finite loss, whose gradients it throws away.

    The counts stay on the device until ``check``, one host read, which the module calls when
    the trainer logs (``log_every_n_steps``): it warns about the skipped steps and raises
    ``NonFiniteLossError`` once a run of ``max_in_a_row`` skipped steps has happened. The
    error may therefore come up to one logging interval after the step that reached the limit;
    no update happens in between (every one of those steps is skipped as well).
    """

    def __init__(self, max_in_a_row: int) -> None:
        self.max_in_a_row = max_in_a_row
        self.found_inf: torch.Tensor | None = None  # this step's flag, until the optimizer takes it
        self._state: torch.Tensor | None = None

    def update(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        """Record step ``step``'s ``loss`` (0-dim); returns ``found_inf`` (see the class),
        which covers every loss recorded since the optimizer last took it (``found_inf`` is
        set back to None then), so gradient accumulation skips a tainted update too."""
        loss = loss.detach().float()
        local = torch.isfinite(loss).logical_not().float()
        found_inf = local.clone()
        if _world_size() > 1:
            torch.distributed.all_reduce(found_inf, op=torch.distributed.ReduceOp.MAX)
        state = self._state
        if state is None or state.device != loss.device:
            state = torch.zeros(7, device=loss.device)
        skipped = found_inf > 0
        run = (state[_RUN] + 1) * found_inf
        self._state = torch.stack(
            [
                run,
                torch.maximum(state[_PEAK], run),
                state[_SKIPPED] + found_inf,
                torch.where(skipped, float(step), state[_LAST_STEP]),
                torch.where(skipped, run, state[_LAST_RUN]),
                torch.where(skipped, local, state[_LOCAL]),
                torch.where(skipped, loss, state[_VALUE]),
            ]
        )
        # Accumulated gradients hold every micro-batch's: one non-finite taints the update.
        self.found_inf = found_inf if self.found_inf is None else self.found_inf.maximum(found_inf)
        return self.found_inf

    def hand_to(self, optimizer: torch.optim.Optimizer, parameters: Iterable[torch.Tensor]) -> None:
        """Give the flag to ``optimizer`` before its step (and forget it): a fused AdamW skips
        the update on the device; another optimizer gets no gradients when the flag is set,
        which costs one host read per step."""
        found_inf, self.found_inf = self.found_inf, None
        if found_inf is None:
            optimizer.__dict__.pop("found_inf", None)
        elif is_fused(optimizer):
            optimizer.found_inf = found_inf
        elif bool(found_inf):
            for parameter in parameters:
                parameter.grad = None  # AdamW leaves parameters without gradients untouched

    def check(self) -> None:
        """Read the counts (one host read): warn about the steps skipped since the last check,
        and raise ``NonFiniteLossError`` if ``max_in_a_row`` or more came in a row."""
        if self._state is None:
            return
        run, peak, skipped, last_step, last_run, local, value = self._state.tolist()
        self._state[_PEAK] = self._state[_RUN]  # device writes: nothing waits for them
        self._state[_SKIPPED] = 0.0
        if skipped:
            where = f"{value}" if local else f"on another rank; {value:.4g} here"
            since = f"; {int(skipped)} steps skipped since the last check" if skipped > 1 else ""
            log.warning(
                "step %d: non-finite loss (%s), step skipped (%d in a row)%s",
                int(last_step),
                where,
                int(last_run),
                since,
            )
        if peak >= self.max_in_a_row:
            raise NonFiniteLossError(
                f"{int(peak)} training steps in a row had a NaN or infinite loss; the run is "
                "diverging. Lower model.learning_rate, raise model.warmup_steps, or check the "
                "data for empty or mislabelled audio. Resume from the last good checkpoint "
                "with --ckpt_path last."
            )
